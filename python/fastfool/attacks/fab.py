"""Fast Adaptive Boundary attack (Croce & Hein, ICML 2020, "Minimally distorted adversarial
examples with a fast adaptive boundary attack"), L-inf, L2 and L1, untargeted (FAB) and
targeted (FAB-T, AutoAttack's third stage): a minimum-norm attack for models that are not
affine.

Per row and iteration, at the iterate ``x``: every other class ``k`` gives the linearised
boundary ``f_k(x) - f_y(x) + <grad(f_k - f_y)(x), z - x> = 0`` (targeted: only the target
class); the one nearest in the attack's norm (``|f_k - f_y| / ||grad||_dual``) is kept. Both
``x`` and the original point ``x0`` are projected onto that hyperplane inside the box
(:func:`project_plane`: the minimal-norm move onto the hyperplane among the points of the box),
giving ``d`` and ``d0``; the next iterate is the biased mix
``clip((1 - a)(x + eta d) + a (x0 + eta d0))`` with ``a = min(||d|| / (||d|| + ||d0||),
alpha_max)`` (defaults ``eta = 1.05``, ``alpha_max = 0.1``). When the logits' argmax at the new
iterate is adversarial, the point is kept if it is the row's closest so far and the iterate
steps back toward ``x0``: ``x0 + beta (x - x0)`` (``beta = 0.9``). Restarts start from a random
point at half the row's best radius so far (or ``eps`` when given and smaller).

The paper's reference code projects onto the hyperplane inside the box [0, 1]; here the box is
``clip`` (per feature, or none), and when the hyperplane misses the box the projection is the box
corner furthest along the hyperplane's normal. Without a box, a move that would leave
``1e4 (|x0|_inf + 1)`` of ``x0`` in some coordinate (a vanishing gradient) is not taken, as in
:func:`fastfool.deepfool`.
"""

from __future__ import annotations

import time

import numpy as np

from .._dask import dask_aware
from .. import _random, kernels
from .._typing import ArrayLike, Clip, Labels, Norm
from .._backend import CPU
from ..models import Model
from ._common import (bounds64, TARGET_PAIRS, Grid, Progress, before_first_done, check_inside_clip,
                      clip_bounds, confirm_outward, count, finish, label_targets, norm_name,
                      positive, prepare, row_chunks, row_norms, target_pairs)

__all__ = ["fab", "project_plane"]

_DUAL = {"1": "inf", "2": "2", "inf": "1"}
#: FAB-T's runs toward its targets batched side by side (False: one after another, the
#: reference the tests compare with; the results are the same), as many targets at a time as
#: keep the batch within _PAIRS rows: past that the step's NumPy temporaries outgrow the caches
#: (9 targets x 599 digits rows in batches of 1797: 1.73 s against 1.44 s one after another),
#: below it the Python steps dominate (212 rows: 0.54 against 0.61 s; 23 rows: 0.06 against
#: 0.17 s, 1024 pairs).
_BATCH_TARGETS = True
_PAIRS = TARGET_PAIRS


def project_plane(P, w, b, lo, hi, p: str, threads: int | None = None) -> np.ndarray:
    """Per row, the move ``d`` of least ``||d||_p`` (p "1", "2" or "inf") with
    ``w . (P + d) = b`` inside the box: :func:`fastfool.kernels.project_plane`."""
    return kernels.project_plane(P, w, b, lo, hi, norm={"1": 1, "2": 2, "inf": "inf"}[p],
                                 threads=threads)


