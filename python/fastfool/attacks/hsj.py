"""HopSkipJump (Chen, Jordan & Wainwright, IEEE S&P 2020, "HopSkipJumpAttack: a
query-efficient decision-based attack"), L2 and L-inf: a label-only attack on anything with
``predict``, every row's queries of a phase sent to ``predict`` as one matrix.

Per row: a start the classifier already gets wrong (uniform random points of the box, up to 100
tries), pulled to the decision boundary by bisection toward x; then, per iteration t (from 0):
the boundary's normal estimated from ``n_t = min(init_evals sqrt(t + 1), max_evals)`` label
queries at ``x_b + delta u`` (u uniformly random directions: Gaussian for L2, uniform in the
cube for L-inf, unit L2 length; ``delta = 0.1 (hi - lo)`` at t = 0, then ``sqrt(D) theta d``
(L2) or ``D theta d`` (L-inf) with d the current distance, ``theta = gamma / D^1.5`` or
``gamma / D^2``), the baseline-corrected mean of the directions weighted by +-1; a geometric
step of ``d / sqrt(t + 1)`` along the normalised estimate (its sign in L-inf), halved until
the point is adversarial (at most 20 halvings); and a bisection back to the boundary (L2: on
the segment to x, to ``theta``; L-inf: on the radius of the box around x, to ``theta`` times the
radius). Queries per row stop at ``max_queries`` (an iteration is not started without room for
its estimate and a bisection).

Random numbers come from one generator per row, seeded by ``(seed, row)``: a row's result does
not depend on the other rows.

A fitted ``RandomForestClassifier``, ``ExtraTreesClassifier``, ``DecisionTreeClassifier`` or
``ExtraTreeClassifier`` (exactly those types) is queried through a compiled copy of its trees
(``fastfool._trees``: the same float32 cast, comparisons, float64 sums and argmax, so the same
labels bit for bit, without scikit-learn's ~8 ms per ``predict`` call); ``y`` (when not given),
the final ``pred`` / ``success`` and the clean-accuracy check are the estimator's own
``predict``.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .._dask import dask_aware
from .. import _random
from .._checks import matrix
from .._runtime import check_fits
from .._trees import compiled_predict
from .._typing import ArrayLike, Clip, Labels, Norm
from ..result import AttackResult
from ._common import (Grid, Progress, clip_bounds, count, host_queries, norm_of, positive,
                      row_norms)

__all__ = ["hop_skip_jump"]

INIT_TRIES = 100
STEP_HALVINGS = 20


@dask_aware
def hop_skip_jump(clf, X: ArrayLike, y: Labels = None, *, norm: Norm = 2,
                  max_queries: int = 5000, init_evals: int = 100, max_evals: int = 10000,
                  gamma: float = 1.0, target=None, clip: Clip = None,
                  quantize: float | None = None, seed: int = 0, row_offset: int = 0,
                  progress: bool = False) -> AttackResult:
    """HopSkipJump (Chen et al. 2020), decision-based: only ``clf.predict`` is queried.

    Parameters
    ----------
    clf : anything with ``predict`` (random forests, boosting, SVMs, pipelines, fastfool models).
    X : (N, D) float inputs. y : labels (default ``clf.predict(X)``). target : optional label (or
        labels per row) to reach instead; starts are then drawn until they are classified so.
    norm : 2 (default) or "inf". max_queries : ``predict`` rows per row of X (default 5000).
    init_evals, max_evals : the gradient estimate's queries at t = 0 and at most (100, 10000).
    gamma : the bisection threshold's scale (theta = gamma / D^1.5 for L2, gamma / D^2 L-inf).
    clip : the box (lo, hi) the starts are drawn from and the points kept in (default: the
        range of X, as one interval for all features). seed : per-row generators (seed, row),
        the row's global index ``row_offset + i`` (row_offset default 0: X's first row's index
        in a larger array), so a row's result does not depend on the rows beside it (for a
        classifier that decides each row on its own).
    quantize : grid step (e.g. ``1/255``; default None): ``x_adv`` is moved onto X's grid
        inside the box at the end (the nearest grid point, or the one rounded away from X when
        only that one fools; its two queries per row at most come out of ``max_queries``) and
        judged there.

    A fastfool model on a GPU (``model.to("cuda")``, CuPy X) is queried through its verdict,
    which a GPU model decides on the host anyway (the float64 reference, as its ``predict``
    does): the search runs on host copies and ``x_adv`` comes back on the device.

    Returns an AttackResult: ``x_adv`` per row (X where no adversarial start was found),
    ``success`` / ``pred`` ``clf.predict`` on it, ``queries`` the ``predict`` rows each row
    cost (the final check included), ``iterations`` the completed iterations;
    ``extra["queried"]`` says whether the search asked ``"predict"`` or the ``"compiled
    trees"`` of a scikit-learn tree classifier (the same labels; see the module docstring).
    """
    t0 = time.perf_counter()
    if not callable(getattr(clf, "predict", None)):
        raise TypeError(f"clf: {type(clf).__name__} has no predict")
    # a fastfool model on a GPU: the search and its label queries on the host
    kind = type(clf).__name__
    clf, X, be, clip, y, target = host_queries(clf, X, clip, y, target)
    X = matrix(X, "X")
    check_fits((X.shape[0], 3 * max(X.shape[1], 1)), 8, "X", "the float64 copies of X")
    if not np.all(np.isfinite(X)):
        raise ValueError("X: contains NaN or infinity")
    nrm = norm_of(norm)
    l2 = nrm == "2"
    max_queries = count(max_queries, "max_queries")
    init_evals = count(init_evals, "init_evals")
    max_evals = count(max_evals, "max_evals")
    gamma = positive(gamma, "gamma", allow_zero=False)
    N, D = X.shape
    if clip is None:
        clip = (float(X.min()), float(X.max())) if X.size else (0.0, 1.0)
    lo, hi = clip_bounds(clip, D, X.dtype)
    lo = np.broadcast_to(np.asarray(-np.inf if lo is None else lo, np.float64), (D,))
    hi = np.broadcast_to(np.asarray(np.inf if hi is None else hi, np.float64), (D,))
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("clip: hop_skip_jump needs finite bounds (the starts are drawn in the box)")
    if np.any(X < lo) or np.any(X > hi):
        raise ValueError("X: values lie outside clip=(lo, hi)")
    dt = X.dtype
    x0 = X.astype(np.float64)
    grid = Grid(quantize, np.inf, nrm, lo, hi)
    budget = max_queries - (2 if grid else 0)  # the grid check's queries come out of it
    if budget < 1:
        raise ValueError(f"max_queries: quantize needs at least 3, got {max_queries}")

    def verdict(v):
        """The classifier's own labels."""
        return np.asarray(clf.predict(np.asarray(v, dtype=dt)))

    fast = compiled_predict(clf)

    def labels(v):
        """The labels the search queries: the classifier's, through the compiled copy of its
        trees where there is one (the same labels)."""
        return verdict(v) if fast is None else fast.predict(np.asarray(v, dtype=dt))

    queries = np.zeros(N, dtype=np.int64)
    yl = verdict(X) if y is None else np.asarray(y)
    if y is None:
        queries += 1
    if yl.shape != (N,):
        yl = np.broadcast_to(yl, (N,)) if yl.ndim == 0 else yl
    tl = None
    if target is not None:
        tl = np.asarray(target)
        tl = np.broadcast_to(tl, (N,)) if tl.ndim == 0 else tl
        if tl.shape != (N,):
            raise ValueError(f"target: expected {N} labels, got shape {tl.shape}")

    def adversarial(v, rows):
        """clf's decision on the points v of the given rows (one query per point)."""
        p = labels(v)
        np.add.at(queries, rows, 1)
        return p != yl[rows] if tl is None else p == tl[rows]

    theta = gamma / (D ** 1.5) if l2 else gamma / (D ** 2)
    row_offset = _random.check_offset(row_offset)
    rngs = [np.random.default_rng([seed, row_offset + i]) for i in range(N)]
    width = hi - lo

    # starts: uniform points of the box until one is adversarial
    x_adv = x0.copy()
    found = np.zeros(N, dtype=bool)
    for _ in range(INIT_TRIES):
        rows = np.flatnonzero(~found & (queries < budget))
        if rows.size == 0:
            break
        cand = np.stack([lo + width * rngs[i].random(D) for i in rows]) if D else \
            np.zeros((rows.size, 0))
        ok = adversarial(cand, rows)
        x_adv[rows[ok]] = cand[ok]
        found[rows[ok]] = True

    def bisect(rows, xa):
        """Points on the boundary between x0[rows] and the adversarial xa (to theta)."""
        if l2:
            lo_f, hi_f = np.zeros(rows.size), np.ones(rows.size)
            while True:
                open_ = (hi_f - lo_f) > theta
                if not open_.any():
                    break
                o = np.flatnonzero(open_)
                mid = (lo_f[o] + hi_f[o]) / 2
                pts = (1 - mid)[:, None] * x0[rows[o]] + mid[:, None] * xa[o]
                adv = adversarial(pts, rows[o])
                hi_f[o] = np.where(adv, mid, hi_f[o])
                lo_f[o] = np.where(adv, lo_f[o], mid)
            return (1 - hi_f)[:, None] * x0[rows] + hi_f[:, None] * xa
        r_hi = row_norms(xa - x0[rows], "inf")
        r_lo = np.zeros(rows.size)
        tol = np.minimum(r_hi * theta, theta)
        while True:
            open_ = (r_hi - r_lo) > tol
            if not open_.any():
                break
            o = np.flatnonzero(open_)
            mid = (r_lo[o] + r_hi[o]) / 2
            pts = np.clip(xa[o], x0[rows[o]] - mid[:, None], x0[rows[o]] + mid[:, None])
            adv = adversarial(pts, rows[o])
            r_hi[o] = np.where(adv, mid, r_hi[o])
            r_lo[o] = np.where(adv, r_lo[o], mid)
        return np.clip(xa, x0[rows] - r_hi[:, None], x0[rows] + r_hi[:, None])

    live = np.flatnonzero(found)
    if live.size:
        x_adv[live] = bisect(live, x_adv[live])
    dist = row_norms(x_adv - x0, nrm)
    iterations = np.zeros(N, dtype=np.int64)
    reserve = int(math.ceil(math.log2(max(2.0, 1.0 / theta)))) + 4  # a bisection, a few steps
    bar = Progress(N, progress, "hop_skip_jump")
    reported = 0
    t = 0
    while True:
        n_t = min(int(init_evals * math.sqrt(t + 1)), max_evals)
        room = budget - 1 - queries  # keep one for the final check
        rows = np.flatnonzero(found & (room >= n_t + reserve) & (dist > 0))
        bar.update(N - rows.size - reported)  # rows whose budget is spent
        reported = N - rows.size
        if rows.size == 0:
            break
        xb = x_adv[rows]
        if t == 0:
            delta = 0.1 * np.full(rows.size, float(np.mean(width)))
        else:
            delta = (math.sqrt(D) if l2 else D) * theta * dist[rows]
        # the boundary normal from n_t labels around each boundary point
        u = np.empty((rows.size, n_t, D))
        for k, i in enumerate(rows):
            u[k] = rngs[i].standard_normal((n_t, D)) if l2 else rngs[i].uniform(-1, 1, (n_t, D))
        u /= np.maximum(np.sqrt(np.einsum("knd,knd->kn", u, u)), 1e-300)[:, :, None]
        pts = np.clip(xb[:, None, :] + delta[:, None, None] * u, lo, hi)
        u = (pts - xb[:, None, :]) / delta[:, None, None]
        phi = np.where(adversarial(pts.reshape(-1, D), np.repeat(rows, n_t)).reshape(-1, n_t),
                       1.0, -1.0)
        m = phi.mean(axis=1)
        w = np.where(np.abs(m)[:, None] == 1.0, phi, phi - m[:, None])
        g = np.einsum("kn,knd->kd", w, u) / n_t
        if l2:
            upd = g / np.maximum(np.sqrt(np.einsum("kd,kd->k", g, g)), 1e-300)[:, None]
        else:
            upd = np.sign(g)
        # geometric step search: from d / sqrt(t + 1), halved until adversarial
        eps = dist[rows] / math.sqrt(t + 1)
        ok = np.zeros(rows.size, dtype=bool)
        for _ in range(STEP_HALVINGS):
            o = np.flatnonzero(~ok)
            if o.size == 0:
                break
            cand = np.clip(xb[o] + eps[o][:, None] * upd[o], lo, hi)
            adv = adversarial(cand, rows[o])
            ok[o[adv]] = True
            eps[o[~adv]] /= 2
        moved = rows[ok]
        if moved.size:
            cand = np.clip(xb[ok] + eps[ok][:, None] * upd[ok], lo, hi)
            x_adv[moved] = bisect(moved, cand)
            dist[moved] = row_norms(x_adv[moved] - x0[moved], nrm)
        iterations[rows] += 1
        t += 1
    bar.close()
    x_out = x_adv.astype(dt)
    if grid:
        x_out = grid.snap(x_out, X, adversarial)
    pred = verdict(x_out)
    queries += 1
    success = (pred != yl) if tl is None else ((pred == tl) & (tl != yl))
    diff = x_out.astype(np.float64) - x0
    extra = {"found_start": found, "queried": "predict" if fast is None else "compiled trees"}
    if be is not None:
        x_out = be.asarray(x_out)
        extra["device"] = f"cuda:{be.device}"
    return AttackResult(
        x_adv=x_out, success=np.asarray(success, dtype=bool), pred=pred,
        confidence=np.full(N, np.nan), l2=np.sqrt(np.einsum("ij,ij->i", diff, diff)),
        linf=np.abs(diff).max(axis=1) if D else np.zeros(N), iterations=iterations,
        queries=queries, y=yl, target=tl,
        _correct=np.ones(N, dtype=bool) if y is None else (lambda: verdict(X) == yl),
        attack="hop_skip_jump",
        params=dict(norm=nrm, max_queries=max_queries, init_evals=init_evals,
                    max_evals=max_evals, gamma=gamma, clip=clip, quantize=quantize, seed=seed,
                    classifier=kind),
        elapsed=time.perf_counter() - t0,
        extra=extra)
