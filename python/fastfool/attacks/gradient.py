"""Gradient-sign attacks: FGSM (Goodfellow et al., 2015) and BIM/PGD (Kurakin et al., 2017;
Madry et al., 2018), in L-inf and L2, untargeted or targeted.

Every step is one fused kernel pass: the softmax cross-entropy input gradient, then
``x <- clip(proj_eps(x +- step * sign(g)))`` (L-inf) or ``x + step * g / ||g||_2`` (L2).
Work runs in row chunks, so memory stays at inputs + outputs + a fixed workspace.
"""

from __future__ import annotations

import time

import numpy as np

from .. import kernels, verdict
from .._typing import ArrayLike, Clip, Labels, Norm, Target
from ..models import Model
from ..result import AttackResult
from ._common import (Progress, check_inside_clip, check_model, clip_bounds, finish,
                      for_all_targets, keep_better, norm_of, on_gpu, positive, prepare,
                      resolve_target, restart_objective, row_chunks, succeeded)

__all__ = ["fgsm", "pgd"]


def _quantum(quantize, name="quantize"):
    if quantize is None:
        return 0.0
    return positive(quantize, name, allow_zero=False)


def fgsm(model: Model, X: ArrayLike, y: Labels = None, *, eps: float, norm: Norm = "inf",
         target: Target = None, clip: Clip = None, quantize: float | None = None,
         seed: int | None = None, threads: int | None = None,
         progress: bool = False) -> AttackResult:
    """Fast gradient (sign) method.

    Untargeted: ``x + eps * sign(grad_x CE(x, y))`` (L-inf) or ``x + eps * g / ||g||_2`` (L2);
    targeted: ``x - eps * sign(grad_x CE(x, t))``, stepping toward the target class.

    Parameters
    ----------
    model : a fastfool model (``ff.from_sklearn(est)``, ``ff.LinearModel``, ``ff.MLP``).
    X : (N, D) inputs; y : labels to move away from (default: the model's predictions).
    eps : perturbation budget (>= 0). norm : ``"inf"`` (default) or ``2``.
    target : None, a label, an array of labels, ``"least_likely"``, ``"random"`` or ``"all"``
        (every row toward every other class: N x (C - 1) result rows, ``extra["row"]``).
    clip : ``(lo, hi)``, scalars or per-feature arrays; X must lie inside.
    quantize : grid step (e.g. ``1/255``): ``x_adv`` stays on X's grid and inside the ball,
        and success is measured after rounding.
    seed : for ``target="random"``.

    Returns
    -------
    AttackResult (``iterations`` = 1).
    """
    if isinstance(target, str) and target == "all":
        return for_all_targets(fgsm, model, X, y, dict(
            eps=eps, norm=norm, clip=clip, quantize=quantize, seed=seed, threads=threads,
            progress=progress))
    t0 = time.perf_counter()
    if on_gpu(model):  # CuPy in, CuPy x_adv out (attacks/_gpu.py)
        from . import _gpu
        model = check_model(model, gpu=True)
        X = model._X(X, None)
        eps, nrm, q = positive(eps, "eps"), norm_of(norm), _quantum(quantize)
        return _gpu.fgsm(model, X, y, eps=eps, nrm=nrm, target=target, clip=clip, quantum=q,
                         seed=seed, t0=t0, params=dict(eps=eps, norm=nrm, target=_desc(target),
                                                       clip=clip, quantize=quantize, seed=seed))
    model, X, yi, threads = prepare(model, X, y, threads)
    eps = positive(eps, "eps")
    nrm = norm_of(norm)
    rng = np.random.default_rng(seed)
    ti = resolve_target(model, target, X, yi, rng, threads)
    lo, hi = clip_bounds(clip, X.shape[1], X.dtype)
    check_inside_clip(X, lo, hi)
    q = _quantum(quantize)
    labels = yi if ti is None else ti
    sign = 1.0 if ti is None else -1.0
    x_adv = np.empty_like(X, order="C")
    bar = Progress(X.shape[0], progress, "fgsm")
    for s in row_chunks(*X.shape):
        model._ce_step(X[s], labels[s], X[s], threads, x_adv[s], step=sign * eps, eps=eps,
                       norm=nrm, clip=None if lo is None and hi is None else (lo, hi), quantum=q)
        bar.update(s.stop - s.start)
    bar.close()
    return finish(model, X, x_adv, yi, ti, np.ones(X.shape[0]), attack="fgsm", t0=t0,
                  own_labels=y is None,
                  threads=threads, params=dict(eps=eps, norm=nrm, target=_desc(target),
                                               clip=clip, quantize=quantize, seed=seed))


