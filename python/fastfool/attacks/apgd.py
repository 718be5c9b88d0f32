"""Auto-PGD (Croce & Hein, 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"), L-inf and L2 (and L1: Croce & Hein 2021), with the cross-entropy or the
Difference-of-Logits-Ratio loss, untargeted or targeted at the top-k classes (APGD-T).

Per row, ``steps`` iterations of a projected gradient step with momentum 0.75 from a step
size of ``2 eps``, halved at the checkpoints ``w_0 = 0, w_1 = 0.22 N, w_{j+1} = w_j +
max(w_j - w_{j-1} - 0.03 N, 0.06 N)`` when, since the last checkpoint, the loss increased in
fewer than ``0.75`` of the steps, or the step size was not reduced and the best loss did not
improve; the iterate then restarts from the best point. The row's result is its last iterate whose
logits fool, else the point of highest loss; the user's model then decides it.

Losses (logits z, label y, target t, sorted logits z_pi1 >= z_pi2 >= ...):
``CE = -log softmax(z)_y`` (``+log softmax(z)_t`` targeted),
``DLR = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` and targeted
``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``; gradients through the model's
vector-Jacobian products (CE: its fused gradient kernel).
"""

from __future__ import annotations

import time

import numpy as np

from .._dask import dask_aware
from .. import _random, kernels, verdict
from .._typing import ArrayLike, Clip, Labels, Norm
from ..models import Model
from ._common import (bounds64, TARGET_PAIRS, Grid, Progress, before_first_done, check_inside_clip,
                      clip_bounds, count, finish, norm_of, positive, prepare, row_chunks,
                      succeeded, target_pairs, Trusted)

__all__ = ["apgd", "checkpoints", "project_l1_box"]

