"""Smallest perturbations: exact ones for affine models, DeepFool for the rest.

For an affine model (linear classifiers, identity-activation MLPs) with logits ``s = A x + c``,
class k's region is a polyhedron, so the distance from x to the boundary between k and j is
``(s_k - s_j) / ||a_k - a_j||_*`` (the dual norm: L2 for L2, L1 for L-inf).

- :func:`certify_affine` (``fastfool.certify`` on an affine model) returns the exact robustness
  radius: the nearest of these distances.
- :func:`minimal` returns the exact minimal perturbation. Untargeted, it is the step onto the
  nearest boundary (no other class can win on the way: crossing its boundary earlier would make
  that boundary nearer). Targeted, it solves min ||d|| s.t. (a_t - a_i)(x + d) + c_t - c_i >= 0
  for all i != t: for L2 through the dual, a non-negative least-squares problem in C - 1
  variables (scipy.optimize.nnls); for L-inf as a linear program (scipy.optimize.linprog).
- :func:`deepfool` (Moosavi-Dezfooli et al., 2016) linearises any model at the current point and
  repeats; on an affine model the first step is already exact.
"""

from __future__ import annotations

import time

import numpy as np

from .._dask import dask_aware
from .. import verdict
from .._typing import ArrayLike, Clip, Labels, Norm, Target
from .._backend import CPU
from ..models import Model
from ..result import AttackResult
from ._common import (Grid, Progress, check_inside_clip, clip_bounds, count, finish, for_all_targets,
                      norm_of, positive, prepare, resolve_target, row_chunks, succeeded)

__all__ = ["certify_affine", "minimal", "deepfool"]


def _pairwise_dual(A, norm, classes):
    """||a_k - a_j||_* for k in `classes`, all j: dict k -> (C,) array (float64)."""
    out = {}
    for k in classes:
        d = A[k][None, :] - A
        out[int(k)] = np.linalg.norm(d, axis=1) if norm == "2" else np.abs(d).sum(axis=1)
    return out


