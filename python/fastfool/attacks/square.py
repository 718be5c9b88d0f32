"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020, "Square Attack: a
query-efficient black-box adversarial attack via random search"), L-inf and L2, untargeted: the
score-based member of the AutoAttack ensemble.

L2 (AutoAttack's implementation, windows shared by all rows): the start is a grid of blocks of
side ``min(H, W) // 5``, each holding the paper's "two opposite bumps" profile ``eta`` (centred
rectangles weighted ``1 / (k + 1)^2``, positive in one half, negative in the other, transposed
at random) with one random sign per row and channel, rescaled to norm ``eps``. Each iteration
draws two windows of side ``s_k`` (at least 3, odd): the perturbation's mass in the second is
moved into the first, whose content becomes ``eta`` (random sign per row and channel) plus its
old direction, rescaled so that the row keeps norm ``eps``; the whole perturbation is then
rescaled to ``eps`` and the point clipped to the box. A proposal is kept when it lowers the
margin or fools.

Each row starts from vertical stripes, ``x + eps * s`` with one random sign ``s`` per column and
channel (clipped to the box). Every iteration proposes, for each row not yet fooled, a new
square window of side ``s_k`` at a random place whose every value is moved to ``x +- eps``
(one random sign per channel; AutoAttack's implementation, the default, draws the place and
signs once per iteration for all rows), and keeps the proposal if it lowers the margin loss
``z_y - max_{j != y} z_j`` of the model's logits. The side follows the paper's schedule:
``s_k = round(sqrt(p_k D / C))`` pixels with ``p`` starting at ``p_init`` (default 0.8) and
halved at 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of every 10000 iterations
(rescaled to ``max_queries``). One query per iteration per row, plus one for the start.