def plane_moves(X, W, b, lo, hi, p: str, xp=np):
    """:func:`fastfool.kernels.project_plane` in array code (NumPy or CuPy ``xp``; float64, lo
    / hi (D,) vectors or None): the GPU's projection, the same optimality conditions as the CPU
    kernel. L-inf / L2: Newton's method on the scalar from 0, the kernel's, every row in step
    until each has its crossing (a pass per step, at most D + 2); L1: the coordinates of largest
    ``|w_j|`` filled to their room first, ties in index order."""
    n, D = X.shape
    if not n or not D:
        return xp.zeros((n, D))
    r0 = b - xp.einsum("ij,ij->i", W, X)
    ok = (xp.abs(r0) > 0) & xp.isfinite(r0)  # on the plane, or NaN / inf: no move
    r = xp.where(ok, xp.abs(r0), 0.0)
    w = W * xp.where(r0 < 0, -1.0, 1.0)[:, None]
    inf = np.inf
    up = (inf - X) if hi is None else hi - X
    down = (X + inf) if lo is None else X - lo
    toward = xp.where(w > 0, up, down)
    room = xp.where(toward > 0, toward, 0.0)
    v = xp.abs(w)
    moves = v > 0
    sg = xp.where(w < 0, -1.0, 1.0)
    if p == "1":
        order = xp.argsort(-v, axis=1) if xp is not np else np.argsort(-v, axis=1, kind="stable")
        vs = xp.take_along_axis(v, order, axis=1)
        cs = xp.take_along_axis(room, order, axis=1)
        full = xp.where(vs > 0, vs * xp.where(vs > 0, cs, 0.0), 0.0)
        prev = xp.zeros_like(full)  # the progress of the larger ones before each (exclusive)
        prev[:, 1:] = xp.cumsum(full[:, :-1], axis=1)
        left = r[:, None] - prev
        with np.errstate(invalid="ignore", divide="ignore"):
            e = xp.where(prev >= r[:, None], 0.0,
                         xp.where(full >= left, left / xp.where(vs > 0, vs, 1.0), cs))
        e = xp.where(vs > 0, e, 0.0)
        e = xp.take_along_axis(e, xp.argsort(order, axis=1), axis=1)
        return xp.where(ok[:, None] & moves, sg * e, 0.0)
    l2 = p == "2"
    with np.errstate(invalid="ignore", divide="ignore"):
        key = xp.where(moves, room / xp.where(moves, v, 1.0) if l2 else room, inf)
        full = xp.where(moves & (room < inf), v * xp.where(room < inf, room, 0.0), 0.0)
    slope = v * v if l2 else v
    s = xp.zeros(n)
    live = ok & moves.any(axis=1)
    for k in range(D + 2):
        s0 = xp.where(live, s, 0.0)[:, None]  # (rows done: any finite value)
        below = key > s0
        S = xp.where(below, s0 * slope, full).sum(axis=1)
        dS = xp.where(below, slope, 0.0).sum(axis=1)
        reached = ~(S < r)
        short = ~(dS > 0) & ~reached
        with np.errstate(invalid="ignore", divide="ignore"):
            nxt = s + (r - S) / xp.where(dS > 0, dS, 1.0)
        stuck = ~(nxt > s) & ~reached & ~short
        s = xp.where(live & short, inf, xp.where(live & ~reached & ~stuck, nxt, s))
        live = live & ~reached & ~short & ~stuck
        # done rows keep their s, so extra passes change nothing: on the device the check (a
        # copy to the host) every 8 passes; NumPy's is free
        if (xp is np or k % 8 == 7) and not bool(live.any()):
            break
    with np.errstate(invalid="ignore"):
        e = xp.minimum(s[:, None] * v if l2 else xp.broadcast_to(s[:, None], (n, D)), room)
    return xp.where(ok[:, None] & moves, sg * e, 0.0)


def fab_step_array(X, X0, W, b, lo, hi, p: str, eta: float, alpha_max: float, reach, xp=np):
    """:func:`fastfool.kernels.fab_step` in array code (float64; the GPU's FAB step): both
    points projected with :func:`plane_moves`, mixed, clipped, kept only inside ``reach``."""
    d1 = plane_moves(X, W, b, lo, hi, p, xp)
    d2 = plane_moves(X0, W, b, lo, hi, p, xp)
    a1 = xp.maximum(row_norms(d1, p, xp), 1e-8)
    a2 = xp.maximum(row_norms(d2, p, xp), 1e-8)
    a = xp.minimum(a1 / (a1 + a2), alpha_max)[:, None]
    z = (X + eta * d1) * (1 - a) + (X0 + eta * d2) * a
    if lo is not None:
        z = xp.maximum(z, lo)
    if hi is not None:
        z = xp.minimum(z, hi)
    with np.errstate(invalid="ignore"):
        keep = (xp.abs(z - X0) <= reach[:, None]).all(axis=1)
    return xp.where(keep[:, None], z, X)