def _desc(target):
    return target if target is None or isinstance(target, (str, int, float)) else "per-row"


def _random_start(rng, xc, eps, nrm, lo, hi):
    """A uniform point of the eps-ball around xc (L-inf box, or L2 ball), clipped.

    Drawn directly in xc's dtype and updated in place: in float64 with temporaries this took
    ~18% of a PGD-10 run on a small MLP."""
    n, d = xc.shape
    dt = xc.dtype
    if nrm == "inf":
        x = rng.random((n, d), dtype=dt)
        x *= dt.type(2 * eps)
        x -= dt.type(eps)
    else:
        x = rng.standard_normal((n, d), dtype=dt)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        radius = eps * rng.random((n, 1)) ** (1.0 / max(d, 1))
        x *= (radius / np.maximum(norms, 1e-30)).astype(dt)
    x += xc
    if lo is not None or hi is not None:
        np.clip(x, lo, hi, out=x)
    return x


def pgd(model: Model, X: ArrayLike, y: Labels = None, *, eps: float, steps: int = 10,
        step_size: float | None = None, norm: Norm = "inf", target: Target = None,
        random_start: bool = True, restarts: int = 1, early_stop: bool = False,
        clip: Clip = None, quantize: float | None = None, seed: int | None = None,
        threads: int | None = None, progress: bool = False) -> AttackResult:
    """Projected gradient descent (BIM when ``random_start=False``), L-inf or L2.

    Each of ``steps`` iterations takes a fused step of ``step_size`` (default ``2.5 * eps /
    steps``) along the loss gradient's sign (L-inf) or direction (L2), projects onto the
    ``eps``-ball around X and clips. Targeted attacks descend the target's cross-entropy.

    Parameters
    ----------
    eps, norm, target, clip, quantize : as in :func:`fgsm`.
    steps : iterations (>= 1). step_size : per-step size.
    random_start : start from a uniform point of the ball (Madry et al.); default True.
    restarts : independent random starts; per row the best is kept (a successful one first,
        then the highest loss toward the goal).
    early_stop : False (default) runs every step on every row, the standard fixed-step
        semantics; True stops each row (and the work on it) as soon as it is fooled.
    seed : seeds the random starts and ``target="random"``; same seed, same results.

    Returns
    -------
    AttackResult; ``iterations`` holds the gradient steps taken per row (summed over restarts).
    """
    if isinstance(target, str) and target == "all":
        return for_all_targets(pgd, model, X, y, dict(
            eps=eps, steps=steps, step_size=step_size, norm=norm, random_start=random_start,
            restarts=restarts, early_stop=early_stop, clip=clip, quantize=quantize, seed=seed,
            threads=threads, progress=progress))
    t0 = time.perf_counter()
    gpu = on_gpu(model)
    if gpu:
        model = check_model(model, gpu=True)
        X = model._X(X, None)
    else:
        model, X, yi, threads = prepare(model, X, y, threads)
    eps = positive(eps, "eps")
    nrm = norm_of(norm)
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps: must be an integer >= 1, got {steps!r}")
    if isinstance(restarts, bool) or int(restarts) != restarts or restarts < 1:
        raise ValueError(f"restarts: must be an integer >= 1, got {restarts!r}")
    steps, restarts = int(steps), int(restarts)
    alpha = 2.5 * eps / steps if step_size is None else positive(step_size, "step_size")
    params = dict(eps=eps, steps=steps, step_size=alpha, norm=nrm, target=_desc(target),
                  random_start=random_start, restarts=restarts, early_stop=early_stop, clip=clip,
                  quantize=quantize, seed=seed)
    if gpu:  # CuPy in, CuPy x_adv out (attacks/_gpu.py)
        from . import _gpu
        return _gpu.pgd(model, X, y, eps=eps, steps=steps, alpha=alpha, nrm=nrm, target=target,
                        random_start=random_start, restarts=restarts, early_stop=early_stop,
                        clip=clip, quantum=_quantum(quantize), seed=seed, params=params, t0=t0)
    rng = np.random.default_rng(seed)
    ti = resolve_target(model, target, X, yi, rng, threads)
    lo, hi = clip_bounds(clip, X.shape[1], X.dtype)
    check_inside_clip(X, lo, hi)
    clip_arg = None if lo is None and hi is None else (lo, hi)
    q = _quantum(quantize)
    labels = yi if ti is None else ti
    sign = 1.0 if ti is None else -1.0
    N = X.shape[0]
    x_adv = np.empty_like(X, order="C")
    iterations = np.zeros(N, dtype=np.int64)
    bar = Progress(N * restarts, progress, "pgd")
    for s in row_chunks(*X.shape):
        x0 = X[s]
        lab = labels[s]
        best = None
        for _ in range(restarts):
            if random_start:
                x = _random_start(rng, x0, eps, nrm, lo, hi)
            elif restarts == 1:  # step in place in the output rows: no copy to make afterwards
                x = x_adv[s]
                np.copyto(x, x0)
            else:
                x = np.array(x0, order="C")
            if q and random_start:  # start on the grid too
                kernels.fused_update(x, np.zeros_like(x), x0, step=0.0, eps=eps, norm=nrm,
                                     clip=clip_arg, quantum=q, out=x, threads=threads)
            it = _run_steps(model, x, x0, lab, yi[s], ti is not None, sign, alpha, eps, nrm,
                            clip_arg, q, steps, early_stop, threads)
            iterations[s] += it
            if restarts == 1:  # nothing to compare: skip the extra forward pass
                best = (x, None, None)
                bar.update(s.stop - s.start)
                continue
            score, _ = restart_objective(model, x, yi[s], None if ti is None else ti[s], threads)
            ok = succeeded(verdict.decide(model, x, threads), yi[s], None if ti is None else ti[s])
            best = keep_better(best, x, score, ok)
            bar.update(s.stop - s.start)
        if not np.may_share_memory(best[0], x_adv):  # else it is x_adv[s] itself
            x_adv[s] = best[0]
    bar.close()
    return finish(model, X, x_adv, yi, ti, iterations, attack="pgd", t0=t0, threads=threads,
                  own_labels=y is None,
                  params=params)