All rows' proposals of an iteration go to the model as one matrix. Inputs are flat rows; the
image layout they flatten (``image_shape``) defines the windows. For a fastfool dense model on
the CPU the shared-window L-inf loop runs in C++ (:func:`fastfool.kernels.square_linf_mlp`: the
first layer updated by the window's features only; the same points and queries as the NumPy
loop, which every other model runs, 2.4-2.8x faster in float32 on the digits MLPs).
"""

from __future__ import annotations

import math
import time

import numpy as np

from .._dask import dask_aware
from .. import kernels
from .._backend import CPU
from .._typing import ArrayLike, Clip, Labels, Norm
from ..models import Model
from ..models.dense import DenseModel
from ._common import (Grid, Progress, check_inside_clip, clip_bounds, count, finish, norm_of, positive,
                      prepare)

__all__ = ["square", "p_schedule", "image_layout", "eta_profile"]


def p_schedule(p_init: float, it: int, n_iters: int) -> float:
    """The fraction of pixels a window covers at iteration ``it`` of ``n_iters`` (the paper's
    piecewise-constant schedule, defined on 10000 iterations and rescaled)."""
    i = int(it / n_iters * 10000)
    for edge, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
                      (6000, 128), (8000, 256), (10000, 512)):
        if i <= edge:
            return p_init / div
    return p_init


def image_layout(D: int, image_shape=None, channels_last: bool = True):
    """(H, W, C, grid) for rows of D features: ``grid[h, w, c]`` is the flat index of pixel (h, w)
    in channel c. ``image_shape``: (H, W) or (H, W, C) with channels_last (the row-major
    flattening of an H x W x C image), (C, H, W) with channels_last=False (torch's layout);
    None: a square H x H image when D is a perfect square, else one row of D pixels."""
    if image_shape is None:
        h = math.isqrt(D)
        shape = (h, h, 1) if h * h == D and D > 0 else (1, D, 1)
        channels_last = True
    else:
        try:
            shape = tuple(int(v) for v in image_shape)
        except (TypeError, ValueError):
            raise TypeError(f"image_shape: expected a tuple of ints, got {image_shape!r}") from None
        if len(shape) == 2:
            shape = (*shape, 1) if channels_last else (1, *shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"image_shape: expected (H, W) or 3 positive sizes, got {image_shape!r}")
        if int(np.prod(shape)) != D:
            raise ValueError(f"image_shape: {image_shape!r} holds {int(np.prod(shape))} values, but "
                             f"rows have {D} features")
    grid = np.arange(D).reshape(shape)
    if not channels_last:
        grid = grid.transpose(1, 2, 0)
    H, W, C = grid.shape
    return H, W, C, grid


def _margin(model, x, y, threads):
    """Margin loss z_y - max_{j != y} z_j of the model's logits per row (float64): the top
    logit when it is not y's, else the best rival's (kernels.top2_rows, one pass)."""
    xp = model._be.xp
    L = model.scores(x, None, threads)
    i1, top, second = kernels.top2_rows(L, threads=threads)
    return L[xp.arange(L.shape[0]), y] - xp.where(i1 == y, second, top)


def _side(p, D, C, H, W):
    """The window's (height, width) for fraction p: a square of sqrt(p D / C) pixels, below the
    image's smaller side; a run of p D / C pixels on a one-row layout."""
    if H == 1 or W == 1:
        n = max(H, W)
        s = min(max(int(round(p * D / C)), 1), max(n - 1, 1))
        return (1, s) if H == 1 else (s, 1)
    s = min(max(int(round(math.sqrt(p * D / C))), 1), min(H, W) - 1)
    return s, s


def _rect(a, b):
    """AutoAttack's centred-rectangles profile on an a x b block: rectangles of sides 2k + 1
    around the centre, each adding 1 / (k + 1)^2, normalised to unit L2 norm (empty: empty)."""
    out = np.zeros((a, b))
    ca, cb = a // 2, b // 2
    for k in range(max(a // 2 + 1, b // 2 + 1)):
        out[max(ca - k, 0):min(ca - k + 2 * k + 1, a), max(cb - k, 0):min(cb - k + 2 * k + 1, b)] \
            += 1.0 / (k + 1) ** 2
    n = np.sqrt((out ** 2).sum())
    return out / n if n > 0 else out


def eta_profile(sh: int, sw: int, flip: bool = False) -> np.ndarray:
    """The L2 Square Attack's window content (Andriushchenko et al. 2020): an ``sh x sw`` block
    whose first half (along its longer axis) is a centred-rectangles bump and second half the
    negative of one, unit L2 norm; ``flip`` transposes a square block."""
    if sh >= 2 or sw == 1:
        top, bot = _rect(sh // 2, sw), -_rect(sh - sh // 2, sw)
        out = np.concatenate([top, bot], axis=0)
    else:
        out = np.concatenate([_rect(1, sw // 2), -_rect(1, sw - sw // 2)], axis=1)
    out /= max(np.sqrt((out ** 2).sum()), 1e-300)
    if flip and sh == sw:
        out = out.T
    return out


def _side_l2(p, D, C, H, W):
    """The L2 window: sqrt(p D / C) pixels a side, at least 3 and odd, at most the image's
    smaller side (a run of that many on a one-row layout)."""
    if H == 1 or W == 1:
        s = max(int(round(p * D / C)), 3)
        s = min(s + (s % 2 == 0), max(H, W))
        return (1, s) if H == 1 else (s, 1)
    s = max(int(round(math.sqrt(p * D / C))), 3)
    s = min(s + (s % 2 == 0), min(H, W))
    return s, s


def _window(grid, h0, w0, sh, sw):
    """The flat feature indices of a window, (C, sh * sw): channel by channel."""
    return grid[h0:h0 + sh, w0:w0 + sw, :].reshape(-1, grid.shape[2]).T


def _square_l2(model, X, yi, eps, max_queries, p_init, H, W, C, grid, box, rng, threads, bar):
    """The L2 Square Attack (module docstring): (best points, queries per row). Arrays of the
    model's backend; the random draws (and so the windows) are the host generator's on either
    device, each iteration's copied to the device (a few small arrays per iteration)."""
    be = model._be
    xp, dev = be.xp, be.asarray
    N, D = X.shape
    dt = X.dtype
    X64 = X.astype(np.float64)
    # the start: blocks of side min(H, W) // 5 from an offset that centres them
    s0 = max(min(H, W) // 5, 1)
    bh, bw = (H // s0, W // s0) if min(H, W) > 1 else ((H, 1) if W == 1 else (1, W))
    if min(H, W) == 1:  # a one-row layout: single features
        s0 = 1
    oh = max((H - s0 * 5) // 2, 0) if H > 1 else 0
    ow = max((W - s0 * 5) // 2, 0) if W > 1 else 0
    signs0 = rng.choice(np.array([-1.0, 1.0]), size=(N, bh, bw, C))
    flips0 = rng.random((bh, bw)) > 0.5
    delta = np.zeros((N, D))
    prof0 = {False: eta_profile(s0, s0), True: eta_profile(s0, s0, True)}
    for a in range(bh):
        for b in range(bw):
            h0, w0 = oh + a * s0, ow + b * s0
            if h0 + s0 > H or w0 + s0 > W:
                continue  # past the edge (the reference slices it away)
            idx = _window(grid, h0, w0, s0, s0)  # (C, s0 * s0)
            prof = prof0[bool(flips0[a, b])].ravel()
            delta[:, idx] += signs0[:, a, b, :, None] * prof[None, None, :]

    def to_point(d, x0):
        n = xp.sqrt(xp.einsum("ij,ij->i", d, d))
        return box(x0 + (d / (n + 1e-12)[:, None] * eps).astype(dt))

    x_best = to_point(dev(delta), X)
    margin = _margin(model, x_best, dev(yi), threads)
    queries = np.ones(N, dtype=np.int64)
    act = np.flatnonzero(be.to_host(margin > 0))
    done = 0
    for it in range(max_queries - 1):
        u = rng.random(4)
        flip = rng.random() > 0.5
        sg = rng.choice(np.array([-1.0, 1.0]), size=(N, C))
        if act.size == 0:
            break
        done = it + 1
        sh, sw = _side_l2(p_schedule(p_init, it, max_queries), D, C, H, W)
        h1 = int(u[0] * (H - sh)) if H > sh else 0
        w1 = int(u[1] * (W - sw)) if W > sw else 0
        h2 = int(u[2] * (H - sh)) if H > sh else 0
        w2 = int(u[3] * (W - sw)) if W > sw else 0
        i1h, i2h = _window(grid, h1, w1, sh, sw), _window(grid, h2, w2, sh, sw)
        i1, i2 = dev(i1h), dev(i2h)
        ad = dev(act)
        xa, xb = X64[ad], x_best[ad].astype(np.float64)
        d = xb - xa
        n_img = xp.sqrt(xp.einsum("ij,ij->i", d, d))
        w1v = d[:, i1]  # (n, C, s)
        n1 = xp.sqrt((w1v ** 2).sum(axis=2))
        union = np.zeros((C, D), dtype=bool)
        union[np.arange(C)[:, None], i1h] = True
        union[np.arange(C)[:, None], i2h] = True
        # (columns by a boolean mask on the host, by their indices on the device: no sync)
        n_win = xp.sqrt(xp.stack([(d[:, union[c] if be is CPU else dev(np.flatnonzero(union[c]))]
                                   ** 2).sum(axis=1) for c in range(C)], axis=1))
        prof = dev(eta_profile(sh, sw, flip).ravel())
        new = dev(sg[act])[:, :, None] * prof[None, None, :] + w1v / (1e-12 + n1[:, :, None])
        nn_ = xp.sqrt((new ** 2).sum(axis=2))
        scale = xp.sqrt(xp.maximum(eps ** 2 - n_img ** 2, 0.0)[:, None] / C + n_win ** 2)
        new = new / (1e-12 + nn_[:, :, None]) * scale[:, :, None]
        d[:, i2] = 0.0
        d[:, i1] = new
        cand = to_point(d, X[ad])
        m_new = _margin(model, cand, dev(yi[act]), threads)
        better = be.to_host((m_new < margin[ad]) | (m_new <= 0))
        rows, bd = dev(act[better]), dev(better)
        x_best[rows], margin[rows] = cand[bd], m_new[bd]
        queries[act] += 1
        bar.update(1)
        act = act[be.to_host(margin[ad] > 0)]
    return x_best, queries, done


def _per_row(rng, xa, xb, H, W, sh, sw, grid, offs, chan_of, eps, box, dt, be=CPU):
    """The paper's NumPy version: a window at a random place per row, its signs drawn again
    until the window differs from the current best somewhere (capped: a box too narrow for
    either sign to change anything would otherwise never end). The draws are the host
    generator's; xa, xb (and the result) arrays of the backend ``be``."""
    dev, host = be.asarray, be.to_host
    n = xa.shape[0]
    C = grid.shape[2]
    ch = rng.integers(0, H - sh + 1, size=n) if H > sh else np.zeros(n, int)
    cw = rng.integers(0, W - sw + 1, size=n) if W > sw else np.zeros(n, int)
    idx = grid[ch, cw, 0][:, None] + offs[None, :]
    r = np.arange(n)[:, None]
    cand = xb.copy()
    need = np.arange(n)
    for _ in range(100):
        signs = rng.choice(np.array([-eps, eps]), size=(need.size, C))
        rows, ix = dev(r[need]), dev(idx[need])
        cand[rows, ix] = box(xa[rows, ix] + dev(signs[:, chan_of].astype(dt)), ix)
        same = host(be.xp.all(be.xp.abs(cand[rows, ix] - xb[rows, ix]) < 1e-7, axis=1))
        need = need[same]
        if need.size == 0:
            break
    return cand


@dask_aware
def square(model: Model, X: ArrayLike, y: Labels = None, *, eps: float, norm: Norm = "inf",
           max_queries: int = 5000, p_init: float = 0.8, windows: str = "shared",
           image_shape=None, channels_last: bool = True, clip: Clip = None,
           quantize: float | None = None, seed: int | None = 0, threads: int | None = None,
           progress: bool = False):
    """Square Attack (Andriushchenko et al. 2020), L-inf or L2, untargeted; score-based: it reads
    only the model's logits, never a gradient.

    Parameters
    ----------
    eps : the radius. norm : "inf" (default) or 2 (AutoAttack's L2 version: shared windows only).
    max_queries : model evaluations per row, the start included (default 5000, AutoAttack's).
    p_init : the first window's fraction of the pixels (default 0.8, the paper's L-inf value).
    windows : "shared" (default: AutoAttack's PyTorch implementation, one window place and one
        sign per channel per iteration for all rows, placed in ``[0, H - s)``; cheaper) or
        "per-row" (the paper's NumPy implementation: a place per row in ``[0, H - s]``, signs
        drawn again until the window changes the row).
    image_shape, channels_last : the layout the rows flatten (see :func:`image_layout`;
        default: a square image when the feature count is a perfect square, else a single row).
    clip : optional (lo, hi) box. seed : the random windows and signs (default 0).
    quantize : grid step (e.g. ``1/255``; default None): ``x_adv`` is moved onto X's grid
        inside the ball and the box at the end (the nearest grid point, or the one rounded away
        from X when only that one fools) and judged there. L-inf moves are +-eps, so with eps
        on the grid the points already are.

    Returns an AttackResult whose ``success`` and ``pred`` are the user's model's decisions on
    ``x_adv``; ``queries`` (and ``iterations``) count the model evaluations per row.
    """
    t0 = time.perf_counter()
    model, X, yi, threads = prepare(model, X, y, threads, gpu=True)
    be = model._be
    xp = be.xp
    eps = positive(eps, "eps", allow_zero=False)
    nrm = norm_of(norm)
    max_queries = count(max_queries, "max_queries")
    p_init = positive(p_init, "p_init", allow_zero=False)
    if p_init > 1:
        raise ValueError(f"p_init: must be in (0, 1], got {p_init!r}")
    if windows not in ("shared", "per-row"):
        raise ValueError(f"windows: expected 'shared' or 'per-row', got {windows!r}")
    shared = windows == "shared"
    if nrm == "2" and not shared:
        raise ValueError("windows: the L2 attack runs with shared windows only")
    N, D = X.shape
    H, W, C, grid = image_layout(D, image_shape, channels_last)
    lo, hi = clip_bounds(clip, D, X.dtype, be)
    check_inside_clip(X, lo, hi, be)
    qgrid = Grid(quantize, eps, nrm, lo, hi, be)
    rng = np.random.default_rng(seed)
    dt = X.dtype

    def box(v, cols=None):
        """v clipped to the box; cols: the feature indices of v's columns (per-feature bounds)."""
        for bound, op in ((lo, xp.maximum), (hi, xp.minimum)):
            if bound is not None:
                v = op(v, bound if bound.ndim == 0 or cols is None else bound[cols])
        return v.astype(dt, copy=False)

    if nrm == "2":
        bar = Progress(max_queries, progress, "square")
        bar.update(1)
        x_best, queries, _ = _square_l2(model, X, yi, eps, max_queries, p_init, H, W, C, grid,
                                        box, rng, threads, bar)
        bar.close()
        params = dict(eps=eps, norm="2", max_queries=max_queries, p_init=p_init,
                      windows=windows, image_shape=(H, W, C), channels_last=channels_last,
                      clip=clip, quantize=quantize, seed=seed)
        return finish(model, X, x_best, yi, None, queries, attack="square", t0=t0,
                      threads=threads, queries=queries, own_labels=y is None, params=params,
                      grid=qgrid)
    # vertical stripes: one sign per (column, channel), the same down each column
    stripes = rng.choice(np.array([-eps, eps]), size=(N, W, C))
    start = np.empty((N, D))
    start[:, grid.reshape(H, W * C)] = stripes.reshape(N, 1, W * C)
    x_best = box(X + be.asarray(start.astype(dt)))
    margin = _margin(model, x_best, be.asarray(yi), threads)
    queries = np.ones(N, dtype=np.int64)
    if shared:  # every iteration's window corner (as fractions) and signs, drawn up front
        corner = rng.random((max_queries, 2))
        sign = rng.choice(np.array([-eps, eps]), size=(max_queries, C)).astype(dt)
    bar = Progress(max_queries, progress, "square")
    bar.update(1)
    if be is not CPU and shared:  # the shared-window loop on the device
        _square_device(model, X, x_best, margin, yi, queries, corner, sign, max_queries,
                       p_init, D, H, W, C, grid, box, threads, bar)
        bar.close()
        return _finish_linf(model, X, x_best, yi, y, queries, t0, threads, qgrid, eps,
                            max_queries, p_init, windows, H, W, C, channels_last, clip, quantize,
                            seed)
    layers = _kernel_layers(model) if shared else None
    if layers is not None:  # the dense stack's loop in C++ (kernels.square_linf_mlp)
        _square_kernel(layers, X, x_best, margin, yi, queries, corner, sign, max_queries, p_init,
                       D, H, W, C, grid, lo, hi, threads, bar)
        bar.close()
        return _finish_linf(model, X, x_best, yi, y, queries, t0, threads, qgrid, eps,
                            max_queries, p_init, windows, H, W, C, channels_last, clip, quantize,
                            seed)
    # the rows still in play, compacted: their inputs, current bests, margins and labels
    # (on a GPU: the per-row windows; the rows' indices on the host, the points on the device)
    dev, host = be.asarray, be.to_host
    act = np.flatnonzero(host(margin > 0))
    ad = dev(act)
    xa, xb, mb, ya = X[ad], x_best[ad], margin[ad], dev(yi[act])
    shape = None
    done = 0  # iterations run
    for it in range(max_queries - 1):
        if act.size == 0:
            break
        done = it + 1
        side = _side(p_schedule(p_init, it, max_queries), D, C, H, W)
        if side != shape:  # the window's offsets (grid is affine in (h, w, c)) and channels
            shape = sh, sw = side
            offs = (grid[:sh, :sw, :] - grid[0, 0, 0]).ravel()
            chan_of = np.tile(np.arange(C), sh * sw)
        if shared:
            # AutoAttack's version: one window and one sign per channel for every row; the window
            # moves to x + 2 eps sign from the current best, projected back: x +- eps, boxed.
            # Written into the bests in place, and put back on the rows it did not improve.
            h0 = int(corner[it, 0] * (H - sh)) if H > sh else 0
            w0 = int(corner[it, 1] * (W - sw)) if W > sw else 0
            idx = grid[h0, w0, 0] + offs
            old = xb[:, idx]
            xb[:, idx] = box(xa[:, idx] + sign[it, chan_of], idx)
            m_new = _margin(model, xb, ya, threads)
            better = m_new < mb
            back = np.flatnonzero(~better)
            if back.size:
                xb[back[:, None], idx] = old[back]
        else:
            cand = _per_row(rng, xa, xb, H, W, sh, sw, grid, offs, chan_of, eps, box, dt, be)
            m_new = _margin(model, cand, ya, threads)
            better = m_new < mb
            xb = xp.where(better[:, None], cand, xb)
        mb = xp.where(better, m_new, mb)
        bar.update(1)
        out = host(mb <= 0)
        if out.any():  # fooled by the logits: out of play, with it + 2 queries
            rows, od = dev(act[out]), dev(out)
            x_best[rows], margin[rows] = xb[od], mb[od]
            queries[act[out]] = it + 2
            keep = dev(~out)
            act = act[~out]
            xa, xb, mb, ya = xa[keep], xb[keep], mb[keep], ya[keep]
    x_best[dev(act)], margin[dev(act)] = xb, mb
    queries[act] = 1 + done
    bar.close()
    return _finish_linf(model, X, x_best, yi, y, queries, t0, threads, qgrid, eps, max_queries,
                        p_init, windows, H, W, C, channels_last, clip, quantize, seed)


def _finish_linf(model, X, x_best, yi, y, queries, t0, threads, qgrid, eps, max_queries, p_init,
                 windows, H, W, C, channels_last, clip, quantize, seed):
    params = dict(eps=eps, norm="inf", max_queries=max_queries, p_init=p_init, windows=windows,
                  image_shape=(H, W, C), channels_last=channels_last, clip=clip,
                  quantize=quantize, seed=seed)
    return finish(model, X, x_best, yi, None, queries, attack="square", t0=t0, threads=threads,
                  queries=queries, own_labels=y is None, params=params, grid=qgrid)


def _kernel_layers(model):
    """The dense stack (weights, biases, activations) of a fastfool dense model on the CPU,
    whose Square loop runs in C++; None for any other model (the NumPy loop)."""
    if not isinstance(model, DenseModel) or model.device != "cpu":
        return None
    return model.layers()


# Iterations per kernel call: the progress bar and Ctrl-C move between calls, and the rows fooled
# so far leave the batch. Fixed, so results never depend on anything but the seed.
_SEGMENT = 500


def _flat_windows(corner, sign, max_queries, p_init, D, H, W, C, grid, dtype):
    """The shared windows of every iteration as flat feature indices and values: (indices,
    start offsets (one per iteration and one past the end), values of dtype)."""
    n_iter = max_queries - 1
    sizes = np.empty(n_iter, np.int64)
    parts_idx, parts_val = [None] * n_iter, [None] * n_iter
    its = np.arange(n_iter)
    sides = [_side(p_schedule(p_init, it, max_queries), D, C, H, W) for it in range(n_iter)]
    for side in set(sides):  # the iterations of one window shape together
        sh, sw = side
        sel = its[[s_ == side for s_ in sides]]
        offs = (grid[:sh, :sw, :] - grid[0, 0, 0]).ravel()
        chan_of = np.tile(np.arange(C), sh * sw)
        h0 = (corner[sel, 0] * (H - sh)).astype(np.int64) if H > sh else np.zeros(sel.size, np.int64)
        w0 = (corner[sel, 1] * (W - sw)).astype(np.int64) if W > sw else np.zeros(sel.size, np.int64)
        idx = grid[h0, w0, 0][:, None] + offs[None, :]
        val = sign[sel][:, chan_of]
        sizes[sel] = offs.size
        for k, it in enumerate(sel):
            parts_idx[it], parts_val[it] = idx[k], val[k]
    start = np.zeros(n_iter + 1, np.int64)
    np.cumsum(sizes, out=start[1:])
    flat_idx = np.concatenate(parts_idx) if n_iter else np.zeros(0, np.int64)
    flat_val = np.concatenate(parts_val).astype(dtype) if n_iter else np.zeros(0, dtype)
    return flat_idx, start, flat_val


#: Iterations between the device loop's checks for rows that left play (one copy to the host).
_DEVICE_SEGMENT = 100


def _square_device(model, X, x_best, margin, yi, queries, corner, sign, max_queries, p_init, D,
                   H, W, C, grid, box, threads, bar):
    """The shared-window L-inf loop of :func:`square` on a GPU model: the same windows, points
    and queries as the CPU's. The windows go to the device once; rows fooled by the logits stop
    changing (masked) and leave the batch every _DEVICE_SEGMENT iterations. Writes x_best,
    margin (device) and queries (host)."""
    be = model._be
    xp, dev = be.xp, be.asarray
    n_iter = max_queries - 1
    flat_idx, start, flat_val = _flat_windows(corner, sign, max_queries, p_init, D, H, W, C,
                                              grid, X.dtype)
    fi, fv = dev(flat_idx), dev(flat_val)
    yd = dev(yi)
    act = np.flatnonzero(be.to_host(margin > 0))
    for a in range(0, n_iter, _DEVICE_SEGMENT):
        if act.size == 0:
            break
        b = min(n_iter, a + _DEVICE_SEGMENT)
        ad = dev(act)
        xa, xb, mb, ya = X[ad], x_best[ad], margin[ad], yd[ad]
        live = mb > 0
        q = xp.zeros(act.size, dtype=np.int64)
        for it in range(a, b):
            idx = fi[start[it]:start[it + 1]]
            old = xb[:, idx]
            xb[:, idx] = xp.where(live[:, None], box(xa[:, idx] + fv[start[it]:start[it + 1]],
                                                     idx), old)
            m_new = _margin(model, xb, ya, threads)
            better = (m_new < mb) & live
            xb[:, idx] = xp.where(better[:, None], xb[:, idx], old)
            mb = xp.where(better, m_new, mb)
            q += live
            live = live & (mb > 0)
            bar.update(1)
        x_best[ad], margin[ad] = xb, mb
        queries[act] += be.to_host(q)
        act = act[be.to_host(live)]


def _square_kernel(layers, X, x_best, margin, yi, queries, corner, sign, max_queries, p_init, D,
                   H, W, C, grid, lo, hi, threads, bar):
    """The shared-window L-inf loop of :func:`square` through kernels.square_linf_mlp: the
    windows of every iteration laid out as flat feature indices and values, the rows in play
    handed over in segments of _SEGMENT iterations. Writes x_best, margin, queries."""
    n_iter = max_queries - 1
    flat_idx, start, flat_val = _flat_windows(corner, sign, max_queries, p_init, D, H, W, C,
                                              grid, X.dtype)
    Ws, bs, acts = layers
    act = np.flatnonzero(margin > 0)
    for a in range(0, n_iter, _SEGMENT):
        if act.size == 0:
            break
        b = min(n_iter, a + _SEGMENT)
        xb, mb, q = x_best[act], margin[act], queries[act]
        kernels.square_linf_mlp(X[act], xb, mb, yi[act], Ws, bs, acts,
                                flat_idx[start[a]:start[b]], start[a:b + 1] - start[a],
                                flat_val[start[a]:start[b]], it0=a, lo=lo, hi=hi, queries=q,
                                threads=threads)
        x_best[act], margin[act], queries[act] = xb, mb, q
        bar.update(b - a)
        act = act[mb > 0]
