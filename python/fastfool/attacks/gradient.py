"""Gradient-sign attacks: FGSM (Goodfellow et al., 2015) and BIM/PGD (Kurakin et al., 2017;
Madry et al., 2018), in L-inf and L2, untargeted or targeted.

Every step is one fused kernel pass: the softmax cross-entropy input gradient, then
``x <- clip(proj_eps(x +- step * sign(g)))`` (L-inf) or ``x + step * g / ||g||_2`` (L2).
Work runs in row chunks, so memory stays at inputs + outputs + a fixed workspace.

Written once for both devices: a GPU model (``model.to("cuda")``) with CuPy inputs runs the
same code on the CUDA kernels (``model._be``), ``x_adv`` is then a CuPy array, labels and
targets are decided on the host and copied to the device once, and the verdicts (``success``,
``pred``, early stopping) are the host's :mod:`fastfool.verdict` on copies of the rows
concerned.
"""

from __future__ import annotations

import time

import numpy as np

from .._dask import dask_aware
from .. import _random, kernels, verdict
from .._backend import CPU
from .._typing import ArrayLike, Clip, Labels, Norm, Target
from ..models import Model
from ..result import AttackResult
from ._common import (Progress, check_inside_clip, clip_bounds, count, finish, for_all_targets,
                      keep_better, norm_of, on_device, positive, prepare, resolve_target,
                      restart_objective, row_chunks, succeeded, CheckedBounds, Trusted)

__all__ = ["fgsm", "pgd"]


def _quantum(quantize, name="quantize"):
    if quantize is None:
        return 0.0
    return positive(quantize, name, allow_zero=False)


