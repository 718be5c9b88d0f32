"""Plain NumPy float64 references for every kernel, written independently of the C++ code,
plus error bounds used to compare float32/float64 results with them."""

from __future__ import annotations

import numpy as np


def f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


# -- references --------------------------------------------------------------------------------
def log_softmax(S):
    S = f64(S)
    m = S.max(axis=1, keepdims=True)
    return S - m - np.log(np.exp(S - m).sum(axis=1, keepdims=True))


def softmax(S):
    return np.exp(log_softmax(S))


def scores(X, W, b=None, epilogue=None):
    S = f64(X) @ f64(W).T
    if b is not None:
        S = S + f64(b)
    if epilogue == "softmax":
        return softmax(S)
    if epilogue == "log_softmax":
        return log_softmax(S)
    return S


def ce_grad_linear(X, W, b, y):
    S = scores(X, W, b)
    L = log_softmax(S) if S.shape[0] else S
    P = np.exp(L)
    loss = -L[np.arange(len(y)), y]
    D = P.copy()
    D[np.arange(len(y)), y] -= 1.0
    return D @ f64(W), loss, P


def act(name, z):
    if name == "identity":
        return z
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    if name == "logistic":
        return 1.0 / (1.0 + np.exp(-z))
    raise ValueError(name)


def act_grad(name, z):
    """d act / d z at the pre-activation z."""
    if name == "identity":
        return np.ones_like(z)
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "logistic":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 - s)
    raise ValueError(name)


def mlp_forward(X, Ws, bs, acts, epilogue=None):
    h = f64(X)
    for W, b, a in zip(Ws, bs, acts):
        z = h @ f64(W)
        if b is not None:
            z = z + f64(b)
        h = act(a, z)
    if epilogue == "softmax":
        return softmax(h)
    if epilogue == "log_softmax":
        return log_softmax(h)
    return h


def ce_grad_mlp(X, Ws, bs, acts, y):
    """Back-propagation through pre-activations (the kernels use outputs instead)."""
    h = f64(X)
    zs, hs = [], [h]
    for W, b, a in zip(Ws, bs, acts):
        z = h @ f64(W) + (0 if b is None else f64(b))
        h = act(a, z)
        zs.append(z)
        hs.append(h)
    L = log_softmax(h)
    n = np.arange(len(y))
    loss = -L[n, y]
    d = np.exp(L)
    P = d.copy()
    d[n, y] -= 1.0
    for i in range(len(Ws) - 1, -1, -1):
        d = d * act_grad(acts[i], zs[i]) if i < len(Ws) - 1 else d
        d = d @ f64(Ws[i]).T
    return d, loss, P


def mlp_vjp(X, Ws, bs, acts, V):
    """Input gradient of sum(V * logits), by back-propagation through pre-activations."""
    h = f64(X)
    zs = []
    for W, b, a in zip(Ws, bs, acts):
        z = h @ f64(W) + (0 if b is None else f64(b))
        zs.append(z)
        h = act(a, z)
    d = f64(V)
    for i in range(len(Ws) - 1, -1, -1):
        if i < len(Ws) - 1:
            d = d * act_grad(acts[i], zs[i])
        d = d @ f64(Ws[i]).T
    return d, h


def inverse_act(name, h, margin, dtype=np.float64):
    """Clamp bounds are rounded to `dtype` as the kernel computes them (1 - margin in float32
    is not 1 - margin in float64, and atanh's slope there is ~1/(2*margin))."""
    one, m = dtype(1), dtype(margin)
    h = f64(h)
    if name == "identity":
        return h
    if name == "tanh":
        return np.arctanh(np.clip(h, f64(-one + m), f64(one - m)))
    if name == "logistic":
        v = np.clip(h, f64(m), f64(one - m))
        return np.log(v / (1 - v))
    raise ValueError(name)


def backproject(H, pinvs, biases, acts, margin, base=None, dtype=np.float64):
    h = f64(H)
    for P, b, a in zip(pinvs, biases, acts):
        z = inverse_act(a, h, margin, dtype)
        if b is not None:
            z = z - f64(b)
        h = z @ f64(P)
    return h if base is None else h + f64(base)


def backproject_error_bound(H, pinvs, biases, acts, margin, dtype):
    """Per-entry bound on a `dtype` back-projection's rounding error, following the float64
    reference's intermediates: atanh/logit amplify an input error by their slope, which grows
    like 1/(1-h^2) (1/(h(1-h))) towards the clamp; the slope is taken at the worst point of the
    error interval (capped at the clamp's slope), so near-boundary codes get the wide tolerance
    they need and well-conditioned ones a tight one."""
    u = unit(dtype)
    h = f64(H)
    e = np.zeros_like(h)
    for P, b, a in zip(pinvs, biases, acts):
        r = e + 2 * u * np.abs(h)  # the input's error, its own rounding included
        one, m = dtype(1), dtype(margin)
        if a == "identity":
            amp = 1.0
        elif a == "tanh":  # clamped to +-c: codes whose whole error interval is beyond c are exact
            c = f64(one - m)
            t = np.minimum(np.abs(h) + r, c)
            amp = np.where(np.abs(h) - r >= c, 0.0, 1 / ((1 - t) * (1 + t)))
        elif a == "logistic":  # clamped to [m, 1 - m]: distance d to the nearer end
            lo, hi = f64(m), f64(one - m)
            d = np.maximum(np.minimum(h - lo, hi - h) - r, 0.0) + lo
            amp = np.where((h + r <= lo) | (h - r >= hi), 0.0, 1 / (d * (1 - d)))
        else:
            raise ValueError(a)
        z = inverse_act(a, h, margin, dtype)
        if b is not None:
            z = z - f64(b)
        aP = np.abs(f64(P))
        az = np.abs(z) + (0 if b is None else np.abs(f64(b)))
        e = (r * amp + 4 * u * az) @ aP + dot_tol(dtype, P.shape[0]) * (az @ aP)
        h = z @ f64(P)
    return e