def certify_affine(model: Model, X: ArrayLike, norm: Norm = 2, *,
                   threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Certified robustness radius of each row of an affine model: sound, and exact to rounding.

    The radius of a row is the distance to the nearest decision boundary of its class,
    ``min_j (s_k - s_j) / ||a_k - a_j||_*`` (the dual norm: L2 for L2, L1 for L-inf). It is
    computed in float64 from the weights as given (a float32 model keeps them) and rounded
    *down*: the margin is lowered by the forward-error bound of the logits (fastfool.verdict)
    and the dual norm raised by the bound on the rounding of the composed affine map, so the
    returned radius never exceeds the exact radius of the model (the estimator of a
    ``from_sklearn`` model) and is below it by a relative ~1e-13 on well-scaled data.

    Parameters
    ----------
    model : a LinearModel, an identity-activation MLP or a linear-kernel SVM (one affine map).
    X : (N, D) inputs. norm : ``2`` (default) or ``"inf"``.

    Returns
    -------
    radius : (N,) no perturbation of norm ``< radius`` changes the model's decision (0 for rows
        within rounding of a tie).
    boundary : (N,) label of the class across the nearest boundary.

    Raises ``ValueError`` for models that are not affine (their exact radius is NP-hard; use
    :func:`deepfool` or :func:`pgd` for upper bounds).
    """
    model, X, _, threads = prepare(model, X, None, threads)
    nrm = norm_of(norm)
    A, _ = model.affine_map()
    E = model._affine_error()
    N = X.shape[0]
    radius = np.empty(N)
    j = np.empty(N, dtype=np.int64)
    dual_cache = {}
    for sl in row_chunks(*X.shape):
        S, err = verdict.reference_logits(model, X[sl], threads)
        k, _ = verdict.clear(S, err, model._source_u, model._duplicates())
        for kk in np.unique(k):
            if int(kk) not in dual_cache:
                dual_cache[int(kk)] = _dual_upper(A, E, nrm, int(kk))
        # every rival's score raised by both logits' bounds: margins that are sound for the
        # exact model
        raised = S + 2 * err[:, None]
        raised[np.arange(len(k)), k] = S[np.arange(len(k)), k]
        r, jj = _nearest(raised, k, {int(kk): dual_cache[int(kk)] for kk in np.unique(k)})
        radius[sl] = np.maximum(r, 0.0) * (1 - 8 * verdict.U64)
        j[sl] = jj
    return radius, model.classes_[j]


def _dual_upper(A, E, nrm, k):
    """Upper bound on ||a_k - a_j||_* of the exact affine map, for all j (float64)."""
    d = A[k][None, :] - A
    D = A.shape[1]
    n = np.linalg.norm(d, axis=1) if nrm == "2" else np.abs(d).sum(axis=1)
    n = n * (1 + verdict.gamma(D + 2))
    if E is not None:
        e = E[k][None, :] + E
        n = n + (np.linalg.norm(e, axis=1) if nrm == "2" else e.sum(axis=1)) * (1 + 1e-6)
    return n


def _nearest(S, k, dual):
    N, C = S.shape
    dist = np.full((N, C), np.inf)
    r = np.arange(N)
    for kk, dn in dual.items():
        rows = r[k == kk]
        margin = S[rows, kk][:, None] - S[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(dn[None, :] > 0, margin / dn[None, :], np.inf)
        d[:, kk] = np.inf
        dist[rows] = d
    j = np.argmin(dist, axis=1) if C > 1 else np.zeros(N, dtype=np.int64)
    return dist[r, j] if N else np.zeros(0), j


@dask_aware
def minimal(model: Model, X: ArrayLike, y: Labels = None, *, norm: Norm = 2,
            target: Target = None, overshoot: float = 1e-6, clip: Clip = None,
            quantize: float | None = None, seed: int | None = None,
            threads: int | None = None) -> AttackResult:
    """Exact minimal perturbation for an affine model (see the module docstring).

    Parameters
    ----------
    model : LinearModel or identity-activation MLP.
    X : (N, D); y : labels to move away from (default: predictions; rows whose prediction is not
        y are already fooled and are returned unchanged).
    norm : 2 or ``"inf"``. target : None (nearest boundary), a label, labels per row,
        ``"least_likely"``, ``"random"`` or ``"all"`` (N x (C - 1) rows); targets need scipy.
    overshoot : relative step beyond the boundary so that the class really changes (grown ×10,
        up to 6 times, for rows whose margin is not yet clear of rounding: the user's model,
        and a float32 model's own logits, must decide the new class; fastfool.verdict).
    clip : optional ``(lo, hi)``; clipping can only make the perturbation fail, not smaller.
    quantize : grid step (e.g. ``1/255``; default None): ``x_adv`` is moved onto X's grid at
        the end (and inside the box): the nearest grid point, or the one rounded away from X
        when only that one fools; ``success`` and the norms are measured there.

    Rows that are still not fooled (clipping, no reachable boundary as in a constant model, or
    an infeasible target such as a class whose weights duplicate another's) are returned
    unchanged with ``success`` False.

    Returns
    -------
    AttackResult with ``iterations`` = 0.
    """
    if isinstance(target, str) and target == "all":
        return for_all_targets(minimal, model, X, y, dict(
            norm=norm, overshoot=overshoot, clip=clip, quantize=quantize, seed=seed,
            threads=threads))
    t0 = time.perf_counter()
    model, X, yi, threads = prepare(model, X, y, threads)
    nrm = norm_of(norm)
    overshoot = positive(overshoot, "overshoot")
    ti = resolve_target(model, target, X, yi, seed, threads)
    lo, hi = clip_bounds(clip, X.shape[1], X.dtype)
    check_inside_clip(X, lo, hi)
    grid = Grid(quantize, np.inf, nrm, lo, hi)
    A, c = model.affine_map()
    x_adv = np.empty_like(X)
    dual = {}
    for sl in row_chunks(*X.shape):  # bounded memory: float64 work arrays per chunk only
        X64 = np.asarray(X[sl], np.float64)
        S, err = verdict.reference_logits(model, X64, threads)  # float64, exact near boundaries
        pred = verdict.resolve(model, X[sl], S, err)
        delta = np.zeros_like(X64)
        ys = yi[sl]
        if ti is None:
            todo = np.flatnonzero(pred == ys)
            if todo.size:
                k = pred[todo]
                for kk in np.unique(k):
                    if int(kk) not in dual:
                        dual.update(_pairwise_dual(A, nrm, [kk]))
                dist, j = _nearest(S[todo], k, {int(kk): dual[int(kk)] for kk in np.unique(k)})
                w = A[j] - A[k]  # direction that raises s_j - s_k
                # no reachable boundary (a constant model, or every other class a duplicate of
                # k): nothing to move, the row stays and is reported as not fooled
                dist = np.where(np.isfinite(dist), dist, 0.0)
                if nrm == "2":
                    n2 = np.einsum("ij,ij->i", w, w)
                    delta[todo] = (dist * np.sqrt(n2) / np.where(n2 > 0, n2, 1))[:, None] * w
                else:
                    delta[todo] = dist[:, None] * np.sign(w)
        else:
            ts = ti[sl]
            for i in np.flatnonzero((pred != ts) & (ts != ys)):
                delta[i] = _targeted(A, S[i], int(ts[i]), nrm)
        x_adv[sl] = _overshoot_until_fooled(model, X[sl], X64, delta, ys,
                                            None if ti is None else ti[sl], overshoot, lo, hi,
                                            threads)
    return finish(model, X, x_adv, yi, ti, np.zeros(X.shape[0]), attack="minimal", t0=t0,
                  own_labels=y is None, grid=grid,
                  threads=threads, params=dict(norm=nrm, target=None if target is None else str(target),
                                               overshoot=overshoot, clip=clip, quantize=quantize,
                                               seed=seed))


def _overshoot_until_fooled(model, X, X64, delta, yi, ti, overshoot, lo, hi, threads):
    """x + (1 + overshoot) delta, the overshoot grown x10 (up to 6 times) for rows that the
    user's model does not yet decide as fooled with a clear margin (fastfool.verdict); rows
    never fooled are returned unchanged."""
    x_adv = np.empty_like(X)
    factor = np.full(X.shape[0], 1.0 + overshoot)
    pending = np.flatnonzero(np.any(delta != 0, axis=1))
    x_adv[:] = X
    for _ in range(7):
        if pending.size == 0:
            break
        cand = X64[pending] + factor[pending, None] * delta[pending]
        if lo is not None or hi is not None:
            cand = np.clip(cand, lo, hi)
        x_adv[pending] = cand
        p, ok, _ = verdict.judge(model, x_adv[pending], threads)
        ok &= succeeded(p, yi[pending], None if ti is None else ti[pending])
        ok[ok] = _own_dtype_agrees(model, x_adv[pending[ok]], p[ok], threads)
        pending = pending[~ok]
        factor[pending] = 1.0 + (factor[pending] - 1.0) * 10
    x_adv[pending] = X[pending]  # not fooled even with 10^6-fold overshoot: returned unchanged
    return x_adv


def _own_dtype_agrees(model, x, p, threads):
    """Whether a float32 model's own logits (its predict_proba) also give class p: the attacks
    that can push further leave a margin that the float32 evaluation cannot undo either."""
    if model.dtype == np.float64 or x.shape[0] == 0:
        return np.ones(x.shape[0], dtype=bool)
    S = model._be.to_host(model.scores(x, None, threads))
    return np.argmax(S, axis=1) == p


def _targeted(A, s, t, nrm):
    """min ||d|| s.t. (a_t - a_i) d >= s_i - s_t for all i != t (one row)."""
    try:
        from scipy.optimize import linprog, nnls
    except ImportError as exc:  # pragma: no cover
        raise ImportError("minimal(target=...) needs scipy (pip install scipy)") from exc
    others = [i for i in range(A.shape[0]) if i != t]
    M = A[t][None, :] - A[others]  # (C-1, D): rows a_t - a_i
    b = s[others] - s[t]           # constraint M d >= b
    if nrm == "2":
        # Dual: min_{lam >= 0} 1/2 lam' G lam - b' lam, G = M M'; then d = M' lam.
        G = M @ M.T
        G = G + np.eye(len(others)) * (1e-14 * max(np.trace(G), 1e-300))
        L = np.linalg.cholesky(G)
        lam, _ = nnls(L.T, np.linalg.solve(L, b))
        return M.T @ lam
    D = A.shape[1]
    # variables [d (D), u]; min u s.t. -u <= d_j <= u, M d >= b
    cost = np.zeros(D + 1)
    cost[-1] = 1.0
    eye = np.eye(D)
    A_ub = np.vstack([np.hstack([eye, -np.ones((D, 1))]), np.hstack([-eye, -np.ones((D, 1))]),
                      np.hstack([-M, np.zeros((len(others), 1))])])
    b_ub = np.concatenate([np.zeros(2 * D), -b])
    res = linprog(cost, A_ub=A_ub, b_ub=b_ub, bounds=[(None, None)] * D + [(0, None)],
                  method="highs")
    if res.status != 0:
        raise RuntimeError(f"minimal: the L-inf linear program failed ({res.message})")
    return res.x[:D]


@dask_aware
def deepfool(model: Model, X: ArrayLike, y: Labels = None, *, norm: Norm = 2,
             overshoot: float = 0.02, max_iter: int = 50, candidates: int | None = None,
             clip: Clip = None, quantize: float | None = None, threads: int | None = None,
             progress: bool = False) -> AttackResult:
    """DeepFool, multi-class (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016).

    At each iteration, for every candidate class j != k (k the current class) the model is
    linearised, ``f_j = s_j - s_k`` and ``w_j = grad f_j``; the step goes to the nearest
    linearised boundary: ``|f_l| / ||w_l||_2^2 * w_l`` (L2) or ``|f_l| / ||w_l||_1 * sign(w_l)``
    (L-inf). Steps accumulate until the class changes; the total is scaled by ``1 + overshoot``
    and clipped. The linearisation is that of the float64 reference logits (a float32 model's
    own logits tie on the boundary, and the steps stall there), aimed past twice the margin
    that :mod:`fastfool.verdict` calls clear; with ``clip``, coordinates at a bound whose
    gradient points outward are left out of the step. The iteration stops only once the
    user's model decides another class with a clear margin (and, for a float32 model, its
    own logits agree). A row whose linearisation is unusable (zero, underflowing or
    overflowing gradients, or a step leaving the float range) stops at its last finite point, as
    does one whose perturbation would exceed 10**4 times its own scale (``max |x| + 1``: a
    vanishing gradient, such as an RBF kernel's far from its support vectors).
    On affine models the first step is exact.

    Parameters
    ----------
    candidates : consider only the this many classes with the highest clean scores (default
        all); each costs one backward pass per iteration.
    max_iter : iterations per row. clip : optional ``(lo, hi)`` applied to the result.
    quantize : grid step (e.g. ``1/255``; default None): ``x_adv`` is moved onto X's grid at
        the end (and inside the box): the nearest grid point, or the one rounded away from X
        when only that one fools; ``success`` and the norms are measured there.

    On a GPU model (``model.to("cuda")``, CuPy X) the linearisation and the steps run on the
    device; the verdict that stops a row is the host's, on a copy of each iteration's iterates.

    Returns
    -------
    AttackResult; ``iterations`` per row.
    """
    t0 = time.perf_counter()
    model, X, yi, threads = prepare(model, X, y, threads, gpu=True)
    be = model._be
    xp, dev, host = be.xp, be.asarray, be.to_host
    gpu = be is not CPU
    nrm = norm_of(norm)
    overshoot = positive(overshoot, "overshoot")
    max_iter = count(max_iter, "max_iter")
    lo, hi = clip_bounds(clip, X.shape[1], X.dtype, be)
    check_inside_clip(X, lo, hi, be)
    grid = Grid(quantize, np.inf, nrm, lo, hi, be)
    C = model.n_classes
    ncand = C if candidates is None else int(candidates)
    if not 2 <= ncand <= C:
        raise ValueError(f"candidates: must be in [2, {C}], got {candidates!r}")
    N, D = X.shape
    x_adv = xp.empty_like(X)
    iterations = np.zeros(N, dtype=np.int64)
    bar = Progress(N, progress, "deepfool")
    for sl in row_chunks(N, D * ncand, be, model.n_weights):
        x0 = xp.ascontiguousarray(X[sl])
        n = x0.shape[0]
        S0 = host(model.scores(x0, None, threads))
        order = np.argsort(-S0, axis=1, kind="stable")[:, :ncand]
        k0 = yi[sl]
        r_tot = xp.zeros(x0.shape, dtype=np.float64)
        cap = 1e4 * ((xp.abs(x0).max(axis=1) if D else xp.zeros(n)) + 1.0)
        # rows the user's model already decides as not k0 are left alone
        active = verdict.decide(model, host(x0), threads) == k0
        it = np.zeros(n, dtype=np.int64)
        xf = xp.array(x0, dtype=X.dtype)
        for _ in range(int(max_iter)):
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            ix = dev(idx)
            with np.errstate(over="ignore", invalid="ignore"):
                xa = (x0[ix] + (1 + overshoot) * r_tot[ix]).astype(X.dtype)
            if lo is not None or hi is not None:
                xa = xp.clip(xa, lo, hi).astype(X.dtype)
            finite = host(xp.isfinite(xa).all(axis=1))
            if not finite.all():  # a step left the representable range: keep the last point
                active[idx[~finite]] = False
                idx, xa = idx[finite], xa[dev(finite)]
                if idx.size == 0:
                    break
                ix = dev(idx)
            xf[ix] = xa
            # stop only where the user's model decides "not k0" with a clear margin; the
            # linearisation uses the same float64 reference logits (a float32 model's own
            # logits tie or lag there by its rounding, and its steps then stall); on a GPU
            # the verdict is the host's, on a copy of the iterates
            p, ok, _, S, thr = verdict.judge(model, host(xa), threads, return_logits=True)
            done = ok & (p != k0[idx])
            done[done] = _own_dtype_agrees(model, xa[dev(done)], p[done], threads)
            still = ~done
            idx, S, thr = idx[still], S[still], thr[still]
            xa = xa[dev(still)]
            active[:] = False
            active[idx] = True
            if idx.size == 0:
                break
            ix = dev(idx)
            S, thr = dev(S), dev(thr)
            m = idx.size
            rr = xp.arange(m)
            best = xp.full(m, np.inf)
            step = xp.zeros((m, D))
            ka = k0[idx]
            ka_d = dev(ka)
            cols = xp.arange(C)
            if lo is not None or hi is not None:  # coordinates at a bound cannot move outward
                at_lo = xp.zeros(xa.shape, dtype=bool) if lo is None else xa <= lo
                at_hi = xp.zeros(xa.shape, dtype=bool) if hi is None else xa >= hi
            for c in range(ncand):
                j = order[idx, c]
                use = j != ka
                if not use.any():
                    continue
                jd, use = dev(j), dev(use)
                V = (cols == jd[:, None]).astype(X.dtype) - (cols == ka_d[:, None]).astype(X.dtype)
                w = model.vjp(xa, V, threads).astype(np.float64)
                if lo is not None or hi is not None:
                    w = xp.where((at_lo & (w < 0)) | (at_hi & (w > 0)), 0.0, w)
                # aim past the clear-margin threshold (twice it), not just onto the boundary
                f = S[rr, jd] - S[rr, ka_d] - 2 * thr
                dn = xp.linalg.norm(w, axis=1) if nrm == "2" else xp.abs(w).sum(axis=1)
                with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                    d = xp.where(dn > 0, xp.abs(f) / xp.where(dn > 0, dn, 1.0), np.inf)
                    better = use & (d < best)
                    if gpu or better.any():  # (on the device: no sync per class)
                        best = xp.where(better, d, best)
                        af = (xp.abs(f) + 1e-12)[:, None]
                        dn1 = xp.where(dn > 0, dn, 1.0)[:, None]
                        new = af / dn1 ** 2 * w if nrm == "2" else af / dn1 * xp.sign(w)
                        step = xp.where(better[:, None], new, step)
            # no usable linearisation (zero, underflowing or overflowing gradients): the row stops;
            # so does one whose perturbation would exceed 10^4 times its own scale (a vanishing
            # gradient, e.g. an RBF kernel far from its support vectors: the linear step there
            # is meaningless, and huge inputs overflow in the model's own preprocessing)
            ok_step = xp.isfinite(best) & xp.isfinite(step).all(axis=1)
            with np.errstate(over="ignore", invalid="ignore"):
                far = xp.abs(r_tot[ix] + step).max(axis=1) > cap[ix] if D else \
                    xp.zeros(m, dtype=bool)
            ok_step = host(ok_step & ~far)
            active[idx[~ok_step]] = False
            moved = dev(idx[ok_step])
            r_tot[moved] += step[dev(ok_step)]
            if lo is not None or hi is not None:  # keep the accumulated point inside the box
                r_tot[moved] = xp.clip(x0[moved] + r_tot[moved], lo, hi) - x0[moved]
            it[idx] += 1
        # rows that ran out of iterations end at their last step (judged by finish)
        last = np.flatnonzero(active)
        if last.size:
            ld = dev(last)
            with np.errstate(over="ignore", invalid="ignore"):
                xl = (x0[ld] + (1 + overshoot) * r_tot[ld]).astype(X.dtype)
            if lo is not None or hi is not None:
                xl = xp.clip(xl, lo, hi).astype(X.dtype)
            fin = host(xp.isfinite(xl).all(axis=1))
            xf[dev(last[fin])] = xl[dev(fin)]
        x_adv[sl] = xf
        iterations[sl] = it
        bar.update(n)
    bar.close()
    return finish(model, X, x_adv, yi, None, iterations, attack="deepfool", t0=t0, threads=threads,
                  own_labels=y is None, grid=grid,
                  params=dict(norm=nrm, overshoot=overshoot, max_iter=int(max_iter),
                              candidates=ncand, clip=clip, quantize=quantize))
