"""Carlini-Wagner L2 attack (Carlini & Wagner, IEEE S&P 2017, "Towards Evaluating the
Robustness of Neural Networks"), batched over rows: the classic minimum-L2 reference.

Per row and constant ``c``, Adam (learning rate 0.01, betas 0.9 / 0.999) minimises
``||x' - x||^2 + c max(z_y - max_{j != y} z_j + kappa, 0)`` (targeted: ``max_{j != t} z_j -
z_t + kappa``) over ``w``, with ``x' = a + b tanh(w)`` mapping onto the box ``clip`` (without a
box, ``x' = x + w``); the smallest ``x'`` whose logits are adversarial by more than ``kappa`` is
kept. ``c`` starts at ``initial_const`` (1e-3) and follows the paper's search over
``binary_search_steps`` (9) rounds: times 10 until a round finds an adversarial example, then
bisection between the largest ``c`` that failed and the smallest that succeeded.

Each row's Adam loop stops early when its objective has not fallen by 0.01% since the last of
ten checks (the reference implementations check the sum over the batch; per row, a row's result
does not depend on the rows beside it).
"""

from __future__ import annotations

import time

import numpy as np

from .._dask import dask_aware
from .._typing import ArrayLike, Clip, Labels
from ..models import Model
from .._backend import CPU
from ._common import (bounds64, Grid, Progress, check_inside_clip, clip_bounds, confirm_outward, count,
                      finish, label_targets, positive, prepare, row_chunks, row_norms)

__all__ = ["cw"]

_B1, _B2, _EPS_ADAM = 0.9, 0.999, 1e-8


def _margin(L, ys, ts, kappa, xp=np):
    """(hinge term before the max with 0, rival class, adversarial by more than kappa?) per row
    (``xp`` the array module of the logits L and the class indices)."""
    n = L.shape[0]
    r = xp.arange(n)
    k = ys if ts is None else ts
    other = L.copy()
    other[r, k] = -np.inf
    j = xp.argmax(other, axis=1)
    if ts is None:
        m = L[r, ys] - L[r, j]
    else:
        m = L[r, j] - L[r, ts]
    return m + kappa, j, m + kappa < 0


