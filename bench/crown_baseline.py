"""A plain NumPy CROWN, as a user would write it from the paper (Zhang et al. 2018), for the
certify benchmark's baseline row: batched over rows, L-inf box (with the clip box) or L2 ball,
relu (CROWN's adaptive lower slope) and tanh / logistic (a chord-slope pair of parallel lines,
offset to the function's extremes over the interval), intermediate bounds by back-substitution,
the radius by 20 bisection steps below an upper bound. No rounding control: its bounds are
those of exact arithmetic evaluated in float64, so it is a speed reference, not a certificate.
"""

from __future__ import annotations

import numpy as np


def _act(a, z):
    if a == "relu":
        return np.maximum(z, 0)
    if a == "tanh":
        return np.tanh(z)
    if a == "logistic":
        return 1 / (1 + np.exp(-z))
    return z


def _dact(a, z):
    if a == "tanh":
        return 1 - np.tanh(z) ** 2
    s = 1 / (1 + np.exp(-z))
    return s * (1 - s)


def _lines(a, l, u):
    """(aL, bL, aU, bU): a(z) between aL z + bL and aU z + bU on [l, u]."""
    if a == "identity":
        one = np.ones_like(l)
        return one, 0 * l, one, 0 * l
    if a == "relu":
        up = u > 0
        dn = l < 0
        k = np.where(up & dn, u / np.maximum(u - l, 1e-300), np.where(up, 1.0, 0.0))
        bU = np.where(up & dn, -k * l, 0.0)
        kl = np.where(up & dn, (u > -l).astype(float), k)
        return kl, 0 * l, k, bU
    w = np.maximum(u - l, 1e-12)
    k = (_act(a, u) - _act(a, l)) / w
    cands = [l, u]
    # the points where the derivative equals the chord's slope (two, symmetric for tanh /
    # logistic about their centre), clipped into the interval
    kk = np.clip(k, 1e-300, None)
    if a == "tanh":
        t = np.sqrt(np.clip(1 - kk, 0, 1))
        z = np.arctanh(np.clip(t, 0, 1 - 1e-16))
    else:
        disc = np.clip(1 - 4 * kk, 0, 1)
        s = (1 + np.sqrt(disc)) / 2
        z = np.log(np.clip(s, 1e-300, 1 - 1e-16) / np.clip(1 - s, 1e-300, 1))
    for c in (z, -z):
        cands.append(np.clip(c, l, u))
    vals = np.stack([_act(a, c) - k * c for c in cands])
    return k, vals.min(axis=0), k, vals.max(axis=0)


def _min_linear(A, c, x0, eps, p, lo, hi):
    """min of A . x + c over the region (A (n, m, D))."""
    if p == "inf":
        lb, ub = x0 - eps[:, None], x0 + eps[:, None]
        if lo is not None:
            lb = np.maximum(lb, lo)
        if hi is not None:
            ub = np.minimum(ub, hi)
        mid, rad = (lb + ub) / 2, (ub - lb) / 2
        return np.einsum("nmd,nd->nm", A, mid) - np.einsum("nmd,nd->nm", np.abs(A), rad) + c
    return np.einsum("nmd,nd->nm", A, x0) - eps[:, None] * np.linalg.norm(A, axis=2) + c


def _backsub(Lam, const, j, Ws, bs, lines, x0, eps, p, lo, hi):
    """min of Lam . z_j + const, z_j the pre-activation of layer j (Lam (n, m, width_j))."""
    for i in range(j, -1, -1):
        const = const + Lam @ bs[i]
        LW = Lam @ Ws[i].T
        if i == 0:
            return _min_linear(LW, const, x0, eps, p, lo, hi)
        aL, bL, aU, bU = lines[i - 1]
        pos, neg = np.maximum(LW, 0), np.minimum(LW, 0)
        Lam = pos * aL[:, None, :] + neg * aU[:, None, :]
        const = const + np.einsum("nmh,nh->nm", pos, bL) + np.einsum("nmh,nh->nm", neg, bU)
    raise AssertionError


def margins(Ws, bs, acts, x0, eps, k, p, lo, hi):
    """Lower bounds of logit_k - logit_j (n, C) over the region."""
    n = x0.shape[0]
    lines = []
    for j in range(len(Ws) - 1):
        w = Ws[j].shape[1]
        I = np.broadcast_to(np.concatenate([np.eye(w), -np.eye(w)]), (n, 2 * w, w))
        both = _backsub(I, np.zeros((n, 2 * w)), j, Ws, bs, lines, x0, eps, p, lo, hi)
        lines.append(_lines(acts[j], both[:, :w], -both[:, w:]))
    Wl = Ws[-1]
    C = Wl.shape[1]
    E = np.eye(C)
    Lam = E[k][:, None, :] - E[None, :, :]  # (n, C, C): logit_k - logit_j
    out = _backsub(Lam, np.zeros((n, C)), len(Ws) - 1, Ws, bs, lines, x0, eps, p, lo, hi)
    out[np.arange(n), k] = np.inf
    return out


def certify(Ws, bs, acts, X, pred, upper, p="inf", lo=None, hi=None, steps=20):
    """Per row the radius by bisection on [0, upper]."""
    a, b = np.zeros(len(X)), np.asarray(upper, np.float64).copy()
    for _ in range(steps):
        mid = (a + b) / 2
        ok = np.all(margins(Ws, bs, acts, X, mid, pred, p, lo, hi) > 0, axis=1)
        a, b = np.where(ok, mid, a), np.where(ok, b, mid)
    return a