def _fooled(model, x, P, y, t, targeted, threads):
    """Rows the user's model robustly decides as fooled: the step's own probabilities name the
    candidates, the verdict (fastfool.verdict) confirms them with a clear margin."""
    pred = kernels.argmax_rows(P, threads=threads)[0]
    cand = np.flatnonzero(pred == t if targeted else pred != y)
    done = np.zeros(len(pred), dtype=bool)
    if cand.size:
        p, ok, _ = verdict.judge(model, x[cand], threads)
        done[cand] = ok & succeeded(p, y[cand], t[cand] if targeted else None)
    return done


def _run_steps(model, x, x0, lab, y, targeted, sign, alpha, eps, nrm, clip, q, steps,
               early_stop, threads):
    """Runs the steps in place on x; returns the per-row step counts."""
    n = x.shape[0]
    it = np.zeros(n, dtype=np.int64)
    if not early_stop:  # one call: each row block takes every step while it is in cache
        model._ce_step(x, lab, x0, threads, x, step=sign * alpha, eps=eps, norm=nrm, clip=clip,
                       quantum=q, steps=steps)
        it[:] = steps
        return it
    # Early stopping: keep a compact copy of the rows still to fool; write rows back as they go.
    idx = np.arange(n)
    xa, x0a, la, ya = x, np.ascontiguousarray(x0), lab, y
    for _ in range(steps):
        g, _, P = model._ce_grad(xa, la, threads, return_prob=True)
        done = _fooled(model, xa, P, ya, la, targeted, threads)
        if done.any():
            x[idx[done]] = xa[done]
            keep = ~done
            idx, xa, x0a, la, ya, g = idx[keep], xa[keep], x0a[keep], la[keep], ya[keep], g[keep]
            if idx.size == 0:
                return it
        kernels.fused_update(xa, g, x0a, step=sign * alpha, eps=eps, norm=nrm, clip=clip,
                             quantum=q, out=xa, threads=threads)
        it[idx] += 1
    x[idx] = xa
    return it
