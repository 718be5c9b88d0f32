"""A black-box, score-based attack for any classifier with ``predict_proba``.

SimBA (Guo et al., "Simple Black-box Adversarial Attacks", ICML 2019) with the coordinate
basis: each row walks through its coordinates in a random order; for each, it tries
``x - step * e_i`` and then ``x + step * e_i`` (projected onto the eps-ball and the box) and
keeps the first that lowers the probability of the attacked class (or raises the target's).
``step`` is ``eps`` in L-inf and ``eps / 10`` in L2. A row that has tried every coordinate and
still has queries left starts another sweep in a new random order (fastfool's extension, so
that success grows with ``max_queries``): the second sweep with the same step (in L-inf it can
move a coordinate to the other side of the ball, or back), each later one with half the
previous step, and a move that leaves the score unchanged is accepted too (a random forest's
probabilities are flat over most single moves); a candidate equal to the current point costs
no query. Rows are batched: one
``predict_proba`` call per round serves all rows still running; queries are counted per row.

Success is the classifier's own decision: ``clf.predict`` on the returned ``x_adv`` (for a
multi-class ``SVC(probability=True)`` the argmax of ``predict_proba`` is not what ``predict``
returns). A row stops when ``predict`` says it is fooled; each such check on the rows a round
improved is counted as a query of those rows.
"""

from __future__ import annotations

import time

import numpy as np

from .._dask import dask_aware
from .. import _random
from .._checks import matrix
from .._typing import ArrayLike, Clip, Labels, Norm, Target
from ..result import AttackResult
from ._common import (Grid, Progress, clip_bounds, count, host_queries, norm_of, positive,
                      succeeded)

__all__ = ["score_attack"]


