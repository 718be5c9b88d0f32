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
from ..models import Model
from ._common import (TARGET_PAIRS, Grid, Progress, before_first_done, check_inside_clip,
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


def _jacobian(model, x, threads):
    """(logits (n, C), their input Jacobian (n, C, D)) in float64: one vector-Jacobian product
    over the rows repeated once per class."""
    n, D = x.shape
    C = model.n_classes
    V = np.tile(np.eye(C, dtype=model.dtype), (n, 1))
    G, L = model.vjp(np.repeat(x, C, axis=0), V, threads, return_logits=True)
    L = np.asarray(L, np.float64).reshape(n, C, C)[:, 0, :]
    return L, np.asarray(G, np.float64).reshape(n, C, D)


def _plane(model, x, y, t, p, threads, toward_target=False, want_est=True):
    """The linearised boundary FAB moves to: (w, b) with w . z = b, and the current linear
    distance estimate to it (FAB-T's planes: None unless ``want_est``). Untargeted (t None): the
    nearest boundary f_k = f_y over the other classes k. FAB-T: the boundary f_t = f_y.
    ``toward_target``: the boundary between t and its strongest rival at x, f_t = max_{j != t}
    f_j (a point past it is decided as t)."""
    n = x.shape[0]
    r = np.arange(n)
    if t is None:
        L, J = _jacobian(model, x, threads)
        df = L - L[r, y][:, None]
        dg = J - J[r, y][:, None, :]
        dual = _DUAL[p]
        if dual == "inf":
            gn = np.abs(dg).max(axis=2) if dg.shape[2] else np.zeros(df.shape)
        elif dual == "1":
            gn = np.abs(dg).sum(axis=2)
        else:
            gn = np.sqrt(np.einsum("ijk,ijk->ij", dg, dg))
        dist = np.abs(df) / (1e-12 + gn)
        dist[r, y] = np.inf
        k = np.argmin(dist, axis=1)
        w, f, est = dg[r, k], df[r, k], dist[r, k]
    else:
        C = model.n_classes
        rival = y
        if toward_target:
            L = np.asarray(model.scores(x, None, threads), np.float64).copy()
            L[r, t] = -np.inf
            rival = np.argmax(L, axis=1)
        V = np.zeros((n, C), dtype=model.dtype)
        V[r, t] = 1.0
        V[r, rival] -= 1.0
        G, L = model.vjp(x, V, threads, return_logits=True)
        L = np.asarray(L, np.float64)
        w = np.asarray(G, np.float64)
        f = L[r, t] - L[r, rival]
        est = np.abs(f) / (1e-12 + row_norms(w, _DUAL[p])) if want_est else None
    xf = np.asarray(x, np.float64)
    return w, np.einsum("ij,ij->i", w, xf) - f, est


def _run(model, x0, y, t, p, lo, hi, steps, alpha_max, eta, beta, start, accept, threads,
         group=None, order=None, eps=None):
    """One FAB run on rows x0 (float64) from ``start``: (closest adversarial iterate per row in
    the model's dtype (x0 where none), its norm (inf where none), the first iteration's linear
    distance estimate). ``accept``: "any" (not y) or "target" (the target t).

    FAB-T's runs toward several targets at once (``group``: the original row of each row here,
    ``order``: its run's place in FAB-T's sequence, ``eps``): once a row's run has a point
    within ``eps``, the row's later runs leave the batch (the sequential attack would not start
    them); their outputs are then partial and must not be used."""
    dt = model.dtype
    n = x0.shape[0]
    x = start.copy()
    best = np.full(n, np.inf)
    bx = x0.astype(dt)
    est0 = None
    D = x0.shape[1]
    # without a box the linearisation can send a row arbitrarily far (a vanishing gradient): a
    # move that leaves 1e4 (|x0|_inf + 1) of x0 in some coordinate, or the model's float range,
    # is not taken (DeepFool's trust region)
    reach = np.minimum(1e4 * ((np.abs(x0).max(axis=1) if D else np.zeros(n)) + 1.0),
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
        x = kernels.fab_step(xa, xc, w, b, lo, hi, norm={"1": 1, "2": 2, "inf": "inf"}[p],
                             eta=eta, alpha_max=alpha_max, reach=reach, threads=threads)
        xa = x.astype(dt)
        pred = np.argmax(model.scores(xa, None, threads), axis=1)
        adv = pred != yc if accept == "any" else pred == tc
        dn = row_norms(xa.astype(np.float64) - xc, p)
        closer = adv & (dn < bc)
        bc = np.where(closer, dn, bc)
        bxc[closer] = xa[closer]
        x[adv] = xc[adv] + (x[adv] - xc[adv]) * beta
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
        est0 = np.zeros(n)
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


def _random_start(x0, radius, p, lo, hi, rngs):
    """x0 plus a random move of norm radius / 2 per row (uniform direction in the L-inf cube's
    surface scaling, Gaussian for L2 and L1, as the reference code), clipped to the box."""
    n, D = x0.shape
    u = np.stack([g.uniform(-1, 1, D) if p == "inf" else g.standard_normal(D) for g in rngs]) \
        if n else np.zeros((0, D))
    un = np.maximum(row_norms(u, p), 1e-300)
    x = x0 + u * (radius / un)[:, None] * 0.5
    if lo is not None or hi is not None:
        x = np.clip(x, lo, hi)
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
    """
    t0 = time.perf_counter()
    model, X, yi, threads = prepare(model, X, y, threads)
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
    lo, hi = clip_bounds(clip, D, X.dtype)
    grid = Grid(quantize, np.inf, p, lo, hi)
    check_inside_clip(X, lo, hi)
    lo64 = None if lo is None else np.broadcast_to(np.asarray(lo, np.float64), (D,))
    hi64 = None if hi is None else np.broadcast_to(np.asarray(hi, np.float64), (D,))
    x_best = np.array(X)
    dist = np.full(N, np.inf)
    iterations = np.zeros(N, dtype=np.int64)
    runs = [None] if not k_targets else list(range(k_targets))
    # FAB-T with one run per target: the targets' runs side by side in one batch (the same
    # per-row results, a tenth of the Python steps), replayed in FAB-T's order afterwards
    batched = _BATCH_TARGETS and k_targets > 1 and restarts == 1
    bar = Progress(N * restarts * len(runs), progress, "fab")
    width = D * max(C, 1) if ti is None and not k_targets else D * (k_targets if batched else 1)
    for s in row_chunks(N, width, weights=model.n_weights):
        x0 = np.asarray(X[s], np.float64)
        ys = yi[s]
        n = x0.shape[0]
        own = np.arange(row_offset + s.start, row_offset + s.start + n)
        L0 = model.scores(X[s], None, threads)
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
                if r == 0:
                    start = x0[rows]
                else:
                    rad = np.where(np.isfinite(bn[rows]), bn[rows], est[rows])
                    if eps is not None:
                        rad = np.minimum(rad, eps)
                    rad = np.where(np.isfinite(rad), rad, 0.0)
                    rngs = [np.random.default_rng([seed, int(own[i]), r, 0 if run is None
                                                   else run + 1]) for i in rows]
                    start = _random_start(x0[rows], rad, p, lo64, hi64, rngs)
                tt = None if t is None else t[rows]
                if pre is not None:  # this run's rows, from the batch of all targets
                    pos, bxs, bds, e0s = pre
                    at = pos[rows] * (k1 - k0) + run - k0
                    if np.any(pos[rows] < 0):  # pragma: no cover - the replay's invariant
                        raise AssertionError("fab: a run outside the batched targets")
                    bx, bd, e0 = bxs[at], bds[at], e0s[at]
                else:
                    bx, bd, e0 = _run(model, x0[rows], ys[rows], tt, p, lo64, hi64, steps,
                                      alpha_max, eta, beta, start,
                                      "target" if ti is not None else "any", threads)
                est[rows] = np.where(np.isnan(est[rows]), e0, est[rows])
                closer = bd < bn[rows]
                g = s.start + rows[closer]
                x_best[g] = bx[closer]
                bn[rows[closer]] = bd[closer]
                iterations[s.start + rows] += steps
                bar.update(rows.size)
        dist[s] = bn
    bar.close()
    # the closest points were adversarial by the model's own-precision logits: where the user's
    # model disagrees on the boundary, a point a hair further out (its distance measured again)
    confirmed = confirm_outward(model, X, x_best, yi, ti, threads, lo64, hi64)
    ch = np.flatnonzero(np.any(confirmed != x_best, axis=1)) if N else np.zeros(0, np.int64)
    if ch.size:
        dist[ch] = row_norms(np.asarray(confirmed[ch], np.float64) -
                             np.asarray(X[ch], np.float64), p)
    x_best = confirmed
    params = dict(norm=p, steps=steps, restarts=restarts, target=target is not None,
                  n_targets=k_targets or None, eps=eps, alpha_max=alpha_max, eta=eta, beta=beta,
                  clip=clip, quantize=quantize, seed=seed)
    return finish(model, X, x_best, yi, ti, iterations, attack="fab", t0=t0, threads=threads,
                  own_labels=y is None, params=params, extra={"distance": dist},
                  grid=grid)