@dask_aware
def cw(model: Model, X: ArrayLike, y: Labels = None, *, steps: int = 1000,
       binary_search_steps: int = 9, initial_const: float = 1e-3, confidence: float = 0.0,
       learning_rate: float = 0.01, target=None, clip: Clip = None,
       quantize: float | None = None, threads: int | None = None, progress: bool = False):
    """Carlini-Wagner L2 (2017), batched across rows with a per-row search over the constant.

    Parameters
    ----------
    steps : Adam iterations per constant (default 1000; the paper uses up to 10000: on a
        digits tanh MLP 100 steps gave a median L2 of 0.62 and 97% success, 1000 gave 0.40 and
        100%).
    binary_search_steps : rounds of the search over c (default 9). initial_const : the first c
        (default 1e-3). confidence : the margin kappa the logits must clear (default 0).
    learning_rate : Adam's step (default 0.01, in the tanh space with a box).
    target : None (untargeted) or class labels (one per row, or one for all).
    clip : optional (lo, hi) box, enforced by the tanh change of variables.
    quantize : grid step (e.g. ``1/255``; default None): ``x_adv`` is moved onto X's grid at
        the end (and inside the box): the nearest grid point, or the one rounded away from X
        when only that one fools; ``success`` and the norms are measured there.

    Returns an AttackResult: ``x_adv`` the smallest point per row whose logits cleared the margin
    (X where none did), ``success`` / ``pred`` the user's model's decisions on it,
    ``iterations`` the Adam steps run per row; ``extra["const"]`` the smallest constant that
    found an adversarial example per row (inf where none did).

    On a GPU model (``model.to("cuda")``, CuPy X) the Adam steps run on the device; the rows
    still running are decided on the host at the ten checks per round, and the verdicts, the
    outward confirmation and ``quantize``'s rounding are the host's, once per row chunk.
    """
    t0 = time.perf_counter()
    model, X, yi, threads = prepare(model, X, y, threads, gpu=True)
    be = model._be
    xp = be.xp
    steps = count(steps, "steps")
    binary_search_steps = count(binary_search_steps, "binary_search_steps")
    initial_const = positive(initial_const, "initial_const", allow_zero=False)
    confidence = positive(confidence, "confidence")
    learning_rate = positive(learning_rate, "learning_rate", allow_zero=False)
    N, D = X.shape
    lo, hi = clip_bounds(clip, D, X.dtype, be)
    grid = Grid(quantize, np.inf, "2", lo, hi, be)
    check_inside_clip(X, lo, hi, be)
    if (lo is None) != (hi is None):
        raise ValueError("clip: cw needs both bounds (or none)")
    ti = label_targets(model, target, yi, N)
    box = lo is not None
    lo64 = hi64 = None
    if box:
        lo64, hi64 = bounds64(lo, hi, D, xp)
        mid, half = (lo64 + hi64) / 2, (hi64 - lo64) / 2
        flat = half == 0  # a fixed feature: stays at its value
        safe_half = xp.where(flat, 1.0, half)
    dt = X.dtype
    C = model.n_classes
    cols = xp.arange(C)
    x_best = xp.array(X)
    consts = np.full(N, np.nan)
    iterations = np.zeros(N, dtype=np.int64)
    check_every = max(1, -(-steps // 10))
    gpu = be is not CPU
    bar = Progress(N * binary_search_steps, progress, "cw")
    for s in row_chunks(N, D, be, model.n_weights):
        x0 = X[s].astype(np.float64)
        n = x0.shape[0]
        ys, ts = yi[s], None if ti is None else ti[s]
        ys_d, ts_d = be.asarray(ys), None if ts is None else be.asarray(ts)
        if box:
            w0 = xp.arctanh(xp.where(flat, 0.0, (x0 - mid) / safe_half) * 0.999999)
            x_rec = mid + half * xp.tanh(w0)  # the box's image of the start: the distance origin
        else:
            w0 = xp.zeros_like(x0)
            x_rec = x0
        c = xp.full(n, initial_const)
        lower = xp.zeros(n)
        upper = xp.full(n, np.inf)
        best = xp.full(n, np.inf)
        bx = x_best[s].copy()
        for _ in range(binary_search_steps):
            w = xp.zeros_like(x0)  # the change from w0
            m1 = xp.zeros_like(x0)
            m2 = xp.zeros_like(x0)
            found = xp.zeros(n, dtype=bool)
            live = np.ones(n, dtype=bool)  # on the host: changes only at the checks
            prev = xp.full(n, np.inf)
            rows = np.arange(n)
            rd = be.asarray(rows)
            for k in range(steps):
                if rows.size == 0:
                    break
                if box:
                    th = xp.tanh(w0[rd] + w[rd])
                    xq = mid + half * th
                else:
                    xq = x0[rd] + w[rd]
                xa = xq.astype(dt)
                L = model.scores(xa, None, threads).astype(np.float64)
                ks = ys_d[rd] if ts is None else ts_d[rd]
                hinge, j, adv = _margin(L, ys_d[rd], None if ts is None else ks, confidence, xp)
                d = xq - x_rec[rd]
                obj = xp.einsum("ij,ij->i", d, d) + c[rd] * xp.maximum(hinge, 0.0)
                dn = row_norms(xa.astype(np.float64) - x0[rd], "2", xp)
                closer = adv & (dn < best[rd])
                best[rd] = xp.where(closer, dn, best[rd])
                bx[rd] = xp.where(closer[:, None], xa, bx[rd])
                found[rd] |= adv
                # gradient in x': 2 (x' - x) + c [hinge > 0] d(margin)/dx'
                act = hinge > 0
                coef = (c[rd] * act)[:, None]
                up = (cols == ks[:, None]) * coef  # +c on the label (targeted: the rival)
                down = (cols == j[:, None]) * coef
                V = up - down if ts is None else down - up
                g = 2 * d
                if gpu or act.any():  # (on the device without the check: no sync per step)
                    g = g + model.vjp(xa, V.astype(model.dtype), threads).astype(np.float64)
                if box:
                    g = g * half * (1 - th * th)
                t = k + 1
                m1[rd] = _B1 * m1[rd] + (1 - _B1) * g
                m2[rd] = _B2 * m2[rd] + (1 - _B2) * g * g
                mh = m1[rd] / (1 - _B1 ** t)
                vh = m2[rd] / (1 - _B2 ** t)
                w[rd] -= learning_rate * mh / (xp.sqrt(vh) + _EPS_ADAM)
                iterations[s.start + rows] += 1
                if k % check_every == 0:  # the row's progress since the last check
                    stalled = be.to_host(~(obj <= 0.9999 * prev[rd]))
                    prev[rd] = obj
                    if stalled.any():
                        live[rows[stalled]] = False
                        rows = np.flatnonzero(live)
                        rd = be.asarray(rows)
            upper = xp.where(found, xp.minimum(upper, c), upper)
            lower = xp.where(found, lower, xp.maximum(lower, c))
            c = xp.where(xp.isinf(upper), c * 10, (lower + upper) / 2)
            bar.update(n)
        x_best[s] = confirm_outward(model, X[s], bx, ys, ts, threads, lo64, hi64)
        consts[s] = be.to_host(upper)
    bar.close()
    params = dict(steps=steps, binary_search_steps=binary_search_steps,
                  initial_const=initial_const, confidence=confidence,
                  learning_rate=learning_rate, target=target is not None, clip=clip,
                  quantize=quantize)
    return finish(model, X, x_best, yi, ti, iterations, attack="cw", t0=t0, threads=threads,
                  own_labels=y is None, params=params, extra={"const": consts},
                  grid=grid)