def _jacobian(model, x, threads):
    """(logits (n, C), their input Jacobian (n, C, D)) in float64: one vector-Jacobian product
    over the rows repeated once per class."""
    xp = model._be.xp
    n, D = x.shape
    C = model.n_classes
    V = xp.tile(xp.eye(C, dtype=model.dtype), (n, 1))
    G, L = model.vjp(xp.repeat(x, C, axis=0), V, threads, return_logits=True)
    L = L.astype(np.float64).reshape(n, C, C)[:, 0, :]
    return L, G.astype(np.float64).reshape(n, C, D)


def _plane(model, x, y, t, p, threads, toward_target=False, want_est=True):
    """The linearised boundary FAB moves to: (w, b) with w . z = b, and the current linear
    distance estimate to it (FAB-T's planes: None unless ``want_est``). Untargeted (t None): the
    nearest boundary f_k = f_y over the other classes k. FAB-T: the boundary f_t = f_y.
    ``toward_target``: the boundary between t and its strongest rival at x, f_t = max_{j != t}
    f_j (a point past it is decided as t)."""
    xp = model._be.xp
    n = x.shape[0]
    r = xp.arange(n)
    if t is None:
        L, J = _jacobian(model, x, threads)
        df = L - L[r, y][:, None]
        dg = J - J[r, y][:, None, :]
        dual = _DUAL[p]
        if dual == "inf":
            gn = xp.abs(dg).max(axis=2) if dg.shape[2] else xp.zeros(df.shape)
        elif dual == "1":
            gn = xp.abs(dg).sum(axis=2)
        else:
            gn = xp.sqrt(xp.einsum("ijk,ijk->ij", dg, dg))
        dist = xp.abs(df) / (1e-12 + gn)
        dist[r, y] = np.inf
        k = xp.argmin(dist, axis=1)
        w, f, est = dg[r, k], df[r, k], dist[r, k]
    else:
        C = model.n_classes
        rival = y
        if toward_target:
            L = model.scores(x, None, threads).astype(np.float64)
            L[r, t] = -np.inf
            rival = xp.argmax(L, axis=1)
        cols = xp.arange(C)
        V = (cols == t[:, None]).astype(model.dtype) - \
            (cols == rival[:, None]).astype(model.dtype)
        G, L = model.vjp(x, V, threads, return_logits=True)
        L = L.astype(np.float64)
        w = G.astype(np.float64)
        f = L[r, t] - L[r, rival]
        est = xp.abs(f) / (1e-12 + row_norms(w, _DUAL[p], xp)) if want_est else None
    xf = x.astype(np.float64)
    return w, xp.einsum("ij,ij->i", w, xf) - f, est


def _run(model, x0, y, t, p, lo, hi, steps, alpha_max, eta, beta, start, accept, threads,
         group=None, order=None, eps=None):
    """One FAB run on rows x0 (float64) from ``start``: (closest adversarial iterate per row in
    the model's dtype (x0 where none), its norm (inf where none), the first iteration's linear
    distance estimate). ``accept``: "any" (not y) or "target" (the target t).

    FAB-T's runs toward several targets at once (``group``: the original row of each row here,
    ``order``: its run's place in FAB-T's sequence, ``eps``): once a row's run has a point
    within ``eps``, the row's later runs leave the batch (the sequential attack would not start
    them); their outputs are then partial and must not be used."""
    be = model._be
    xp = be.xp
    dt = model.dtype
    n = x0.shape[0]
    x = start.copy()
    best = xp.full(n, np.inf)
    bx = x0.astype(dt)
    est0 = None
    D = x0.shape[1]
    # without a box the linearisation can send a row arbitrarily far (a vanishing gradient): a
    # move that leaves 1e4 (|x0|_inf + 1) of x0 in some coordinate, or the model's float range,
    # is not taken (DeepFool's trust region)
    reach = xp.minimum(1e4 * ((xp.abs(x0).max(axis=1) if D else xp.zeros(n)) + 1.0),
                       float(np.finfo(dt).max) / 4)
    drop = group is not None and eps is not None
    idx = np.arange(n)  # the rows still in the batch (all, unless runs are dropped)
    xc, yc, tc, bc, bxc, gc, oc = x0, y, t, best, bx, group, order
    for _ in range(steps):
        if idx.size == 0:
            break
        xa = x.astype(dt)
        w, b, est = _plane(model, xa, yc, tc, p, threads, accept == "target",
                           want_est=est0 is None)
        if est0 is None:
            est0 = est
        if be is CPU:
            x = kernels.fab_step(xa, xc, w, b, lo, hi, norm={"1": 1, "2": 2, "inf": "inf"}[p],
                                 eta=eta, alpha_max=alpha_max, reach=reach, threads=threads)
        else:  # the same step in array code on the device
            x = fab_step_array(xa.astype(np.float64), xc, w, b, lo, hi, p, eta, alpha_max,
                               reach, xp)
        xa = x.astype(dt)
        pred = xp.argmax(model.scores(xa, None, threads), axis=1)
        adv = pred != yc if accept == "any" else pred == tc
        dn = row_norms(xa.astype(np.float64) - xc, p, xp)
        closer = adv & (dn < bc)
        bc = xp.where(closer, dn, bc)
        bxc = xp.where(closer[:, None], xa, bxc)
        x = xp.where(adv[:, None], xc + (x - xc) * beta, x)
        if drop and np.any(bc <= eps):  # the runs after a row's first success within eps
            keep = before_first_done(bc <= eps, gc, oc)
            if not keep.all():
                best[idx], bx[idx] = bc, bxc
                idx = idx[keep]
                x, xc, yc, tc, bc, bxc, reach, gc, oc = (
                    v[keep] for v in (x, xc, yc, tc, bc, bxc, reach, gc, oc))
    if drop:
        best[idx], bx[idx] = bc, bxc
    else:
        best, bx = bc, bxc
    if est0 is None:
        est0 = xp.zeros(n)
    return bx, best, est0