def fused_update(x, g, x0, step, eps, norm, lo=None, hi=None):
    x, g, x0 = f64(x), f64(g), f64(x0)
    if norm == "inf":
        v = np.clip(x + step * np.sign(g), x0 - eps, x0 + eps)
    else:
        n = np.linalg.norm(g, axis=1, keepdims=True)
        v = x + np.where(n > 0, step * g / np.where(n > 0, n, 1), 0.0)
        d = v - x0
        dn = np.linalg.norm(d, axis=1, keepdims=True)
        with np.errstate(invalid="ignore"):  # eps = inf: 0 * inf in the branch not taken
            v = np.where(dn > eps, x0 + d * (eps / np.where(dn > 0, dn, 1)), v)
    if lo is not None:
        v = np.maximum(v, f64(lo))
    if hi is not None:
        v = np.minimum(v, f64(hi))
    return v


# -- error bounds ------------------------------------------------------------------------------
def unit(dtype):
    return float(np.finfo(dtype).eps)


def dot_tol(dtype, k):
    """Relative (to |a|.|b|) error allowed for a length-k dot product in `dtype`: a
    statistical bound (errors grow like sqrt(k)), far below what a wrong term would cause."""
    return 16 * unit(dtype) * (np.sqrt(k) + 2)


def assert_close(out, ref, mag, dtype, k, what="result"):
    """|out - ref| <= dot_tol * mag elementwise (mag: the |a|.|b| magnitude of each entry)."""
    out = np.asarray(out)
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != {ref.shape}"
    assert np.all(np.isfinite(out)), f"{what}: non-finite values {out!r} ref {ref!r}"
    tol = dot_tol(dtype, k) * (f64(mag) + np.finfo(np.float64).tiny)
    err = np.abs(f64(out) - ref)
    worst = np.max(err / tol) if err.size else 0.0
    assert worst <= 1.0, f"{what}: error {worst:.3g}x the allowed bound (max abs err {err.max():.3g})"


def assert_close_rows(out, ref, row_err, dtype, what="result", rel_extra=8):
    """|out - ref| <= row_err (per row, broadcast) + a few ulps of |ref|."""
    out = np.asarray(out)
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != {ref.shape}"
    assert np.all(np.isfinite(out)), f"{what}: non-finite values {out!r} ref {ref!r}"
    tol = f64(row_err) + rel_extra * unit(dtype) * (np.abs(ref) + 1e-300)
    err = np.abs(f64(out) - ref)
    worst = np.max(err / tol) if err.size else 0.0
    assert worst <= 1.0, f"{what}: error {worst:.3g}x the allowed bound (max abs err {err.max():.3g})"


def mlp_error_bound(X, Ws, bs, dtype):
    """Per-entry bound on the logits' rounding error for a Lipschitz-1 activation stack:
    e_l = e_{l-1} |W_l| + tol_k * (|h_{l-1}| |W_l| + |b_l|) + ulps of the activation."""
    h = np.abs(f64(X))
    e = np.zeros_like(h)
    for W, b in zip(Ws, bs):
        aW = np.abs(f64(W))
        mag = h @ aW + (0 if b is None else np.abs(f64(b)))
        e = e @ aW + dot_tol(dtype, W.shape[0]) * mag + 4 * unit(dtype) * (mag + 1)
        h = mag  # |act(z)| <= |z| for all four activations... and logistic <= 1 + |z|
        h = h + 1
    return e


def tree_vote(feature, threshold, left, right, value, offsets, divisor, X32):
    """scikit-learn's tree-classifier vote from its per-tree arrays (children local to a tree,
    -1 at leaves), walked one level at a time for all rows: the float32 rows compared in double
    (``x <= threshold`` goes left), the leaves' values summed in tree order, divided by the
    divisor; (first argmax per row, the quotients)."""
    X32 = np.asarray(X32, np.float32)
    N = X32.shape[0]
    acc = np.zeros((N, value.shape[1]))
    rows = np.arange(N)
    for t in range(len(offsets) - 1):
        a = offsets[t]
        node = np.zeros(N, np.int64)
        while True:
            inner = left[a + node] != -1
            if not inner.any():
                break
            n = node[inner]
            go_left = X32[rows[inner], feature[a + n]].astype(np.float64) <= threshold[a + n]
            node[inner] = np.where(go_left, left[a + n], right[a + n])
        acc += value[a + node]
    acc /= divisor
    return acc.argmax(axis=1) if value.shape[1] else np.zeros(N, np.int64), acc