@dask_aware
def fgsm(model: Model, X: ArrayLike, y: Labels = None, *, eps: float, norm: Norm = "inf",
         target: Target = None, clip: Clip = None, quantize: float | None = None,
         seed: int | None = None, row_offset: int = 0, threads: int | None = None,
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
    seed : for ``target="random"``. row_offset : the index of X's first row in a larger array
        (default 0): random draws are keyed by (seed, global row), so ``fgsm(m, X[a:b], ...,
        row_offset=a)`` equals rows a:b of ``fgsm(m, X, ...)``.

    Returns
    -------
    AttackResult (``iterations`` = 1).
    """
    if isinstance(target, str) and target == "all":
        return for_all_targets(fgsm, model, X, y, dict(
            eps=eps, norm=norm, clip=clip, quantize=quantize, seed=seed, threads=threads,
            progress=progress))
    t0 = time.perf_counter()
    model, X, yi, threads = prepare(model, X, y, threads, gpu=True)
    be = model._be
    eps = positive(eps, "eps")
    nrm = norm_of(norm)
    row_offset = _random.check_offset(row_offset)
    ti = resolve_target(model, target, X, yi, _random.resolve(seed), threads, row_offset)
    lo, hi = clip_bounds(clip, X.shape[1], X.dtype, be)
    check_inside_clip(X, lo, hi, be)
    q = _quantum(quantize)
    labels = on_device(model, yi if ti is None else ti).array
    sign = 1.0 if ti is None else -1.0
    x_adv = be.empty(X.shape, X.dtype)
    bar = Progress(X.shape[0], progress, "fgsm")
    clip_arg = None if lo is None and hi is None else CheckedBounds(lo, hi, X.shape[1], X.dtype, be)
    for s in row_chunks(*X.shape, be, model.n_weights):
        model.fused_step(X[s], Trusted(labels[s]), X[s], threads, x_adv[s], step=sign * eps,
                         eps=eps, norm=nrm, clip=clip_arg, quantum=q)
        bar.update(s.stop - s.start)
    bar.close()
    return finish(model, X, x_adv, yi, ti, np.ones(X.shape[0]), attack="fgsm", t0=t0,
                  own_labels=y is None,
                  threads=threads, params=dict(eps=eps, norm=nrm, target=_desc(target),
                                               clip=clip, quantize=quantize, seed=seed))


def _desc(target):
    return target if target is None or isinstance(target, (str, int, float)) else "per-row"


def _random_start(k, rows, xc, eps, nrm, lo, hi, xp):
    """A uniform point of the eps-ball around xc (L-inf box, or L2 ball), clipped; drawn on
    xc's device from the key ``k`` and the rows' global indices (fastfool._random: a row's
    start does not depend on its batch), in xc's dtype and updated in place."""
    n, d = xc.shape
    dt = np.dtype(xc.dtype)
    if nrm == "inf":
        x = _random.uniform(k, rows, d, dt, xp)
        x *= dt.type(2 * eps)
        x -= dt.type(eps)
    else:
        x = _random.normal(k, rows, d, dt, xp)
        norms = xp.linalg.norm(x, axis=1, keepdims=True)
        radius = eps * _random.uniform(_random.key(k, "radius"), rows, 1, np.float64, xp) \
            ** (1.0 / max(d, 1))
        x *= (radius / xp.maximum(norms, 1e-30)).astype(dt)
    x += xc
    if lo is not None or hi is not None:
        xp.clip(x, lo, hi, out=x)
    return x


@dask_aware
def pgd(model: Model, X: ArrayLike, y: Labels = None, *, eps: float, steps: int = 10,
        step_size: float | None = None, norm: Norm = "inf", target: Target = None,
        random_start: bool = True, restarts: int = 1, early_stop: bool = False,
        clip: Clip = None, quantize: float | None = None, seed: int | None = None,
        row_offset: int = 0, threads: int | None = None,
        progress: bool = False) -> AttackResult:
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
    seed : seeds the random starts and ``target="random"``; same seed, same results. Every
        draw is keyed by (seed, restart, global row), so a row's result does not depend on the
        rows beside it. row_offset : X's first row's index in a larger array (default 0):
        ``pgd(m, X[a:b], ..., row_offset=a)`` equals rows a:b of ``pgd(m, X, ...)``.

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
    model, X, yi, threads = prepare(model, X, y, threads, gpu=True)
    be, xp = model._be, model._be.xp
    eps = positive(eps, "eps")
    nrm = norm_of(norm)
    steps, restarts = count(steps, "steps"), count(restarts, "restarts")
    alpha = 2.5 * eps / steps if step_size is None else positive(step_size, "step_size")
    params = dict(eps=eps, steps=steps, step_size=alpha, norm=nrm, target=_desc(target),
                  random_start=random_start, restarts=restarts, early_stop=early_stop, clip=clip,
                  quantize=quantize, seed=seed)
    row_offset = _random.check_offset(row_offset)
    seed_i = _random.resolve(seed)
    ti = resolve_target(model, target, X, yi, seed_i, threads, row_offset)
    keys = [_random.key(seed_i, "pgd-start", r) for r in range(restarts)]
    lo, hi = clip_bounds(clip, X.shape[1], X.dtype, be)
    check_inside_clip(X, lo, hi, be)
    clip_arg = None if lo is None and hi is None else CheckedBounds(lo, hi, X.shape[1], X.dtype, be)
    q = _quantum(quantize)
    labels = yi if ti is None else ti
    lab_dev = on_device(model, labels).array
    y_dev = lab_dev if ti is None else on_device(model, yi).array
    sign = 1.0 if ti is None else -1.0
    N = X.shape[0]
    x_adv = be.empty(X.shape, X.dtype)
    iterations = np.zeros(N, dtype=np.int64)
    in_place = not random_start and restarts == 1  # steps taken in the output rows themselves
    bar = Progress(N * restarts, progress, "pgd")
    for s in row_chunks(*X.shape, be, model.n_weights):
        x0 = X[s]
        best = None
        grows = _random.global_rows(row_offset, s.start, s.stop - s.start, xp) \
            if random_start else None
        for r in range(restarts):
            if random_start:
                x = _random_start(keys[r], grows, x0, eps, nrm, lo, hi, xp)
            elif in_place:
                x = x_adv[s]
                if early_stop:  # else the fused call reads x0 and writes x: no copy
                    x[...] = x0
            else:
                x = xp.array(x0)
            if q and random_start:  # start on the grid too
                kernels.fused_update(x, xp.zeros_like(x), x0, step=0.0, eps=eps, norm=nrm,
                                     clip=clip_arg, quantum=q, out=x, threads=threads)
            it = _run_steps(model, x, x0, labels[s], lab_dev[s], yi[s], ti is not None, sign,
                            alpha, eps, nrm, clip_arg, q, steps, early_stop, threads,
                            start=x0 if in_place and not early_stop else None)
            iterations[s] += it
            if restarts == 1:  # nothing to compare: skip the extra forward pass
                best = (x, None, None)
                bar.update(s.stop - s.start)
                continue
            tdev = None if ti is None else lab_dev[s]
            score, _ = restart_objective(model, x, y_dev[s], tdev, threads)
            ok = succeeded(verdict.decide(model, be.to_host(x), threads), yi[s],
                           None if ti is None else ti[s])
            best = keep_better(best, x, score, be.asarray(ok))
            bar.update(s.stop - s.start)
        if not in_place:
            x_adv[s] = best[0]
    bar.close()
    return finish(model, X, x_adv, yi, ti, iterations, attack="pgd", t0=t0, threads=threads,
                  own_labels=y is None,
                  params=params)


def _fooled(model, x, P, y, t, t_dev, targeted, threads):
    """Rows the user's model robustly decides as fooled (a host bool array): the step's own
    probabilities name the candidates, the verdict (fastfool.verdict, on the host) confirms
    them with a clear margin. ``y``, ``t``: host class indices (``t_dev``: t on x's device);
    x, P on the model's device. On a GPU a step without candidates costs one flag read; a step
    with some copies their indices and rows to the host."""
    be = model._be
    done = np.zeros(x.shape[0], dtype=bool)
    pred = kernels.argmax_rows(P, threads=threads)[0]
    if be is not CPU:
        hit = pred == t_dev if targeted else pred != t_dev
        if not bool(hit.any()):
            return done
    pred = be.to_host(pred)
    cand = np.flatnonzero(pred == t if targeted else pred != y)
    if cand.size:
        p, ok, _ = verdict.judge(model, be.to_host(x[be.asarray(cand)]), threads)
        done[cand] = ok & succeeded(p, y[cand], t[cand] if targeted else None)
    return done


def _run_steps(model, x, x0, lab, lab_dev, y, targeted, sign, alpha, eps, nrm, clip, q, steps,
               early_stop, threads, start=None):
    """Runs the steps in place on x (from ``start`` instead, when given: x is then only
    written); returns the per-row step counts (host). ``lab`` / ``y``: host class indices,
    ``lab_dev`` the same labels on x's device."""
    be = model._be
    n = x.shape[0]
    if not early_stop:  # one call: each row block takes every step while it is in cache
        model.fused_step(x if start is None else start, Trusted(lab_dev), x0, threads, x,
                         step=sign * alpha, eps=eps, norm=nrm, clip=clip, quantum=q, steps=steps)
        return np.full(n, steps, dtype=np.int64)
    # Early stopping: keep a compact copy of the rows still to fool; write rows back as they go.
    it = np.zeros(n, dtype=np.int64)
    idx = np.arange(n)
    xa, x0a, la, la_dev, ya = x, be.xp.ascontiguousarray(x0), lab, lab_dev, y
    for _ in range(steps):
        g, _, P = model.loss_grad(xa, Trusted(la_dev), threads, return_prob=True)
        done = _fooled(model, xa, P, ya, la, la_dev, targeted, threads)
        if done.any():
            dd, kd = be.asarray(done), be.asarray(~done)
            x[be.asarray(idx[done])] = xa[dd]
            keep = ~done
            idx, la, ya = idx[keep], la[keep], ya[keep]
            xa, x0a, la_dev, g = xa[kd], x0a[kd], la_dev[kd], g[kd]
            if idx.size == 0:
                return it
        kernels.fused_update(xa, g, x0a, step=sign * alpha, eps=eps, norm=nrm, clip=clip,
                             quantum=q, out=xa, threads=threads)
        it[idx] += 1
    x[be.asarray(idx)] = xa
    return it