def _all_targets(model, x0, ys, others, k0, k1, done0, bn, eps, p, lo, hi, steps, alpha_max,
                 eta, beta, threads):
    """FAB-T's runs k0 .. k1 - 1 (from x0, one per target) of every row still open, side by
    side in one :func:`_run`: (position of each row among them (-1: none), the runs' closest
    points, norms and first estimates, row-major by (row, run - k0)). A row's runs after its
    first success within ``eps`` stop early (their outputs are never read: the replay skips
    them, as the sequential attack does)."""
    open_ = ~done0
    if eps is not None:
        open_ &= ~(bn <= eps)
    pos, pr, pk, grp = target_pairs(np.flatnonzero(open_), x0.shape[0], k1 - k0)
    bx, bd, e0 = _run(model, x0[pr], ys[pr], others[pr, k0 + pk], p, lo, hi, steps, alpha_max,
                      eta, beta, x0[pr], "any", threads, group=grp, order=pk, eps=eps)
    return pos, bx, bd, e0


def _random_start(x0, radius, p, lo, hi, rngs, be=CPU):
    """x0 plus a random move of norm radius / 2 per row (uniform direction in the L-inf cube's
    surface scaling, Gaussian for L2 and L1, as the reference code), clipped to the box. The
    draws are the host's (per-row generators); x0 and the bounds of the backend ``be``."""
    n, D = x0.shape
    u = np.stack([g.uniform(-1, 1, D) if p == "inf" else g.standard_normal(D) for g in rngs]) \
        if n else np.zeros((0, D))
    un = np.maximum(row_norms(u, p), 1e-300)
    x = x0 + be.asarray(u * (radius / un)[:, None] * 0.5)
    if lo is not None or hi is not None:
        x = be.xp.clip(x, lo, hi)
    return x


