"""The template attack of "Breaking Linear Classifiers on ImageNet" (Karpathy, 2015).

A linear classifier's score for class t is ``w_t . x + b_t``, so adding a multiple of the
class's weight template ``w_t`` raises that score in every dimension at once. Starting from an
image (or from noise), fastfool adds the smallest multiple ``alpha * w_t / ||w_t||`` (found by
doubling then bisection) for which the model predicts t with at least the requested
confidence. For non-linear models the template is replaced by the current input gradient of the
target's log-probability, ascended in small normalised steps.
"""

from __future__ import annotations

import time

import numpy as np

from .. import verdict
from .._typing import ArrayLike, Clip, Target
from ..models import Model
from ..result import AttackResult
from ._common import (Progress, check_inside_clip, clip_bounds, count, finish, positive, prepare,
                      resolve_target, row_chunks)

__all__ = ["template"]


def template(model: Model, X: ArrayLike | None = None, target: Target = None, *,
             confidence: float = 0.99, start: str = "image", n: int | None = None,
             clip: Clip = None, max_alpha: float = 1e6, steps: int = 200,
             step_size: float | None = None, seed: int = 0, threads: int | None = None,
             progress: bool = False) -> AttackResult:
    """Fool toward ``target`` by adding the target class's weight template.

    Parameters
    ----------
    model : a fastfool model. For affine models (linear, identity MLP) the template is the
        target's row of the affine map; otherwise gradient ascent of log P(target).
    X : (N, D) images to start from (``start="image"``); with ``start="noise"`` X only sets the
        noise's range (per-feature min/max; default [0, 1]) and ``n`` rows are drawn.
    target : label, labels per row, ``"random"`` or ``"least_likely"`` (required).
    confidence : probability of the target to reach (0 < confidence < 1).
    clip : optional ``(lo, hi)`` applied to every candidate.
    max_alpha : largest template multiple tried (affine models). steps, step_size : the
        gradient ascent of non-affine models (default step: 1% of each row's own L2 norm, at
        least 1e-5, so that a row's result does not depend on the rows beside it).

    Returns
    -------
    AttackResult: success = predicted target with at least ``confidence``; ``l2``/``linf``
    against the starting image (or noise). Rows that fail: affine models return them unchanged
    (no multiple of the template up to ``max_alpha`` reaches the confidence, e.g. a target whose
    weights duplicate another class's, whose tie argmax never resolves in its favour); the
    gradient ascent returns its last iterate.
    """
    t0 = time.perf_counter()
    if target is None:
        raise ValueError("target: the template attack needs a target class")
    confidence = positive(confidence, "confidence")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    if start not in ("image", "noise"):
        raise ValueError(f"start: expected 'image' or 'noise', got {start!r}")
    max_alpha = positive(max_alpha, "max_alpha", allow_zero=False)
    steps = count(steps, "steps")
    if step_size is not None:
        step_size = positive(step_size, "step_size", allow_zero=False)
    if n is not None:
        n = count(n, "n")
    rng = np.random.default_rng(seed)
    if start == "noise":
        D = model.n_features_in_
        if X is None:
            lo_n, hi_n = np.zeros(D), np.ones(D)
        else:
            Xr = np.asarray(X, dtype=np.float64).reshape(-1, D)
            if Xr.shape[0] == 0:
                raise ValueError("X: with start='noise', X sets the noise range and needs rows "
                                 "(or pass X=None for [0, 1])")
            lo_n, hi_n = Xr.min(axis=0), Xr.max(axis=0)
        rows = int(n) if n is not None else (np.size(target) if np.ndim(target) else 1)
        X = rng.uniform(lo_n, hi_n, size=(rows, D))
    elif X is None:
        raise ValueError("X: needed with start='image'")
    model, X, yi, threads = prepare(model, X, None, threads)
    ti = resolve_target(model, target, X, np.full(X.shape[0], -1), seed, threads)
    lo, hi = clip_bounds(clip, X.shape[1], X.dtype)
    check_inside_clip(X, lo, hi)
    try:
        A, _ = model.affine_map()
    except ValueError:
        A = None
    x_adv = np.empty_like(X)
    iterations = np.zeros(X.shape[0], dtype=np.int64)
    bar = Progress(X.shape[0], progress, "template")
    for s in row_chunks(*X.shape, weights=model.n_weights):
        if A is not None:
            x_adv[s], iterations[s] = _affine(model, X[s], ti[s], A, confidence, lo, hi,
                                              float(max_alpha), threads)
        else:
            x_adv[s], iterations[s] = _ascent(model, X[s], ti[s], confidence, lo, hi, steps,
                                              step_size, threads)
        bar.update(s.stop - s.start)
    bar.close()
    # no attacked label: the goal is the target alone (an image already of the target class
    # succeeds by reaching the confidence)
    return finish(model, X, x_adv, None, ti, iterations, attack="template", t0=t0,
                  threads=threads, min_confidence=confidence,
                  params=dict(confidence=confidence, start=start, clip=clip, seed=seed))


