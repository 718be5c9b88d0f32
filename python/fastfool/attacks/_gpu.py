"""FGSM and PGD for models on the GPU (``model.to("cuda")``, CuPy inputs).

The same semantics as the CPU attacks (:mod:`fastfool.attacks.gradient`): every step is the
fused CUDA gradient + update, labels and targets live on the device, and nothing goes back to
the host inside the step loop. ``x_adv`` is a CuPy array; the small per-row results (success,
pred, confidence, norms, iterations) are copied to the host once at the end, so that
``summary()`` and ``save()`` work as for CPU results. ``early_stop=True`` freezes fooled rows
(their later updates are discarded) instead of compacting the batch, which would need a host
round-trip per step; the step counts it reports are those of the CPU semantics.
"""

from __future__ import annotations

import time

import numpy as np

from .. import cuda, verdict
from ..result import AttackResult
from ._common import keep_better, restart_objective, succeeded


def _labels_on_device(model, X, y, target, seed):
    """(attacked class indices, target indices or None) as device int64 vectors."""
    cp = cuda.require()
    if y is None:  # the user's model's decisions (fastfool.verdict), on the host once
        yi = cp.asarray(verdict.decide(model, cp.asnumpy(X), None), dtype=cp.int64)
    else:
        yi = cp.asarray(model._y(y, X.shape[0]), dtype=cp.int64)
    if target is None:
        return yi, None
    N, C = X.shape[0], model.n_classes
    if isinstance(target, str) and target == "least_likely":
        ti = model._forward_soft(X, None, None).argmin(axis=1).astype(cp.int64)
    elif isinstance(target, str) and target == "random":
        rng = cp.random.default_rng(seed)
        ti = rng.integers(0, C - 1, N).astype(cp.int64)
        ti += ti >= yi
    elif isinstance(target, str) and target == "all":
        raise ValueError("target='all' is not supported on the GPU yet; use model.to('cpu')")
    else:
        t = np.full(N, target, dtype=object) if np.ndim(target) == 0 else target
        ti = cp.asarray(model._y(t, N), dtype=cp.int64)
    if N and bool((ti == yi).all()):
        raise ValueError("target: equals the attacked label on every row; nothing to attack")
    return yi, ti


def _step(model, x, lab, x0, out, **step):
    return model._ce_step(x, cuda.trusted(lab), x0, None, out, **step)


def _finish(model, X, x_adv, yi, ti, iterations, attack, params, t0):
    """The verdict is the CPU's (fastfool.verdict): x_adv and X go to the host once for it."""
    cp = cuda.require()
    h = cp.asnumpy
    xh = h(x_adv)
    pred, _, conf = verdict.judge(model, xh, None)
    l2, linf = cuda.diff_norms(x_adv, X)
    yh = h(yi)
    th = None if ti is None else h(ti)
    success = succeeded(pred, yh, th)

    def correct():  # on first use, as on the CPU (X goes to the host then)
        return verdict.decide(model, h(X), None) == yh

    cls = model.classes_
    return AttackResult(
        x_adv=x_adv, success=success, pred=cls[pred], confidence=conf.astype(xh.dtype),
        l2=h(l2), linf=h(linf), iterations=h(iterations).astype(np.int64), y=cls[yh],
        target=None if th is None else cls[th], _correct=correct, attack=attack, params=params,
        elapsed=time.perf_counter() - t0, extra={"device": f"cuda:{x_adv.device.id}"})


def _device_clip(clip, X):
    """clip=(lo, hi) as device vectors, made once before the loop (None stays None); X must lie
    inside (one reduction, one host sync, before any step)."""
    if clip is None:
        return None
    lo, hi = cuda._bounds(clip, X.shape[1], X.dtype, X.device.id)
    if (lo is not None and bool((X < lo).any())) or (hi is not None and bool((X > hi).any())):
        raise ValueError("X: values lie outside clip=(lo, hi); clip the data first or widen "
                         "the range")
    return None if lo is None and hi is None else (lo, hi)


def fgsm(model, X, y, *, eps, nrm, target, clip, quantum, seed, params, t0):
    cp = cuda.require()
    clip = _device_clip(clip, X)
    yi, ti = _labels_on_device(model, X, y, target, seed)
    lab = yi if ti is None else ti
    sign = 1.0 if ti is None else -1.0
    x_adv = cp.empty_like(X)
    _step(model, X, lab, X, x_adv, step=sign * eps, eps=eps, norm=nrm, clip=clip, quantum=quantum)
    return _finish(model, X, x_adv, yi, ti, cp.ones(X.shape[0], cp.int64), "fgsm", params, t0)


def _random_start(rng, X, eps, nrm, clip):
    cp = cuda.require()
    n, d = X.shape
    if nrm == "inf":
        delta = rng.uniform(-eps, eps, size=(n, d))
    else:
        g = rng.standard_normal((n, d))
        g /= cp.maximum(cp.linalg.norm(g, axis=1, keepdims=True), 1e-300)
        delta = g * (eps * rng.uniform(0, 1, size=(n, 1)) ** (1.0 / max(d, 1)))
    x = (X + delta).astype(X.dtype)
    if clip is not None:
        lo, hi = clip
        if lo is not None:
            x = cp.maximum(x, lo)
        if hi is not None:
            x = cp.minimum(x, hi)
    return cp.ascontiguousarray(x)


def pgd(model, X, y, *, eps, steps, alpha, nrm, target, random_start, restarts, early_stop,
        clip, quantum, seed, params, t0):
    cp = cuda.require()
    clip = _device_clip(clip, X)
    yi, ti = _labels_on_device(model, X, y, target, seed)
    lab = yi if ti is None else ti
    sign = 1.0 if ti is None else -1.0
    rng = cp.random.default_rng(seed) if random_start else None  # its set-up costs ~0.6 ms
    N = X.shape[0]
    iterations = cp.zeros(N, cp.int64)
    best = None
    step = dict(step=sign * alpha, eps=eps, norm=nrm, clip=clip, quantum=quantum)
    for _ in range(restarts):
        x = _random_start(rng, X, eps, nrm, clip) if random_start else X.copy()
        if quantum and random_start:
            cuda.fused_update(x, cp.zeros_like(x), X, step=0.0, eps=eps, norm=nrm, clip=clip,
                              quantum=quantum, out=x)
        if not early_stop:
            for _ in range(steps):
                _step(model, x, lab, X, x, **step)
            iterations += steps
        else:
            active = cp.ones(N, dtype=bool)
            for _ in range(steps):
                x_new, prob = _step(model, x, lab, X, cp.empty_like(x), return_prob=True, **step)
                pred = prob.argmax(axis=1)
                active &= ~(pred == ti if ti is not None else pred != yi)  # fooled at x: stop
                x = cp.where(active[:, None], x_new, x)
                iterations += active
        if restarts == 1:
            best = (x,)
            break
        best = keep_better(best, x, *restart_objective(model, x, yi, ti, None))
    return _finish(model, X, best[0], yi, ti, iterations, "pgd", params, t0)