@dask_aware
def score_attack(clf, X: ArrayLike, y: Labels = None, *, eps: float, norm: Norm = "inf",
                 max_queries: int = 1000, target: Target = None, seed: int = 0,
                 clip: Clip = None, quantize: float | None = None,
                 batch_rounds: int | None = None, row_offset: int = 0,
                 progress: bool = False) -> AttackResult:
    """Score-based black-box attack (SimBA, coordinate basis) on ``clf.predict_proba``.

    Parameters
    ----------
    clf : any object with ``predict_proba`` (and ``classes_``), e.g. a scikit-learn
        RandomForestClassifier, SVC(probability=True), or a fastfool model.
    X : (N, D) float inputs; y : labels (default ``clf.predict(X)``).
    eps : per-coordinate step and L-inf budget (L2 budget with ``norm=2``).
    max_queries : per row, ``predict_proba`` evaluations (each row's first query included).
    target : optional label or labels per row (increase its probability instead).
    clip : optional ``(lo, hi)``. seed : the coordinate orders; same seed, same result. Each
        row's order in each sweep is drawn from (seed, sweep, global row), so a row's result
        does not depend on the rows beside it (for a classifier that decides each row on its
        own: forests and fastfool models; a BLAS-backed estimator may round a row differently
        among other rows). row_offset : X's first row's index in a larger array (default 0).
    quantize : grid step (e.g. ``1/255``; default None): ``x_adv`` is moved onto X's grid
        inside the ball and the box at the end (the nearest grid point, or the one rounded away
        from X when only that one fools; its two queries per row at most come out of
        ``max_queries``) and judged there.

    Returns
    -------
    AttackResult with ``queries`` per row (``predict_proba`` and ``predict`` calls); success
    and ``pred`` are ``clf.predict`` on x_adv (the argmax of ``predict_proba`` for a classifier
    without ``predict``), ``confidence`` is ``predict_proba`` of that label. A fastfool model on
    a GPU (``model.to("cuda")``, CuPy X) answers ``predict_proba`` on the device and its
    ``predict`` checks on the host (as a GPU model's ``predict`` does); the search runs on the
    host and ``x_adv`` comes back on the device.
    """
    t0 = time.perf_counter()
    if not hasattr(clf, "predict_proba"):
        raise TypeError(f"clf: {type(clf).__name__} has no predict_proba")
    # a fastfool model on a GPU: the search on the host, predict_proba on the device
    kind = type(clf).__name__
    clf, X, be, clip, y, target = host_queries(clf, X, clip, y, target)
    X = matrix(X, "X")
    if not np.all(np.isfinite(X)):
        raise ValueError("X: contains NaN or infinity")
    eps = positive(eps, "eps")
    nrm = norm_of(norm)
    max_queries = count(max_queries, "max_queries")
    classes = np.asarray(getattr(clf, "classes_", None))
    N, D = X.shape
    lo, hi = clip_bounds(clip, D, X.dtype)
    if (lo is not None and np.any(X < lo)) or (hi is not None and np.any(X > hi)):
        raise ValueError("X: values lie outside clip=(lo, hi)")
    grid = Grid(quantize, eps, nrm, lo, hi)

    sorter = np.argsort(classes, kind="stable") if classes.ndim == 1 and classes.size else None

    def index_of(labels, name, n=N):
        labels = np.asarray(labels)
        if labels.ndim == 0:
            labels = np.full(n, labels[()])
        if labels.shape != (n,):
            raise ValueError(f"{name}: expected {n} labels, got shape {labels.shape}")
        if sorter is None:
            raise TypeError("clf: has no classes_ to map labels to")
        try:
            pos = sorter[np.minimum(np.searchsorted(classes, labels, sorter=sorter),
                                    len(classes) - 1)]
            ok = np.asarray(classes[pos] == labels, dtype=bool)
        except (TypeError, ValueError, np.exceptions.DTypePromotionError):
            ok = np.zeros(n, dtype=bool)
        if ok.shape != (n,) or not ok.all():
            raise ValueError(f"{name}: labels not in clf.classes_ {classes.tolist()}")
        return pos.astype(np.int64)

    has_predict = callable(getattr(clf, "predict", None))

    def decided(x, Pm=None):
        """Class indices clf itself decides for x (its predict; argmax of predict_proba only
        for a classifier that has no predict)."""
        if not has_predict:
            return np.argmax(Pm if Pm is not None else np.asarray(clf.predict_proba(x)), axis=1)
        return index_of(np.asarray(clf.predict(x)), "clf.predict(X)", len(x)) if len(x) else \
            np.zeros(0, dtype=np.int64)

    P = np.asarray(clf.predict_proba(X))
    queries = np.ones(N, dtype=np.int64)
    clean = decided(X, P)
    if has_predict:
        queries += 1
    yi = clean if y is None else index_of(y, "y")
    ti = None if target is None else index_of(target, "target")
    goal = ti if ti is not None else yi
    sign = -1.0 if ti is None else 1.0  # minimise p_y, or maximise p_t
    r = np.arange(N)
    best = P[r, goal].astype(np.float64)
    x = np.array(X, dtype=X.dtype, order="C")
    row_offset = _random.check_offset(row_offset)
    seed_i = _random.resolve(seed)

    def order_of(rows, sweeps):
        """Each row's coordinate order for its sweep, keyed by (seed, sweep, global row)."""
        out = np.empty((rows.size, D), dtype=np.int64)
        for k in np.unique(sweeps):
            sel = np.flatnonzero(sweeps == k)
            u = _random.uniform(_random.key(seed_i, "simba", int(k)), row_offset + rows[sel], D)
            out[sel] = np.argsort(u, axis=1, kind="stable")
        return out

    orders = order_of(np.arange(N), np.zeros(N, dtype=np.int64))
    pos = np.zeros(N, dtype=np.int64)
    sweep = np.zeros(N, dtype=np.int64)
    tried = np.zeros(N, dtype=np.int64)
    step0 = eps if nrm == "inf" else eps / 10
    bar = Progress(N, progress, "score_attack")

    def fooled(p, rows):
        return succeeded(p, yi[rows], None if ti is None else ti[rows])

    done = fooled(clean, r)
    # an accepted move costs a predict check; the grid check (quantize) two queries at most
    limit = max_queries - (1 if has_predict else 0) - (2 if grid else 0)
    if grid and max_queries < 5:
        raise ValueError(f"max_queries: quantize needs at least 5, got {max_queries}")
    stalled = np.zeros(N, dtype=bool)  # a whole sweep without a query: nothing left to try
    sweep_start = queries.copy()
    while True:
        # rows past their last coordinate start another sweep in a new order (D > 0), unless
        # their last sweep could not move any coordinate (eps 0, a box pinned in place)
        wrap = np.flatnonzero(~done & ~stalled & (queries < limit) & (pos >= D)) if D else \
            np.zeros(0, dtype=np.int64)
        if wrap.size:
            idle = queries[wrap] == sweep_start[wrap]
            stalled[wrap[idle]] = True
            wrap = wrap[~idle]
            sweep_start[wrap] = queries[wrap]
        if wrap.size:
            pos[wrap] = 0
            sweep[wrap] += 1
            orders[wrap] = order_of(wrap, sweep[wrap])
        active = np.flatnonzero(~done & (queries < limit) & (pos < D))
        if active.size == 0:
            break
        coord = orders[active, pos[active]]
        pos[active] += 1
        tried[active] += 1
        sw = sweep[active]
        step = (step0 * 0.5 ** np.maximum(sw - 1, 0)).astype(np.float64)
        improved = np.zeros(active.size, dtype=bool)
        for direction in (-1.0, 1.0):
            cand_rows = active[~improved & (queries[active] < limit)]
            if cand_rows.size == 0:
                break
            sel = np.searchsorted(active, cand_rows)
            xc = x[cand_rows].copy()
            ar = np.arange(cand_rows.size)
            xc[ar, coord[sel]] += (direction * step[sel]).astype(xc.dtype)
            if nrm == "2":
                d = xc - X[cand_rows]
                dn = np.linalg.norm(d, axis=1, keepdims=True)
                xc = np.where(dn > eps, X[cand_rows] + d * (eps / np.where(dn > 0, dn, 1)), xc)
            else:  # later sweeps move from the current point: stay in the ball
                c = coord[sel]
                x0c = X[cand_rows, c]
                xc[ar, c] = np.clip(xc[ar, c], x0c - eps, x0c + eps)
            if lo is not None or hi is not None:
                xc = np.clip(xc, lo, hi)
            moved = xc[ar, coord[sel]] != x[cand_rows, coord[sel]]
            if not moved.all():  # a candidate equal to the current point: no query
                cand_rows, sel, xc = cand_rows[moved], sel[moved], xc[moved]
                if cand_rows.size == 0:
                    continue
            Pc = np.asarray(clf.predict_proba(xc))
            queries[cand_rows] += 1
            val = Pc[np.arange(cand_rows.size), goal[cand_rows]]
            gain = sign * (val - best[cand_rows])
            # from the second sweep on, moves that leave the score unchanged are taken too:
            # a random forest's probabilities are flat over most single-coordinate moves
            better = (gain > 0) | ((gain == 0) & (sweep[cand_rows] > 0))
            acc = cand_rows[better]
            x[acc] = xc[better]
            best[acc] = val[better]
            improved[sel[better]] = True
            if acc.size:
                done[acc] = fooled(decided(x[acc], Pc[better]), acc)
                if has_predict:
                    queries[acc] += 1
        bar.update(int(np.sum(done[active])))
    bar.close()
    if grid:
        def grid_fooled(v, rows):
            queries[rows] += 1
            return fooled(decided(v), rows)
        x = grid.snap(x, X, grid_fooled)
    Pf = np.asarray(clf.predict_proba(x))
    pred = decided(x, Pf)
    success = succeeded(pred, yi, ti)
    diff = (x - X).astype(np.float64)
    extra = {"sweeps": sweep + (tried > 0)}
    if be is not None:
        x = be.asarray(x)
        extra["device"] = f"cuda:{be.device}"
    return AttackResult(
        x_adv=x, success=success, pred=classes[pred], confidence=Pf[r, pred],
        l2=np.linalg.norm(diff, axis=1), linf=np.abs(diff).max(axis=1) if D else np.zeros(N),
        iterations=tried, queries=queries, y=classes[yi],
        target=None if ti is None else classes[ti], _correct=clean == yi, attack="score_attack",
        params=dict(eps=eps, norm=nrm, max_queries=max_queries, seed=seed, clip=clip,
                    quantize=quantize,
                    classifier=kind), extra=extra,
        elapsed=time.perf_counter() - t0)