@dask_aware
def fab(model: Model, X: ArrayLike, y: Labels = None, *, norm: Norm = "inf", steps: int = 100,
        restarts: int = 1, target=None, n_targets: int | None = None, eps: float | None = None,
        alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, clip: Clip = None,
        quantize: float | None = None, seed: int = 0, row_offset: int = 0,
        threads: int | None = None, progress: bool = False):
    """Fast Adaptive Boundary attack (Croce & Hein 2020): minimum-norm adversarial examples in
    L-inf (default), L2 or L1.

    Parameters
    ----------
    norm : "inf" (default), 2 or 1. steps : iterations per run (default 100, the paper's).
    restarts : runs per row (default 1); run 0 starts at X, the others at a random point at half
        the row's best radius so far (or of ``eps`` when that is smaller; of the first linear
        distance estimate while nothing was found), drawn from ``(seed, row, restart)``.
    target : None (untargeted, default) or class labels (one per row, or one for all): the
        boundary between the target and its strongest rival at each iterate, success when the
        model decides the target.
    n_targets : FAB-T (AutoAttack's variant): targeted runs toward each of the ``n_targets`` most
        likely other classes in turn (by the logits at X), success when the decision is not the
        label; per row the closest adversarial example over all runs. Not with ``target``.
    eps : optional radius: restarts start within it, and a row whose best is within ``eps``
        is not attacked by later runs (AutoAttack's use: robust at ``eps`` or not).
    alpha_max, eta, beta : the paper's bias toward X (0.1), overshoot (1.05) and backward step
        (0.9).
    clip : optional (lo, hi) box (the projections respect it). seed : the restarts' draws,
        keyed by (seed, global row, restart, target). row_offset : X's first row's index in a
        larger array (default 0).
    quantize : grid step (e.g. ``1/255``; default None): ``x_adv`` is moved onto X's grid at
        the end (and inside the box): the nearest grid point, or the one rounded away from X
        when only that one fools; ``success`` and the norms are measured there.

    Returns an AttackResult: ``x_adv`` the closest point per row whose logits' argmax was
    adversarial (X where none was; moved outward by at most 1% where the user's model does not
    confirm it on the boundary, as in :func:`fastfool.fmn`), ``success`` / ``pred`` the user's
    model's decisions on it,
    ``iterations`` the steps run per row; ``extra["distance"]`` the norm of each row's
    perturbation (inf where nothing was found).

    On a GPU model (``model.to("cuda")``, CuPy X) the runs go on the device, one target after
    another (FAB-T), with the projections in array code (:func:`plane_moves`); the restarts'
    draws, the verdicts, the outward confirmation and ``quantize``'s rounding are the host's.
    """
    t0 = time.perf_counter()
    model, X, yi, threads = prepare(model, X, y, threads, gpu=True)
    be = model._be
    xp, dev = be.xp, be.asarray
    p = norm_name(norm, l1=True, what="fab")
    row_offset = _random.check_offset(row_offset)
    steps, restarts = count(steps, "steps"), count(restarts, "restarts")
    eps = None if eps is None else positive(eps, "eps", allow_zero=False, allow_inf=True)
    alpha_max = positive(alpha_max, "alpha_max")
    if alpha_max > 1:
        raise ValueError(f"alpha_max: must lie in [0, 1], got {alpha_max!r}")
    eta = positive(eta, "eta", allow_zero=False)
    beta = positive(beta, "beta", allow_zero=False)
    if beta >= 1:
        raise ValueError(f"beta: must lie in (0, 1), got {beta!r}")
    N, D = X.shape
    C = model.n_classes
    if target is not None and n_targets is not None:
        raise ValueError("target, n_targets: give one of them (labels, or FAB-T's number of "
                         "classes)")
    ti = label_targets(model, target, yi, N)
    k_targets = 0
    if n_targets is not None:
        k_targets = min(count(n_targets, "n_targets"), C - 1)
    lo, hi = clip_bounds(clip, D, X.dtype, be)
    grid = Grid(quantize, np.inf, p, lo, hi, be)
    check_inside_clip(X, lo, hi, be)
    lo64, hi64 = bounds64(lo, hi, D, xp)
    x_best = xp.array(X)
    dist = np.full(N, np.inf)
    iterations = np.zeros(N, dtype=np.int64)
    runs = [None] if not k_targets else list(range(k_targets))
    # FAB-T with one run per target: the targets' runs side by side in one batch (the same
    # per-row results, a tenth of the Python steps), replayed in FAB-T's order afterwards
    # (on the CPU only: on a GPU the runs go one after another)
    batched = _BATCH_TARGETS and k_targets > 1 and restarts == 1 and be is CPU
    bar = Progress(N * restarts * len(runs), progress, "fab")
    width = D * max(C, 1) if ti is None and not k_targets else D * (k_targets if batched else 1)
    for s in row_chunks(N, width, be, model.n_weights):
        x0 = X[s].astype(np.float64)
        ys = yi[s]
        n = x0.shape[0]
        own = np.arange(row_offset + s.start, row_offset + s.start + n)
        L0 = be.to_host(model.scores(X[s], None, threads))
        order = np.argsort(-L0, axis=1, kind="stable") if k_targets else None
        bn = np.full(n, np.inf)
        est = np.full(n, np.nan)
        # rows the model already gets wrong (untargeted) or that sit on their target: nothing
        pred0 = np.argmax(L0, axis=1)
        done0 = pred0 != ys if ti is None else (pred0 == ti[s]) | (ti[s] == ys)
        bn[pred0 != ys if ti is None else (pred0 == ti[s]) & (ti[s] != ys)] = 0.0
        others = None
        if k_targets:  # per row the classes other than the label, most likely first
            others = order[order != ys[:, None]].reshape(n, -1) if C > 1 else order
        pre, k0, k1 = None, 0, 0
        for run in runs:
            if batched and run >= k1:  # the next targets' runs side by side
                left = ~done0 if eps is None else ~done0 & ~(bn <= eps)
                k0 = run
                k1 = min(k_targets, run + max(1, _PAIRS // max(int(left.sum()), 1)))
                pre = _all_targets(model, x0, ys, others, k0, k1, done0, bn, eps, p, lo64,
                                   hi64, steps, alpha_max, eta, beta, threads)
            t = None if ti is None else ti[s]
            if run is not None:  # the (run + 1)-th most likely class other than the label
                t = others[:, run]
            for r in range(restarts):
                todo = ~done0
                if eps is not None:
                    todo &= ~(bn <= eps)
                rows = np.flatnonzero(todo)
                if rows.size == 0:
                    continue
                rd = dev(rows)
                if r == 0:
                    start = x0[rd]
                else:
                    rad = np.where(np.isfinite(bn[rows]), bn[rows], est[rows])
                    if eps is not None:
                        rad = np.minimum(rad, eps)
                    rad = np.where(np.isfinite(rad), rad, 0.0)
                    rngs = [np.random.default_rng([seed, int(own[i]), r, 0 if run is None
                                                   else run + 1]) for i in rows]
                    start = _random_start(x0[rd], rad, p, lo64, hi64, rngs, be)
                tt = None if t is None else t[rows]
                if pre is not None:  # this run's rows, from the batch of all targets
                    pos, bxs, bds, e0s = pre
                    at = pos[rows] * (k1 - k0) + run - k0
                    if np.any(pos[rows] < 0):  # pragma: no cover - the replay's invariant
                        raise AssertionError("fab: a run outside the batched targets")
                    bx, bd, e0 = bxs[at], bds[at], e0s[at]
                else:
                    bx, bd, e0 = _run(model, x0[rd], dev(ys[rows]),
                                      None if tt is None else dev(tt), p, lo64, hi64, steps,
                                      alpha_max, eta, beta, start,
                                      "target" if ti is not None else "any", threads)
                    bd, e0 = be.to_host(bd), be.to_host(e0)
                est[rows] = np.where(np.isnan(est[rows]), e0, est[rows])
                closer = bd < bn[rows]
                g = s.start + rows[closer]
                x_best[dev(g)] = bx[dev(closer)]
                bn[rows[closer]] = bd[closer]
                iterations[s.start + rows] += steps
                bar.update(rows.size)
        dist[s] = bn
    bar.close()
    # the closest points were adversarial by the model's own-precision logits: where the user's
    # model disagrees on the boundary, a point a hair further out (its distance measured again)
    confirmed = confirm_outward(model, X, x_best, yi, ti, threads, lo64, hi64)
    ch = np.flatnonzero(be.to_host(xp.any(confirmed != x_best, axis=1))) if N else \
        np.zeros(0, np.int64)
    if ch.size:
        cd = dev(ch)
        dist[ch] = be.to_host(row_norms(confirmed[cd].astype(np.float64) -
                                        X[cd].astype(np.float64), p, xp))
    x_best = confirmed
    params = dict(norm=p, steps=steps, restarts=restarts, target=target is not None,
                  n_targets=k_targets or None, eps=eps, alpha_max=alpha_max, eta=eta, beta=beta,
                  clip=clip, quantize=quantize, seed=seed)
    return finish(model, X, x_best, yi, ti, iterations, attack="fab", t0=t0, threads=threads,
                  own_labels=y is None, params=params, extra={"distance": dist},
                  grid=grid)