def _reaches(model, x, t, confidence, threads):
    """The user's model decides t with a clear margin (fastfool.verdict) and the confidence."""
    p, ok, conf = verdict.judge(model, x, threads)
    return ok & (p == t) & (conf >= confidence)


def _apply(x0, d, alpha, lo, hi, dtype):
    x = x0 + alpha[:, None] * d
    if lo is not None or hi is not None:
        x = np.clip(x, lo, hi)
    return x.astype(dtype)


def _affine(model, x0, t, A, confidence, lo, hi, max_alpha, threads):
    """Smallest alpha (to 1e-3 relative, by doubling then bisection) reaching the confidence."""
    d = A[t].astype(np.float64)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-300)
    x0 = np.asarray(x0, np.float64)
    n = len(t)
    it = np.zeros(n, dtype=np.int64)
    ok0 = _reaches(model, x0.astype(model.dtype), t, confidence, threads)
    hi_a = np.where(ok0, 0.0, np.inf)
    lo_a = np.zeros(n)
    a = np.full(n, 1e-3)
    todo = ~ok0
    while todo.any() and a[todo].min() <= max_alpha:  # doubling
        idx = np.flatnonzero(todo)
        ok = _reaches(model, _apply(x0[idx], d[idx], a[idx], lo, hi, model.dtype), t[idx], confidence, threads)
        it[idx] += 1
        hi_a[idx[ok]] = a[idx[ok]]
        lo_a[idx[~ok]] = a[idx[~ok]]
        a[idx[~ok]] *= 2
        todo[idx[ok]] = False
        todo &= a <= max_alpha
    found = np.isfinite(hi_a) & (hi_a > 0)
    for _ in range(40):  # bisection on the rows that succeeded
        idx = np.flatnonzero(found & (hi_a - lo_a > 1e-3 * hi_a))
        if idx.size == 0:
            break
        mid = 0.5 * (lo_a[idx] + hi_a[idx])
        ok = _reaches(model, _apply(x0[idx], d[idx], mid, lo, hi, model.dtype), t[idx], confidence, threads)
        it[idx] += 1
        hi_a[idx[ok]] = mid[ok]
        lo_a[idx[~ok]] = mid[~ok]
    # rows never reaching the confidence up to max_alpha (e.g. a target whose weights duplicate
    # another class's: a tie can never be won) are returned unchanged, not max_alpha away
    alpha = np.where(np.isfinite(hi_a), hi_a, 0.0)
    return _apply(x0, d, alpha, lo, hi, model.dtype), it


def _ascent(model, x0, t, confidence, lo, hi, steps, step_size, threads):
    x = np.array(x0, dtype=model.dtype, order="C")
    n = len(t)
    if step_size is None:  # per row, so that a row's result does not depend on its batch
        step_size = 0.01 * np.maximum(np.linalg.norm(np.asarray(x0, np.float64), axis=1,
                                                     keepdims=True), 1e-3)
    else:
        step_size = positive(step_size, "step_size", allow_zero=False)
    it = np.zeros(n, dtype=np.int64)
    active = ~_reaches(model, x, t, confidence, threads)
    for _ in range(int(steps)):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        xa = x[idx]
        # ascend log P(t): its input gradient is -grad CE(x, t)
        g, _ = model.loss_grad(xa, t[idx], threads)
        gn = np.linalg.norm(g, axis=1, keepdims=True)
        st = step_size[idx] if isinstance(step_size, np.ndarray) else step_size
        xa = (xa - st * g / np.where(gn > 0, gn, 1)).astype(model.dtype, copy=False)
        if lo is not None or hi is not None:
            xa = np.clip(xa, lo, hi)
        x[idx] = xa
        it[idx] += 1
        active[idx] = ~_reaches(model, x[idx], t[idx], confidence, threads)
    return x, it
