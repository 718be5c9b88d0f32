"""Universal adversarial perturbations (Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, CVPR 2017,
"Universal adversarial perturbations"): one perturbation ``v`` (shape ``(D,)``, inside the
``eps``-ball) that changes the model's decision on most rows.

Passes over the rows in a random order: for each row that ``x + v`` does not yet fool, the
smallest step DeepFool finds from ``x + v`` is added to ``v``, which is then projected back onto
the ball; passes stop when the fooling rate on the rows reaches ``1 - delta`` or after
``max_passes``. Batched: a pass takes the rows in mini-batches of ``batch`` rows whose DeepFool
steps are computed together at the batch's starting ``v`` and then added one after the other,
each followed by the projection (``batch=1`` is the paper's row-at-a-time loop).
"""

from __future__ import annotations

import time

import numpy as np

from .. import verdict
from .._typing import ArrayLike, Clip, Labels, Norm
from ..models import Model
from ._common import (Progress, check_inside_clip, clip_bounds, count, finish, norm_of, on_grid,
                      positive, prepare)

__all__ = ["universal"]


def _project(v, eps, l2):
    if l2:
        n = float(np.sqrt(v @ v))
        return v * (eps / n) if n > eps else v
    return np.clip(v, -eps, eps)


def universal(model: Model, X: ArrayLike, y: Labels = None, *, eps: float, norm: Norm = "inf",
              delta: float = 0.2, max_passes: int = 10, batch: int = 32,
              overshoot: float = 0.02, max_iter: int = 50, step_norm: Norm | None = None,
              clip: Clip = None, quantize: float | None = None, seed: int = 0,
              threads: int | None = None, progress: bool = False):
    """Universal perturbation (Moosavi-Dezfooli et al. 2017) for the rows X.

    Parameters
    ----------
    eps : the radius of ``v`` (L-inf by default, or L2 with ``norm=2``).
    delta : stop once a fraction ``1 - delta`` of the rows is fooled (default 0.2, the paper's).
    max_passes : passes over the rows at most (default 10). batch : rows per DeepFool call
        (default 32; 1 is the paper's sequential loop). overshoot, max_iter : DeepFool's.
    step_norm : the norm of DeepFool's steps (default 2, as in the paper's code, for either
        ``norm``; the projection is onto the ``norm`` ball).
    clip : optional (lo, hi): ``x + v`` is clipped to it (v itself stays in the ball).
    quantize : grid step (e.g. ``1/255``; default None): the final ``v`` is rounded to a
        multiple of it inside the ball (the passes' rates are those of the unrounded ``v``),
        so ``X + v`` stays on X's grid; ``success`` is measured with the rounded ``v``.
    seed : the order of the rows in each pass.

    Returns an AttackResult over X: ``x_adv = clip(X + v)``, ``success`` / ``pred`` the user's
    model's decisions on it (the fooling rate on the fitted rows is ``success_rate``, or
    ``fooled_rate`` over the rows it got right); ``.perturbation`` is ``v`` (apply it to
    held-out rows as ``np.clip(X_test + res.perturbation, lo, hi)``, or ``cupy.clip`` on a GPU
    model, where it is a CuPy array); ``extra["passes"]`` the
    passes run and ``extra["pass_fooling_rate"]`` the rate after each.

    On a GPU model (``model.to("cuda")``, CuPy X) DeepFool's steps run on the device; ``v``, its
    projections and the verdicts are the host's (``x_adv`` and ``.perturbation`` come back on
    the device).
    """
    t0 = time.perf_counter()
    from .._dask import is_dask
    if is_dask(X):
        raise TypeError("X: universal fits one perturbation to all rows together; pass a NumPy "
                        "array (X.compute(), or a sample of the rows)")
    model, X, yi, threads = prepare(model, X, y, threads, gpu=True)
    be = model._be
    xp, dev, host = be.xp, be.asarray, be.to_host
    eps = positive(eps, "eps", allow_zero=False)
    nrm = norm_of(norm)
    l2 = nrm == "2"
    delta = positive(delta, "delta")
    if delta >= 1:
        raise ValueError(f"delta: must be in [0, 1), got {delta!r}")
    max_passes = count(max_passes, "max_passes")
    batch = count(batch, "batch")
    overshoot = positive(overshoot, "overshoot")
    max_iter = count(max_iter, "max_iter")
    N, D = X.shape
    lo, hi = clip_bounds(clip, D, X.dtype, be)
    check_inside_clip(X, lo, hi, be)
    q = 0.0 if quantize is None else positive(quantize, "quantize", allow_zero=False)
    from .minimal import deepfool
    if step_norm is None:
        step_norm = 2
    dt = X.dtype
    rng = np.random.default_rng(seed)
    v = np.zeros(D)

    def perturbed(rows, vec):
        """clip(X[rows] + vec) (arrays of the model's backend; rows and vec on the host)."""
        p = X[dev(rows)] + dev(vec.astype(dt))
        if lo is not None or hi is not None:
            p = xp.clip(p, lo, hi)
        return p.astype(dt, copy=False)

    all_rows = np.arange(N)
    rates = []
    bar = Progress(max_passes, progress, "universal")
    passes = 0
    for _ in range(max_passes):
        passes += 1
        order = rng.permutation(N)
        for b0 in range(0, N, batch):
            rows = order[b0:b0 + batch]
            xb = perturbed(rows, v)
            todo = verdict.decide(model, host(xb), threads) == yi[rows]
            if not todo.any():
                continue
            r = rows[todo]
            xt = xb[dev(todo)]
            df = deepfool(model, xt, model.classes_[yi[r]], norm=step_norm, overshoot=overshoot,
                          max_iter=max_iter, threads=threads)
            steps = host(df.x_adv.astype(np.float64) - xt.astype(np.float64))
            for k in np.flatnonzero(df.success):  # the rows DeepFool fooled, in order
                v = _project(v + steps[k], eps, l2)
        rate = float(np.mean(verdict.decide(model, host(perturbed(all_rows, v)), threads) != yi)) \
            if N else 0.0
        rates.append(rate)
        bar.update(1)
        if rate >= 1 - delta:
            break
    bar.close()
    if q:
        v = on_grid(v[None], np.zeros((1, D)), q, eps=eps, norm=nrm)[0]
    x_adv = perturbed(all_rows, v)
    params = dict(eps=eps, norm=nrm, delta=delta, max_passes=max_passes, batch=batch,
                  overshoot=overshoot, max_iter=max_iter, clip=clip, quantize=quantize,
                  seed=seed)
    return finish(model, X, x_adv, yi, None, np.full(N, passes), attack="universal", t0=t0,
                  threads=threads, own_labels=y is None, params=params,
                  extra={"perturbation": dev(v.astype(dt)), "passes": np.array(passes),
                         "pass_fooling_rate": np.array(rates)})