MOMENTUM = 0.75
RHO = 0.75


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD checks its progress (the paper's w_j, as in its reference
    code: p_1 = 0.22, period decreasing by 0.03 to at least 0.06 of the steps)."""
    out, k = [], max(int(0.22 * steps), 1)
    decr, kmin = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    at = k
    while at < steps:
        out.append(at)
        k = max(k - decr, kmin)
        at += k
    return out


def _dlr(L, y, t):
    """(loss, dloss/dlogits) of the DLR loss per row (loss float64, gradient in L's dtype),
    untargeted when t is None: the kernel :func:`fastfool.kernels.dlr_rows`."""
    return kernels.dlr_rows(L, y, t)


def _loss_grad(model, x, y, t, loss, threads):
    """(loss to maximise (N,), its input gradient (N, D), class decided by the logits (N,)),
    on x's device (y, t: class indices there)."""
    xp = model._be.xp
    if loss == "ce":
        if t is None:
            g, l, P = model.loss_grad(x, Trusted(y), threads, return_prob=True)
            return l.astype(np.float64), g, xp.argmax(P, axis=1)
        g, l, P = model.loss_grad(x, Trusted(t), threads, return_prob=True)
        return -l.astype(np.float64), -g, xp.argmax(P, axis=1)
    L = model.scores(x, None, threads)
    tt = None if t is None else Trusted(xp.ascontiguousarray(t, dtype=np.int64))
    val, V = kernels.dlr_rows(L, Trusted(xp.ascontiguousarray(y, dtype=np.int64)), tt,
                              threads=threads)
    g = model.vjp(x, V, threads)
    return val, g, xp.argmax(L, axis=1)


def _project(v, x0, eps, l2, lo, hi, xp=np):
    """v projected onto the eps-ball around x0 (L-inf box or L2 ball), then clipped."""
    if l2:
        d = v - x0
        n = xp.sqrt(xp.einsum("ij,ij->i", d.astype(np.float64), d.astype(np.float64)))
        scale = xp.minimum(1.0, eps / xp.maximum(n, 1e-300))
        v = x0 + d * scale[:, None].astype(v.dtype)
    else:
        v = xp.minimum(xp.maximum(v, x0 - eps), x0 + eps)
    if lo is not None:
        v = xp.maximum(v, lo)
    if hi is not None:
        v = xp.minimum(v, hi)
    return v.astype(x0.dtype, copy=False)


def _ball_box(x0, eps, lo, hi, xp=np):
    """The L-inf ball around x0 intersected with the box, as per-element bounds: clamping to
    them equals clamping to the ball and then to the box (x0 lies in the box), bit for bit."""
    blo, bhi = x0 - eps, x0 + eps
    if lo is not None:
        blo = xp.maximum(blo, lo)
    if hi is not None:
        bhi = xp.minimum(bhi, hi)
    return blo.astype(x0.dtype, copy=False), bhi.astype(x0.dtype, copy=False)


def project_l1_box(x0, v, eps, lo, hi, xp=np):
    """Each row of v projected (in L2) onto {z : ||z - x0||_1 <= eps, lo <= z <= hi}: z = x0 +
    sign(v - x0) clip(|v - x0| - lam, 0, room) with lam >= 0 the smallest level that meets the
    budget (the room: the box's extent on that side). Exact: lam lies on the sorted
    breakpoints max(|d| - room, 0) and |d| of the piecewise-linear budget used. Float64;
    ``xp`` the array module of x0, v and the bounds (CuPy: every row's level computed, kept
    where the row is over budget)."""
    x0 = xp.asarray(x0, dtype=np.float64)
    d = xp.asarray(v, dtype=np.float64) - x0
    n, D = d.shape
    sgn = xp.sign(d)
    a = xp.abs(d)
    up = xp.full((n, D), np.inf) if hi is None else xp.broadcast_to(hi, (n, D)) - x0
    dn = xp.full((n, D), np.inf) if lo is None else x0 - xp.broadcast_to(lo, (n, D))
    room = xp.maximum(xp.where(sgn >= 0, up, dn), 0.0)
    used0 = xp.minimum(a, room).sum(axis=1)
    lam = xp.zeros(n)
    if xp is np:
        over = np.flatnonzero(used0 > eps)
    else:  # no host decision: all rows, the level kept where it applies
        over = xp.arange(n) if n and D else xp.zeros(0, dtype=np.int64)
    if over.size and D:
        ao, ro = a[over], room[over]
        t1 = xp.maximum(ao - ro, 0.0)  # a coordinate starts to shrink
        t2 = ao  # and reaches 0
        keys = xp.concatenate([t1, t2], axis=1)
        delta = xp.concatenate([-xp.ones_like(t1), xp.ones_like(t2)], axis=1)
        order = np.argsort(keys, axis=1, kind="stable") if xp is np else \
            xp.argsort(keys, axis=1)
        b = xp.take_along_axis(keys, order, axis=1)
        slope = xp.cumsum(xp.take_along_axis(delta, order, axis=1), axis=1)  # after each key
        gaps = xp.diff(b, axis=1)
        f = used0[over][:, None] + xp.concatenate(
            [xp.zeros((over.size, 1)), xp.cumsum(gaps * slope[:, :-1], axis=1)], axis=1)
        k = (f > eps).sum(axis=1) - 1  # the last breakpoint still over budget
        k = xp.clip(k, 0, 2 * D - 1)
        r = xp.arange(over.size)
        sl = slope[r, k]
        level = b[r, k] + xp.where(sl < 0, (f[r, k] - eps) / xp.where(sl < 0, -sl, 1.0), 0.0)
        if xp is np:
            lam[over] = level
        else:
            lam = xp.where(used0 > eps, level, 0.0)
    e = xp.clip(a - lam[:, None], 0.0, room)
    return x0 + sgn * e


def _direction(g, l2, xp=np):
    if not l2:
        return xp.sign(g)
    n = xp.sqrt(xp.einsum("ij,ij->i", g.astype(np.float64), g.astype(np.float64)))
    return g / xp.maximum(n, 1e-300)[:, None].astype(g.dtype)


def _run_l1(model, x0, y, t, eps, lo, hi, steps, loss, start, threads):
    """One L1-APGD run (Croce & Hein 2021, "Mind the box"; the reference code's loop): no
    momentum; the step is the sign of the gradient on its largest coordinates (a fraction
    ``topk`` of them, from 0.2), normalised to unit L1 norm, times a step size from eps; the
    iterate is projected onto the L1 ball intersected with the box. Every 4% of the steps the
    fraction follows the best point's sparsity (``||best - x0||_0 / D / 1.5``), and the step size
    resets to eps where the sparsity fell by 5% (the iterate restarting from the best point),
    else shrinks by 1.5 (never below eps / 10). Returns (x_adv, fooled?) as :func:`_run`."""
    xp = model._be.xp
    n, D = x0.shape
    dt = x0.dtype
    x0f = x0.astype(np.float64)
    period = max(int(0.04 * steps), 1)
    x = start.copy()
    eta = xp.full(n, float(eps))
    topk = xp.full(n, 0.2)
    sp_old = xp.full(n, float(D))
    f, g, cls = _loss_grad(model, x, y, t, loss, threads)
    best_f, best_x, best_g = f.copy(), x.copy(), g.copy()
    fooled = (cls == t) if t is not None else (cls != y)
    adv = x.copy()
    r = xp.arange(n)
    for k in range(steps):
        g64 = g.astype(np.float64)
        ga = xp.abs(g64)
        srt = xp.sort(ga, axis=1)
        kth = xp.clip(((1.0 - topk) * D).astype(np.int64), 0, max(D - 1, 0))
        thr = srt[r, kth] if D else xp.zeros(n)
        sparse = xp.sign(g64) * (ga >= thr[:, None])
        cnt = xp.abs(sparse).sum(axis=1)
        v = x.astype(np.float64) + eta[:, None] * sparse / (cnt + 1e-10)[:, None]
        x = project_l1_box(x0f, v, eps, lo, hi, xp).astype(dt)
        f, g, cls = _loss_grad(model, x, y, t, loss, threads)
        hit = (cls == t) if t is not None else (cls != y)
        adv = xp.where(hit[:, None], x, adv)
        fooled |= hit
        better = f > best_f
        best_f = xp.where(better, f, best_f)
        best_x = xp.where(better[:, None], x, best_x)
        best_g = xp.where(better[:, None], g, best_g)
        if (k + 1) % period == 0:
            sp = xp.count_nonzero(best_x.astype(np.float64) != x0f, axis=1).astype(np.float64)
            red = sp < 0.95 * sp_old  # sp / sp_old < 0.95, without 0 / 0
            topk = sp / max(D, 1) / 1.5
            eta = xp.clip(xp.where(red, float(eps), eta / 1.5), eps / 10.0, float(eps))
            sp_old = sp
            x = xp.where(red[:, None], best_x, x)
            g = xp.where(red[:, None], best_g, g)
    return xp.where(fooled[:, None], adv, best_x), fooled


def _run(model, x0, y, t, eps, l2, lo, hi, steps, loss, start, threads, group=None,
         order=None):
    """One APGD run on rows x0 from ``start`` (the reference code's loop): returns (x_adv: the
    last iterate whose logits' argmax fooled, else the point of highest loss; fooled?).

    APGD-T's runs toward several targets at once (``group``: the original row of each row here,
    ``order``: its run's place in APGD-T's sequence): once a row's run is fooled by the logits,
    the row's later runs leave the batch; a third array ``alive`` (False: left, its outputs
    unset) is then returned too. Arrays on the model's device (``group`` / ``order``: host)."""
    xp = model._be.xp
    n = x0.shape[0]
    dt = x0.dtype
    checks = set(checkpoints(steps))
    drop = group is not None
    st = {"x0": x0}
    if l2:
        def proj(v):
            return _project(v, st["x0"], eps, l2, lo, hi, xp)
    else:
        st["blo"], st["bhi"] = _ball_box(x0, eps, lo, hi, xp)

        def proj(v):
            return xp.minimum(xp.maximum(v, st["blo"]), st["bhi"])
    x = start.copy()
    x_old = x.copy()
    eta = xp.full(n, 2.0 * eps)
    f, g, cls = _loss_grad(model, x, y, t, loss, threads)
    best_f, best_x, best_g = f.copy(), x.copy(), g.copy()
    fooled = (cls == t) if t is not None else (cls != y)
    adv = x.copy()
    increases = xp.zeros(n)
    last_best = best_f.copy()
    reduced = xp.zeros(n, dtype=bool)  # the step size was halved at the last checkpoint
    last_check = 0
    if drop:
        idx, gc, oc = np.arange(n), group, order
        out_x, out_f, alive = np.array(x0), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    for k in range(steps):
        if drop and fooled.any():  # the runs after a row's first fooled one: not needed
            keep = before_first_done(fooled, gc, oc)
            if not keep.all():
                x, x_old, eta, f, g, best_f, best_x, best_g, fooled, adv, increases, \
                    last_best, reduced, y, idx, gc, oc = (
                        v[keep] for v in (x, x_old, eta, f, g, best_f, best_x, best_g, fooled,
                                          adv, increases, last_best, reduced, y, idx, gc, oc))
                t = None if t is None else t[keep]
                st = {key: v[keep] for key, v in st.items()}
        momentum = x - x_old
        x_old = x
        a = dt.type(MOMENTUM if k > 0 else 1.0)
        z = proj(x + (eta[:, None] * _direction(g, l2, xp)).astype(dt))
        x = proj(x + (z - x) * a + momentum * (dt.type(1) - a))
        f_new, g, cls = _loss_grad(model, x, y, t, loss, threads)
        hit = (cls == t) if t is not None else (cls != y)
        adv[hit] = x[hit]
        fooled |= hit
        increases += f_new > f
        f = f_new
        better = f > best_f
        best_f[better], best_x[better], best_g[better] = f[better], x[better], g[better]
        if k + 1 in checks:  # halve where the loss rose too rarely, or stalled unhalved
            period = k + 1 - last_check
            cut = (increases <= RHO * period) | (~reduced & (last_best >= best_f))
            eta[cut] /= 2.0
            x[cut], g[cut] = best_x[cut], best_g[cut]
            reduced, last_best, last_check = cut, best_f.copy(), k + 1
            increases[:] = 0
    res = xp.where(fooled[:, None], adv, best_x)
    if not drop:
        return res, fooled
    out_x[idx], out_f[idx], alive[idx] = res, fooled, True
    return out_x, out_f, alive


#: APGD-T's runs toward its targets batched side by side (False: one after another, the
#: reference the tests compare with; the same results), as many targets at a time as keep the
#: batch within _PAIRS rows (FAB-T's limit too).
_BATCH_TARGETS = True
_PAIRS = TARGET_PAIRS


def _targets_batch(model, x0, ys, others, todo, k0, k1, eps, l2, lo, hi, steps, loss, threads):
    """APGD-T's runs k0 .. k1 - 1 (from X, one per target) of the rows ``todo`` side by side
    in one :func:`_run`: (position of each row of the chunk among them (-1: none), the runs'
    outputs, fooled? and alive?, row-major by (row, run - k0))."""
    pos, pr, pk, grp = target_pairs(todo, x0.shape[0], k1 - k0)
    xs = x0[pr]
    out, hit, alive = _run(model, xs, ys[pr], others[pr, k0 + pk], eps, l2, lo, hi, steps,
                           loss, xs.copy(), threads, group=grp, order=pk)
    return pos, out, hit, alive


def _from_batch(pre, rows, j, k):
    """Run j's outputs (x_adv, fooled) for ``rows`` from a batch of k targets' runs, or None
    when one of them left the batch (its logits-fooled earlier run was not fooled by the
    user's model: the run is then done again on its own)."""
    pos, out, hit, alive = pre
    if np.any(pos[rows] < 0):
        return None
    at = pos[rows] * k + j
    if not alive[at].all():
        return None
    return out[at], hit[at]


@dask_aware
def apgd(model: Model, X: ArrayLike, y: Labels = None, *, eps: float, norm: Norm = "inf",
         loss: str = "ce", target: int | str | None = None, steps: int = 100,
         restarts: int = 1, clip: Clip = None, quantize: float | None = None,
         seed: int | None = None, row_offset: int = 0, threads: int | None = None,
         progress: bool = False):
    """Auto-PGD (Croce & Hein 2020), the attack AutoAttack starts with.

    Parameters
    ----------
    eps : radius of the ball (L-inf or L2, in the inputs' units).
    norm : "inf" (default), 2 or 1 (L1-APGD, Croce & Hein 2021, "Mind the box: l1-APGD for
        sparse adversarial attacks on image classifiers": sparse steps, the projection onto the
        L1 ball inside the box, sparsity-adaptive step sizes; no momentum).
    loss : "ce" (cross-entropy, default) or "dlr" (the Difference-of-Logits-Ratio loss, scale
        invariant; needs at least 3 classes, 4 for a targeted attack).
    target : None (untargeted, default), or an int k / "top-k": APGD-T, targeted runs toward
        each of the k classes with the highest logits after the row's own (DLR-targeted loss
        by default when ``loss="dlr"``), keeping per row the first that fools.
    steps : iterations per run (default 100, the paper's). restarts : random starts per run
        (the first run starts from X itself when 1; default 1).
    clip : optional (lo, hi) box. seed : the random starts, keyed by (seed, target run,
        restart, global row): a row's result does not depend on the rows beside it.
        row_offset : X's first row's index in a larger array (default 0).
    quantize : grid step (e.g. ``1/255``; default None): each run's result is moved onto X's
        grid inside the ball and the box (:func:`fastfool.attacks._common.on_grid`; the
        nearest grid point, or the one rounded away from X when only that one fools) before
        it is judged, so rows that rounding un-fools go on to the next restart or target.

    Returns an AttackResult: ``success`` and ``pred`` are the user's model's decisions on
    ``x_adv`` (untargeted success: not the label, also for APGD-T); ``iterations`` the gradient
    steps per row; ``extra["targets"]`` the classes APGD-T tried.

    On a GPU model (``model.to("cuda")``, CuPy X) the same loop runs on the device (L-inf and
    L2, CE and DLR, APGD-T's runs one target after another); the verdicts (and ``quantize``'s
    rounding) are the host's on copies of each run's result; L1 as well.
    """
    t0 = time.perf_counter()
    model, X, yi, threads = prepare(model, X, y, threads, gpu=True)
    be = model._be
    xp = be.xp
    eps = positive(eps, "eps")
    nrm = norm_of(norm, l1=True, what="apgd")
    l1 = nrm == "1"
    l2 = nrm == "2"
    if loss not in ("ce", "dlr"):
        raise ValueError(f"loss: expected 'ce' or 'dlr', got {loss!r}")
    steps, restarts = count(steps, "steps"), count(restarts, "restarts")
    C = model.n_classes
    k_targets = 0
    if target is not None:
        if isinstance(target, str) and target.startswith("top-"):
            target = target[4:]
        try:
            k_targets = count(int(target), "target")
        except (TypeError, ValueError):
            raise ValueError(f"target: expected None, an int k or 'top-k', got {target!r}") from None
        k_targets = min(k_targets, C - 1)
    if loss == "dlr" and C < (4 if k_targets else 3):
        raise ValueError(f"loss: 'dlr' needs at least {4 if k_targets else 3} classes "
                         f"(this model has {C}); use loss='ce'")
    lo, hi = clip_bounds(clip, X.shape[1], X.dtype, be)
    check_inside_clip(X, lo, hi, be)
    D = X.shape[1]
    lo64, hi64 = bounds64(lo, hi, D, xp)
    row_offset = _random.check_offset(row_offset)
    seed_i = _random.resolve(seed)
    grid = Grid(quantize, eps, nrm, lo, hi, be)
    params = dict(eps=eps, norm=nrm, loss=loss, target=None if not k_targets else f"top-{k_targets}",
                  steps=steps, restarts=restarts, clip=clip, quantize=quantize, seed=seed)
    N = X.shape[0]
    x_adv = xp.array(X)
    dev = be.asarray  # host index and label arrays for the device (on the CPU: themselves)
    fooled = np.zeros(N, dtype=bool)
    iterations = np.zeros(N, dtype=np.int64)
    runs = [None] if not k_targets else list(range(k_targets))
    bar = Progress(N * restarts * len(runs), progress, "apgd")
    for s in row_chunks(*X.shape, be, model.n_weights):
        x0 = xp.ascontiguousarray(X[s])
        ys = yi[s]
        others_all = None
        if k_targets:  # per row the classes other than the label, most likely first
            order = np.argsort(-be.to_host(model.scores(x0, None, threads)), axis=1,
                               kind="stable")
            others_all = order[order != ys[:, None]].reshape(x0.shape[0], -1) if C > 1 else order
        batched = _BATCH_TARGETS and k_targets > 1 and restarts == 1 and not l1 and \
            be.name == "cpu"
        pre, k0, k1 = None, 0, 0
        for run in runs:
            todo = np.flatnonzero(~fooled[s])  # rows already fooled are left alone
            if todo.size == 0:
                break
            t = None
            if run is not None:  # the (run + 1)-th most likely class other than the label
                t = others_all[todo, run]
            if batched and run >= k1:  # the next targets' runs side by side
                k0 = run
                k1 = min(k_targets, run + max(1, _PAIRS // todo.size))
                pre = _targets_batch(model, x0, ys, others_all, todo, k0, k1, eps, l2, lo, hi,
                                     steps, loss, threads)
            for r in range(restarts):
                todo_r = todo[~fooled[s][todo]]
                if todo_r.size == 0:
                    break
                xs = x0[dev(todo_r)]
                k = _random.key(seed_i, "apgd", -1 if run is None else run, r)
                grows = row_offset + s.start + todo_r
                if r == 0 and restarts == 1:
                    start = xs.copy()
                elif l1:  # a Gaussian draw projected onto the L1 ball and the box
                    d = dev(_random.normal(k, grows, D))
                    start = project_l1_box(xs, xs + d, eps, lo64, hi64, xp).astype(xs.dtype)
                else:
                    if l2:
                        d = _random.normal(k, grows, D)
                        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-300)
                        start = xs + dev((eps * d).astype(xs.dtype))
                    else:
                        start = xs + dev((eps * (2 * _random.uniform(k, grows, D) - 1)).astype(
                            xs.dtype))
                    start = _project(start, xs, eps, l2, lo, hi, xp)
                tt = None if t is None else t[np.searchsorted(todo, todo_r)]
                got = None if pre is None else _from_batch(pre, todo_r, run - k0, k1 - k0)
                if l1:
                    out, hit = _run_l1(model, xs, dev(ys[todo_r]), None if tt is None else dev(tt),
                                       eps, lo64, hi64, steps, loss, start, threads)
                elif got is not None:
                    out, hit = got
                else:
                    out, hit = _run(model, xs, dev(ys[todo_r]), None if tt is None else dev(tt),
                                    eps, l2, lo, hi, steps, loss, start, threads)
                rows = s.start + todo_r
                iterations[rows] += steps
                if grid:
                    yr = ys[todo_r]
                    out = grid.snap(out, xs, lambda v, k: succeeded(
                        verdict.decide(model, v, threads), yr[k]))
                # verdict on the candidates: the user's model decides
                pred = verdict.decide(model, be.to_host(out), threads)
                ok = succeeded(pred, ys[todo_r])
                keep = ok | (r == 0 and run in (None, 0))
                x_adv[dev(rows[keep])] = out[dev(keep)]
                fooled[rows[ok]] = True
                bar.update(todo_r.size)
    bar.close()
    extra = {"targets": k_targets} if k_targets else {}
    return finish(model, X, x_adv, yi, None, iterations, attack="apgd", t0=t0, threads=threads,
                  own_labels=y is None, params=params, extra=extra)
