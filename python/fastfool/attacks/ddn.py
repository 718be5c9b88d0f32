"""Decoupled Direction and Norm attack (Rony, Hafemann, Oliveira, Ben Ayed, Sabourin & Granger,
CVPR 2019, "Decoupling Direction and Norm for Efficient Gradient-Based L2 Adversarial Attacks
and Defenses"): a minimum-L2 attack for models that are not affine.

Per row, ``steps`` iterations on ``delta`` from 0: record the iterate when the logits' argmax is
adversarial and it is the smallest so far; step along the L2-normalised cross-entropy gradient
(ascent; targeted: descent toward the target) with a step size cosine-annealed from 1 to 0.01;
the norm budget ``eps`` (from ``init_eps``, default 1) shrinks by ``1 - gamma`` after an
adversarial iterate and grows by ``1 + gamma`` otherwise (``gamma = 0.05``), capped by the
largest move the box allows; ``delta`` is then rescaled to norm ``eps`` exactly (a point on the
sphere, as in the paper) and clipped to the box.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .._dask import dask_aware
from .._typing import ArrayLike, Clip, Labels
from ..models import Model
from ._common import (bounds64, Grid, Progress, check_inside_clip, clip_bounds, confirm_outward, count,
                      finish, label_targets, on_device, positive, prepare, row_chunks,
                      row_norms)

__all__ = ["ddn"]


@dask_aware
def ddn(model: Model, X: ArrayLike, y: Labels = None, *, steps: int = 100, init_eps: float = 1.0,
        gamma: float = 0.05, target=None, clip: Clip = None, quantize: float | None = None,
        threads: int | None = None, progress: bool = False):
    """Decoupled Direction and Norm (Rony et al. 2019): a minimum-L2 adversarial example per row.

    Parameters
    ----------
    steps : iterations per row (default 100, the paper's for MNIST-size inputs).
    init_eps : the first norm budget (default 1.0, the paper's for inputs in [0, 1]).
    gamma : the budget's relative change per step (default 0.05).
    target : None (untargeted) or class labels (one per row, or one for all).
    clip : optional (lo, hi) box; with one, ``eps`` never exceeds the largest move it allows.
    quantize : grid step (e.g. ``1/255``; default None): ``x_adv`` is moved onto X's grid at
        the end (and inside the box): the nearest grid point, or the one rounded away from X
        when only that one fools; ``success`` and the norms are measured there.

    Returns an AttackResult: ``x_adv`` the smallest iterate per row whose logits' argmax was
    adversarial (X where none was), ``success`` / ``pred`` the user's model's decisions on it,
    ``iterations`` the steps per row; ``extra["eps"]`` the final budget per row.

    On a GPU model (``model.to("cuda")``, CuPy X) the steps run on the device; the verdicts,
    the outward confirmation and ``quantize``'s rounding are the host's, once per row chunk.
    """
    t0 = time.perf_counter()
    model, X, yi, threads = prepare(model, X, y, threads, gpu=True)
    be = model._be
    xp = be.xp
    steps = count(steps, "steps")
    init_eps = positive(init_eps, "init_eps", allow_zero=False)
    gamma = positive(gamma, "gamma")
    if gamma >= 1:
        raise ValueError(f"gamma: must be below 1, got {gamma!r}")
    N, D = X.shape
    lo, hi = clip_bounds(clip, D, X.dtype, be)
    grid = Grid(quantize, np.inf, "2", lo, hi, be)
    check_inside_clip(X, lo, hi, be)
    ti = label_targets(model, target, yi, N)
    lo64, hi64 = bounds64(lo, hi, D, xp)
    dt = X.dtype
    x_best = xp.array(X)
    eps_out = np.full(N, np.nan)
    bar = Progress(N, progress, "ddn")
    for s in row_chunks(N, D, be, model.n_weights):
        x0 = X[s].astype(np.float64)
        n = x0.shape[0]
        ys, ts = yi[s], None if ti is None else ti[s]
        lab = on_device(model, np.ascontiguousarray(ys if ts is None else ts, dtype=np.int64))
        ys_d, ts_d = be.asarray(ys), None if ts is None else be.asarray(ts)
        if lo64 is not None and hi64 is not None:
            worst = row_norms(xp.maximum(x0 - lo64, hi64 - x0), "2", xp)
        else:
            worst = xp.full(n, np.inf)
        delta = xp.zeros_like(x0)
        eps = xp.full(n, init_eps)
        best = xp.full(n, np.inf)
        bx = x_best[s].copy()
        for i in range(steps):
            alpha = 0.01 + (1.0 - 0.01) * (1 + math.cos(math.pi * i / steps)) / 2
            xa = (x0 + delta).astype(dt)
            g, _, P = model.loss_grad(xa, lab, threads, return_prob=True)
            pred = xp.argmax(P, axis=1)
            adv = pred != ys_d if ts is None else pred == ts_d
            dn = row_norms(xa.astype(np.float64) - x0, "2", xp)
            closer = adv & (dn < best)
            best = xp.where(closer, dn, best)
            bx = xp.where(closer[:, None], xa, bx)
            g = g.astype(np.float64)
            if ts is not None:
                g = -g  # toward the target: down its cross-entropy
            gn = row_norms(g, "2", xp)
            step = g / xp.where(gn > 0, gn, 1.0)[:, None]  # 0 where the gradient is
            delta = delta + alpha * step
            eps = xp.minimum(xp.where(adv, eps * (1 - gamma), eps * (1 + gamma)), worst)
            nd = row_norms(delta, "2", xp)
            delta = delta * xp.where(nd > 0, eps / xp.where(nd > 0, nd, 1.0), 1.0)[:, None]
            if lo64 is not None or hi64 is not None:
                delta = xp.clip(x0 + delta, lo64, hi64) - x0
        # the user's model confirms each row's point (on the host: one copy per chunk)
        x_best[s] = confirm_outward(model, X[s], bx, ys, ts, threads, lo64, hi64)
        eps_out[s] = be.to_host(eps)
        bar.update(n)
    bar.close()
    params = dict(steps=steps, init_eps=init_eps, gamma=gamma, target=target is not None,
                  clip=clip, quantize=quantize)
    return finish(model, X, x_best, yi, ti, np.full(N, steps), attack="ddn", t0=t0,
                  threads=threads, own_labels=y is None, params=params, extra={"eps": eps_out},
                  grid=grid)
