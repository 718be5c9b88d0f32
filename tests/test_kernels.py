"""Every kernel against the NumPy float64 references in reference.py, over random shapes, both
dtypes, memory layouts, both SIMD paths and 1/2 threads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastfool as ff
from fastfool import kernels as K

import reference as R
from conftest import C_SIZES, D_SIZES, DTYPES, N_SIZES, arrays

ACTS = ["identity", "relu", "tanh", "logistic"]


def snapshot(*arrays_):
    return [None if a is None else a.copy() for a in arrays_]


def assert_unchanged(before, after):
    for b, a in zip(before, after):
        if b is not None:
            np.testing.assert_array_equal(a, b, err_msg="an input was modified")


@given(data=st.data())
def test_scores_matches_reference(config, data):
    _, threads = config
    dtype = data.draw(st.sampled_from(DTYPES))
    N, D, C = data.draw(N_SIZES), data.draw(D_SIZES), data.draw(C_SIZES)
    X = data.draw(arrays((N, D), dtype))
    W = data.draw(arrays((C, D), dtype, scale=1 / np.sqrt(D)))
    b = data.draw(st.one_of(st.none(), arrays((C,), dtype)))
    before = snapshot(X, W, b)
    S = K.scores(X, W, b, threads=threads)
    assert S.dtype == dtype and S.shape == (N, C)
    mag = np.abs(R.f64(X)) @ np.abs(R.f64(W)).T + (0 if b is None else np.abs(R.f64(b)))
    R.assert_close(S, R.scores(X, W, b), mag, dtype, D, "scores")
    for ep in ("softmax", "log_softmax"):
        out = K.scores(X, W, b, epilogue=ep, threads=threads)
        # score errors (<= tol*mag) move probabilities by at most that much, log-probs by twice
        row_err = R.dot_tol(dtype, D) * mag.max(axis=1, keepdims=True) if N and C else 0
        ref = R.scores(X, W, b, ep)
        R.assert_close_rows(out, ref, 2 * row_err + 16 * R.unit(dtype), dtype, ep)
        if ep == "softmax" and N:
            # exp(s - lse) carries the absolute rounding of s - lse: ~eps * |s| relative per term
            smax = np.abs(R.scores(X, W, b)).max()
            np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=0, atol=C * 4 * R.unit(dtype) * (1 + smax))
    assert_unchanged(before, [X, W, b])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e2, 1e4])
def test_softmax_extreme_logits(config, dtype, scale):
    _, threads = config
    rng = np.random.default_rng(3)
    N, D, C = 40, 3, 9
    X = rng.standard_normal((N, D)).astype(dtype)
    W = rng.standard_normal((C, D)).astype(dtype)
    W *= dtype(scale / np.abs(X @ W.T).max())  # logits up to |s| = scale
    b = np.zeros(C, dtype)
    S = K.scores(X, W, b, threads=threads)
    assert np.abs(S).max() > scale / 2
    P = K.scores(X, W, b, epilogue="softmax", threads=threads)
    L = K.scores(X, W, b, epilogue="log_softmax", threads=threads)
    assert np.all(np.isfinite(P)) and np.all(np.isfinite(L))
    assert np.all(L <= 0) and np.all((P >= 0) & (P <= 1))
    ref = R.log_softmax(S)  # the reference's own stable formula on our scores
    np.testing.assert_allclose(L, ref, rtol=8 * R.unit(dtype), atol=8 * R.unit(dtype) * scale)
    y = rng.integers(0, C, N)
    G, loss = K.ce_grad_linear(X, W, b, y, threads=threads)
    assert np.all(np.isfinite(G)) and np.all(np.isfinite(loss)) and np.all(loss >= 0)
    np.testing.assert_allclose(loss, -ref[np.arange(N), y], rtol=8 * R.unit(dtype),
                               atol=8 * R.unit(dtype) * scale)


@given(data=st.data())
def test_ce_grad_linear_matches_reference(config, data):
    _, threads = config
    dtype = data.draw(st.sampled_from(DTYPES))
    N, D, C = data.draw(N_SIZES), data.draw(D_SIZES), data.draw(C_SIZES)
    X = data.draw(arrays((N, D), dtype))
    W = data.draw(arrays((C, D), dtype, scale=3 / np.sqrt(D)))
    b = data.draw(st.one_of(st.none(), arrays((C,), dtype)))
    y = np.random.default_rng(N * 7 + C).integers(0, C, N)
    before = snapshot(X, W, b, y)
    G, loss, P = K.ce_grad_linear(X, W, b, y, return_prob=True, threads=threads)
    Gr, lr, Pr = R.ce_grad_linear(X, W, b, y)
    mag = np.abs(R.f64(X)) @ np.abs(R.f64(W)).T + (0 if b is None else np.abs(R.f64(b)))
    s_err = (R.dot_tol(dtype, D) * mag.max(axis=1, keepdims=True) if N else np.zeros((0, 1))) + 8 * R.unit(dtype)
    R.assert_close_rows(P, Pr, 2 * s_err, dtype, "prob")
    R.assert_close_rows(loss, lr, 2 * s_err[:, 0], dtype, "loss")
    # grad = (P - Y) W: errors from P (each <= 2*s_err) through sum |W|, plus the product's own
    aW = np.abs(R.f64(W))
    dmag = np.abs(Pr - np.eye(C)[y]) if N else np.zeros((0, C))
    g_err = 2 * s_err * aW.sum(axis=0) + R.dot_tol(dtype, C) * (dmag @ aW)
    R.assert_close_rows(G, Gr, g_err, dtype, "grad")
    assert_unchanged(before, [X, W, b, y])


def random_mlp(rng, sizes, dtype, acts):
    Ws = [(rng.standard_normal((a, b)) * (1.5 / np.sqrt(a))).astype(dtype) for a, b in zip(sizes, sizes[1:])]
    bs = [(rng.standard_normal(b) * 0.5).astype(dtype) for b in sizes[1:]]
    return Ws, bs, list(acts) + ["identity"]


@st.composite
def mlp_case(draw, max_width=40):
    dtype = draw(st.sampled_from(DTYPES))
    N = draw(N_SIZES)
    D = draw(st.one_of(st.sampled_from([1, 7, 64]), st.integers(1, 300)))
    depth = draw(st.integers(1, 4))
    widths = [draw(st.integers(1, max_width)) for _ in range(depth - 1)]
    C = draw(C_SIZES)
    acts = [draw(st.sampled_from(ACTS)) for _ in range(depth - 1)]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    Ws, bs, acts = random_mlp(rng, [D] + widths + [C], dtype, acts)
    X = draw(arrays((N, D), dtype))
    return dtype, X, Ws, bs, acts, rng


@given(case=mlp_case())
def test_mlp_forward_matches_reference(config, case):
    _, threads = config
    dtype, X, Ws, bs, acts, _ = case
    before = snapshot(X, *Ws, *bs)
    out = K.mlp_forward(X, Ws, bs, acts, threads=threads)
    ref = R.mlp_forward(X, Ws, bs, acts)
    err = R.mlp_error_bound(X, Ws, bs, dtype)
    R.assert_close_rows(out, ref, err, dtype, "mlp logits")
    P = K.mlp_forward(X, Ws, bs, acts, epilogue="softmax", threads=threads)
    row = err.max(axis=1, keepdims=True) if X.shape[0] else 0
    R.assert_close_rows(P, R.mlp_forward(X, Ws, bs, acts, "softmax"), 2 * row + 16 * R.unit(dtype), dtype, "mlp prob")
    assert_unchanged(before, [X, *Ws, *bs])


def grad_magnitude(X, Ws, bs, acts, y):
    """|dLoss/dX| magnitudes propagated with |W| (an upper envelope for the rounding errors)."""
    _, _, P = R.ce_grad_mlp(X, Ws, bs, acts, y)
    d = np.abs(P - np.eye(P.shape[1])[y]) + 1.0 if len(y) else np.zeros((0, P.shape[1]))
    for W in reversed(Ws):
        d = d @ np.abs(R.f64(W)).T + 1.0
    return d


@given(case=mlp_case())
def test_ce_grad_mlp_matches_reference(config, case):
    _, threads = config
    dtype, X, Ws, bs, acts, rng = case
    C = Ws[-1].shape[1]
    y = rng.integers(0, C, X.shape[0])
    before = snapshot(X, *Ws, *bs, y)
    G, loss, P = K.ce_grad_mlp(X, Ws, bs, acts, y, return_prob=True, threads=threads)
    Gr, lr, Pr = R.ce_grad_mlp(X, Ws, bs, acts, y)
    err = R.mlp_error_bound(X, Ws, bs, dtype)
    row = (err.max(axis=1, keepdims=True) if X.shape[0] else np.zeros((0, 1))) + 8 * R.unit(dtype)
    R.assert_close_rows(P, Pr, 2 * row, dtype, "prob")
    R.assert_close_rows(loss, lr, 2 * row[:, 0], dtype, "loss")
    # Normwise per row: a wrong derivative or a missing layer gives O(1) relative errors.
    tol = (2e-4 if dtype == np.float32 else 1e-12) * grad_magnitude(X, Ws, bs, acts, y).max(axis=1, keepdims=True) if X.shape[0] else 0
    R.assert_close_rows(G, Gr, tol, dtype, "grad")
    assert_unchanged(before, [X, *Ws, *bs, y])


@given(case=mlp_case())
def test_mlp_vjp_matches_reference(config, case):
    _, threads = config
    dtype, X, Ws, bs, acts, rng = case
    C = Ws[-1].shape[1]
    V = rng.standard_normal((X.shape[0], C)).astype(dtype)
    before = snapshot(X, V, *Ws)
    G, logits = K.mlp_vjp(X, Ws, bs, acts, V, return_logits=True, threads=threads)
    Gr, lr = R.mlp_vjp(X, Ws, bs, acts, V)
    R.assert_close_rows(logits, lr, R.mlp_error_bound(X, Ws, bs, dtype), dtype, "logits")
    mag = np.abs(R.f64(V)) + 1.0
    for W in reversed(Ws):
        mag = mag @ np.abs(R.f64(W)).T + 1.0
    tol = (2e-4 if dtype == np.float32 else 1e-12) * mag.max(axis=1, keepdims=True) if X.shape[0] else 0
    R.assert_close_rows(G, Gr, tol, dtype, "vjp")
    assert_unchanged(before, [X, V, *Ws])


@pytest.mark.parametrize("act", ACTS)
def test_mlp_gradient_matches_finite_differences(act):
    rng = np.random.default_rng(11)
    Ws, bs, acts = random_mlp(rng, [6, 5, 4, 3], np.float64, [act, act])
    X = rng.standard_normal((7, 6))
    y = rng.integers(0, 3, 7)
    G, _ = K.ce_grad_mlp(X, Ws, bs, acts, y)
    h = 1e-6
    fd = np.zeros_like(X)
    for j in range(X.shape[1]):
        e = np.zeros_like(X)
        e[:, j] = h
        _, lp = K.ce_grad_mlp(X + e, Ws, bs, acts, y)
        _, lm = K.ce_grad_mlp(X - e, Ws, bs, acts, y)
        fd[:, j] = (lp - lm) / (2 * h)
    np.testing.assert_allclose(G, fd, rtol=1e-5, atol=1e-7)
    assert np.abs(G).max() > 1e-3  # a real, non-trivial gradient


@given(data=st.data())
def test_backproject_matches_reference(config, data):
    _, threads = config
    dtype = data.draw(st.sampled_from(DTYPES))
    N = data.draw(N_SIZES)
    depth = data.draw(st.integers(1, 3))
    widths = [data.draw(st.integers(1, 300 if i == depth else 40)) for i in range(depth + 1)]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    acts = [data.draw(st.sampled_from(["identity", "tanh", "logistic"])) for _ in range(depth)]
    margin = data.draw(st.sampled_from([1e-6, 1e-3, 0.1]))
    Ps = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype) for a, b in zip(widths, widths[1:])]
    bs = [data.draw(st.one_of(st.none(), arrays((w,), dtype))) for w in widths[:-1]]
    H = data.draw(arrays((N, widths[0]), dtype, scale=1.5))  # some codes outside (-1, 1): clamped
    base = data.draw(st.one_of(st.none(), arrays((N, widths[-1]), dtype)))
    before = snapshot(H, *Ps, base)
    out, n_clamped = K.backproject(H, Ps, bs, acts, margin=margin, base=base, threads=threads,
                                   return_clamped=True)
    ref = R.backproject(H, Ps, bs, acts, margin, base, dtype)
    # Envelope: magnitudes through |P|; atanh/logit of clamped values are at most |log(margin)|.
    # atanh/logit amplify relative errors by up to 1/margin near the clamp: bound per layer.
    h = np.abs(R.f64(H))
    e = np.zeros_like(h)
    for P, b, a in zip(Ps, bs, acts):
        if a == "identity":
            z, amp = h, 1.0
        else:
            z, amp = np.full_like(h, abs(np.log(margin / 2)) + 1), 2.0 / margin
        z = z + (0 if b is None else np.abs(R.f64(b)))
        aP = np.abs(R.f64(P))
        mag = z @ aP
        e = ((e + 2 * R.unit(dtype)) * amp + 4 * R.unit(dtype) * z) @ aP + R.dot_tol(dtype, P.shape[0]) * mag
        h = mag
    if base is not None:
        e = e + 4 * R.unit(dtype) * np.abs(R.f64(base))
    R.assert_close_rows(out, ref, e, dtype, "backproject")
    first = acts[0]
    if first != "identity":
        lo, hi = (-1 + margin, 1 - margin) if first == "tanh" else (margin, 1 - margin)
        Hd = H.astype(dtype)
        expected = int(np.sum(Hd < dtype(lo)) + np.sum(Hd > dtype(hi)))
        if depth == 1:
            assert n_clamped == expected
        else:
            assert n_clamped >= expected
    assert_unchanged(before, [H, *Ps, base])


@given(data=st.data())
def test_fused_update_matches_reference(config, data):
    _, threads = config
    dtype = data.draw(st.sampled_from(DTYPES))
    N, D = data.draw(N_SIZES), data.draw(D_SIZES)
    x0 = data.draw(arrays((N, D), dtype))
    x = (x0 + data.draw(arrays((N, D), dtype, scale=0.1))).astype(dtype)
    g = data.draw(arrays((N, D), dtype))
    if N and data.draw(st.booleans()):
        g[0] = 0  # a zero gradient: sign(0) = 0, and an L2 step of 0
    norm = data.draw(st.sampled_from(["inf", 2]))
    step = data.draw(st.sampled_from([0.0, 0.01, 0.3]))
    eps = data.draw(st.sampled_from([0.0, 0.05, 0.5, np.inf]))
    clip = data.draw(st.sampled_from([None, (-1.0, 1.0), (None, 0.5), "per-feature"]))
    if clip == "per-feature":
        lo = -np.abs(np.random.default_rng(D).standard_normal(D)).astype(dtype)
        clip = (lo, lo + 1.5)
    before = snapshot(x, g, x0)
    out = K.fused_update(x, g, x0, step=step, eps=eps, norm=norm, clip=clip, threads=threads)
    lo, hi = (None, None) if clip is None else clip
    ref = R.fused_update(x, g, x0, step, eps, norm, lo, hi)
    scale = np.abs(R.f64(x0)) + np.abs(R.f64(x)) + step + (0 if not np.isfinite(eps) else eps)
    R.assert_close_rows(out, ref, 8 * R.unit(dtype) * (np.sqrt(D) + 1) * scale, dtype, "update")
    if np.isfinite(eps) and N and clip is None:  # (clipping may leave the ball when x0 is outside the box)
        d = R.f64(out) - R.f64(x0)
        if norm == "inf":
            assert np.abs(d).max() <= eps * (1 + 4 * R.unit(dtype)) + 4 * R.unit(dtype) * np.abs(R.f64(x0)).max()
        else:
            assert np.linalg.norm(d, axis=1).max() <= eps * (1 + 1e-5) + 1e-5 * R.unit(dtype)
    assert_unchanged(before, [x, g, x0])
    inplace = np.ascontiguousarray(x)
    K.fused_update(inplace, g, x0, step=step, eps=eps, norm=norm, clip=clip, out=inplace, threads=threads)
    np.testing.assert_array_equal(inplace, out)


@given(data=st.data())
def test_all_finite(data):
    dtype = data.draw(st.sampled_from(DTYPES))
    N, D = data.draw(N_SIZES), data.draw(D_SIZES)
    X = data.draw(arrays((N, D), dtype))
    assert K.all_finite(X)
    if N:
        bad = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        Y = X.copy()
        Y[data.draw(st.integers(0, N - 1)), data.draw(st.integers(0, D - 1))] = bad
        assert not K.all_finite(Y)
    big = np.array([[np.finfo(dtype).max, np.finfo(dtype).tiny / 2]], dtype=dtype)  # max, denormal
    assert K.all_finite(big)


def test_simd_paths_agree_bitwise_within_dtype_rounding():
    """The portable, AVX2 and AVX-512 micro-kernels compute the same products (up to rounding)."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((97, 1001)).astype(np.float32)
    W = rng.standard_normal((17, 1001)).astype(np.float32)
    from conftest import SIMD_PATHS, simd
    outs = []
    for p in SIMD_PATHS:
        with simd(p):
            assert ff.get_simd() == p
            outs.append(K.scores(X, W))
    mag = np.abs(X.astype(np.float64)) @ np.abs(W.astype(np.float64)).T
    for o in outs[1:]:
        assert np.all(np.abs(o - outs[0]) <= 2 * R.dot_tol(np.float32, 1001) * mag)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_shapes(config, dtype):
    """One large case per path: many row blocks, several kc blocks, ragged tiles everywhere."""
    _, threads = config
    rng = np.random.default_rng(12)
    N, D, C = 1001, 2051, 103
    X = rng.standard_normal((N, D)).astype(dtype)
    W = (rng.standard_normal((C, D)) / np.sqrt(D)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    y = rng.integers(0, C, N)
    mag = np.abs(R.f64(X)) @ np.abs(R.f64(W)).T + np.abs(R.f64(b))
    R.assert_close(K.scores(X, W, b, threads=threads), R.scores(X, W, b), mag, dtype, D, "scores")
    G, loss = K.ce_grad_linear(X, W, b, y, threads=threads)
    Gr, lr, Pr = R.ce_grad_linear(X, W, b, y)
    s_err = R.dot_tol(dtype, D) * mag.max(axis=1, keepdims=True) + 8 * R.unit(dtype)
    aW = np.abs(R.f64(W))
    R.assert_close_rows(G, Gr, 2 * s_err * aW.sum(axis=0) + R.dot_tol(dtype, C) * (np.abs(Pr - np.eye(C)[y]) @ aW), dtype, "grad")
    R.assert_close_rows(loss, lr, 2 * s_err[:, 0], dtype, "loss")


@pytest.mark.parametrize("dtype", DTYPES)
def test_reused_scratch_blocks_do_not_leak_stale_values(config, dtype):
    """Freed scratch blocks of >= 1 MiB (packed weights, workspaces) are kept and handed to the
    next call: filled with NaN bytes before every call, they must not reach any result."""
    from fastfool import _core
    _, threads = config
    rng = np.random.default_rng(5)
    N, D, C, H = 300, 2600, 130, 120  # packed W: >= 1.3 MiB in float32
    X = rng.standard_normal((N, D)).astype(dtype)
    W = (rng.standard_normal((C, D)) / np.sqrt(D)).astype(dtype)
    Ws = [(rng.standard_normal((D, H)) / np.sqrt(D)).astype(dtype),
          (rng.standard_normal((H, C)) / np.sqrt(H)).astype(dtype)]
    bs = [rng.standard_normal(H).astype(dtype), rng.standard_normal(C).astype(dtype)]
    y = rng.integers(0, C, N)
    K.scores(X, W, threads=threads)
    assert _core.block_cache_bytes() >= 2**20  # the packed W went back to the cache
    mag = np.abs(R.f64(X)) @ np.abs(R.f64(W)).T
    for _ in range(2):  # the first call's blocks come from the cache the previous one filled
        _core.poison_block_cache()
        R.assert_close(K.scores(X, W, threads=threads), R.scores(X, W), mag, dtype, D, "scores")
        _core.poison_block_cache()
        G, loss = K.ce_grad_linear(X, W, None, y, threads=threads)
        Gr, lr, _ = R.ce_grad_linear(X, W, None, y)
        np.testing.assert_allclose(G, Gr, rtol=0, atol=(1e-4 if dtype == np.float32 else 1e-12) * np.abs(Gr).max())
        _core.poison_block_cache()
        G, loss = K.ce_grad_mlp(X, Ws, bs, ["tanh", "identity"], y, threads=threads)
        Gr, lr, _ = R.ce_grad_mlp(X, Ws, bs, ["tanh", "identity"], y)
        np.testing.assert_allclose(G, Gr, rtol=0, atol=(1e-4 if dtype == np.float32 else 1e-12) * np.abs(Gr).max())
        np.testing.assert_allclose(loss, lr, rtol=1e-4 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_update_extreme_gradients(dtype):
    """Huge, tiny and subnormal gradients (whose max has no finite reciprocal: the scaled norm
    divides instead), over whole partial-sum groups and a tail: the L2 norm is scaled, so
    nothing overflows to inf or 0/0."""
    big = float(np.finfo(dtype).max) / 4
    tiny = float(np.finfo(dtype).tiny)
    sub = tiny / 16  # subnormal: 1 / sub overflows
    with np.errstate(over="ignore"):
        assert np.isinf(np.divide(dtype(1), dtype(sub)))
    D = 11
    x0 = np.zeros((4, D), dtype)
    g = np.array([[big] * D, [tiny] * D, [sub] * D, [-big] + [0] * (D - 2) + [tiny]], dtype)
    out = K.fused_update(x0, g, x0, step=1.0, eps=10.0, norm=2)
    np.testing.assert_allclose(np.linalg.norm(out.astype(np.float64), axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out[3], [-1] + [0] * (D - 1), atol=1e-6)
    x0 = np.zeros((3, 5), dtype)
    g = np.array([[big] * 5, [tiny] * 5, [-big, 0, 0, 0, tiny]], dtype)
    out = K.fused_update(x0, g, x0, step=0.5, eps=0.25, norm="inf")
    np.testing.assert_array_equal(out, np.where(g > 0, 0.25, np.where(g < 0, -0.25, 0)).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_when_the_true_class_probability_is_denormal(config, dtype):
    """exp(s_y - max) can be a denormal: the loss must stay finite and exact (regression)."""
    _, threads = config
    S = np.array([[0.0, -91.8, -3.0], [0.0, -750.0, 1e-7], [5.0, 5.0 - 1e-6, -1.0]], dtype)
    y = np.array([1, 1, 0])
    G, loss = K.ce_grad_linear(S, np.eye(3, dtype=dtype), None, y, threads=threads)
    ref = -R.log_softmax(S)[np.arange(3), y]
    assert np.all(np.isfinite(loss))
    np.testing.assert_allclose(loss, ref, rtol=16 * R.unit(dtype))


@given(case=mlp_case(), data=st.data())
def test_fused_step_equals_gradient_then_update(config, case, data):
    """ce_step_* compute exactly what ce_grad_* followed by fused_update compute, in one pass."""
    _, threads = config
    dtype, X, Ws, bs, acts, rng = case
    C = Ws[-1].shape[1]
    y = rng.integers(0, C, X.shape[0])
    x0 = (X + rng.standard_normal(X.shape).astype(dtype) * dtype(0.05)).astype(dtype)
    kw = dict(step=data.draw(st.sampled_from([0.01, -0.02])), eps=data.draw(st.sampled_from([0.03, np.inf])),
              norm=data.draw(st.sampled_from(["inf", 2])), clip=data.draw(st.sampled_from([None, (-1.0, 1.0)])))
    before = snapshot(X, x0)
    G, loss = K.ce_grad_mlp(X, Ws, bs, acts, y, threads=threads)
    ref = K.fused_update(X, G, x0, threads=threads, **kw)
    out, loss2 = K.ce_step_mlp(X, Ws, bs, acts, y, x0, threads=threads, return_loss=True, **kw)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(loss2, loss)
    assert_unchanged(before, [X, x0])
    if X.shape[0]:  # a linear model's step too, and in place
        W = np.ascontiguousarray(Ws[0].T)
        G, _ = K.ce_grad_linear(X, W, bs[0], y % W.shape[0], threads=threads)
        ref = K.fused_update(X, G, x0, threads=threads, **kw)
        xin = np.array(X, order="C")
        K.ce_step_linear(xin, W, bs[0], y % W.shape[0], x0, out=xin, threads=threads, **kw)
        np.testing.assert_array_equal(xin, ref)


@given(case=mlp_case(), data=st.data())
def test_multi_step_call_equals_separate_steps(config, case, data):
    """ce_step_*(steps=k) runs k steps per row block while it is in cache: bit-identical to k
    separate calls, each from the previous output (in place or into a separate out, from any
    input layout), with the loss / probabilities of the last one; the inputs untouched."""
    from conftest import with_layout, LAYOUTS
    _, threads = config
    dtype, X, Ws, bs, acts, rng = case
    C = Ws[-1].shape[1]
    y = rng.integers(0, C, X.shape[0])
    x0 = (X + rng.standard_normal(X.shape).astype(dtype) * dtype(0.05)).astype(dtype)
    k = data.draw(st.integers(1, 4))
    kw = dict(step=data.draw(st.sampled_from([0.01, -0.02])),
              eps=data.draw(st.sampled_from([0.03, np.inf])),
              norm=data.draw(st.sampled_from(["inf", 2])),
              clip=data.draw(st.sampled_from([None, (-1.0, 1.0)])),
              quantum=data.draw(st.sampled_from([0.0, 0.01])))
    if kw["clip"] is not None:
        X, x0 = np.clip(X, -1, 1).astype(dtype), np.clip(x0, -1, 1).astype(dtype)
    X = with_layout(X, data.draw(st.sampled_from(LAYOUTS)))
    W = np.ascontiguousarray(Ws[0].T)
    yl = y % W.shape[0]
    for fn, args, lab in ((K.ce_step_mlp, (Ws, bs, acts), y), (K.ce_step_linear, (W, bs[0]), yl)):
        before = snapshot(X, x0)
        ref = X
        for _ in range(k):
            ref, loss, prob = fn(ref, *args, lab, x0, threads=threads, return_loss=True,
                                 return_prob=True, **kw)
        out, loss_k, prob_k = fn(X, *args, lab, x0, threads=threads, return_loss=True,
                                 return_prob=True, steps=k, **kw)
        np.testing.assert_array_equal(out, ref)
        np.testing.assert_array_equal(loss_k, loss)
        np.testing.assert_array_equal(prob_k, prob)
        assert_unchanged(before, [X, x0])
        xin = np.array(X, order="C")
        r = fn(xin, *args, lab, x0, threads=threads, steps=k, out=xin, **kw)
        assert r is xin
        np.testing.assert_array_equal(xin, ref)


def lanes_and_rows(fn):
    """fn() on the lane path (the default where it pays) and on the row path (test hook)."""
    from fastfool import _core
    assert _core.lane_steps()
    try:
        lanes = fn()
        _core.set_lane_steps(False)
        return lanes, fn()
    finally:
        _core.set_lane_steps(True)


def assert_same_bits(a, b, names):
    for x, y, what in zip(a, b, names):
        np.testing.assert_array_equal(x, y, err_msg=what)


@given(case=mlp_case(max_width=64), data=st.data())
def test_lane_steps_give_the_row_paths_bits(config, case, data):
    """L-inf and L2 steps of narrow MLPs (widths <= 64) run with the batch in the vector lanes;
    the row path (forced through the test hook) must give the same bits for every output, with
    scalar, per-feature and one-sided clip bounds, any input layout, several steps and in place."""
    from conftest import with_layout, LAYOUTS
    _, threads = config
    dtype, X, Ws, bs, acts, rng = case
    N, D = X.shape
    C = Ws[-1].shape[1]
    y = rng.integers(0, C, N)
    x0 = with_layout((X + rng.standard_normal(X.shape).astype(dtype) * dtype(0.05)).astype(dtype),
                     data.draw(st.sampled_from(LAYOUTS)))
    lo, hi = rng.uniform(-2, 0, D).astype(dtype), rng.uniform(0, 2, D).astype(dtype)
    clip = data.draw(st.sampled_from([None, (-1.0, 1.0), (lo, hi), (None, 0.5), (lo[::-1].copy(), None)]))
    kw = dict(step=data.draw(st.sampled_from([0.01, -0.02, 0.0])),
              eps=data.draw(st.sampled_from([0.03, np.inf, 0.0])), clip=clip,
              norm=data.draw(st.sampled_from(["inf", 2])),
              steps=data.draw(st.integers(1, 4)), threads=threads, return_loss=True, return_prob=True)
    X = with_layout(X, data.draw(st.sampled_from(LAYOUTS)))
    lanes, rows = lanes_and_rows(lambda: K.ce_step_mlp(X, Ws, bs, acts, y, x0, **kw))
    assert_same_bits(lanes, rows, ("x", "loss", "prob"))
    xin = np.array(X, order="C")
    K.ce_step_mlp(xin, Ws, bs, acts, y, x0, out=xin, **kw)
    np.testing.assert_array_equal(xin, rows[0], err_msg="in place")


@given(case=mlp_case(max_width=64), data=st.data())
def test_lane_forward_gives_the_row_paths_bits(config, case, data):
    """mlp_forward of narrow MLPs whose padding the lanes save runs on lane panels; the row path
    (test hook) gives the same bits, for every epilogue and input layout."""
    from conftest import with_layout, LAYOUTS
    _, threads = config
    dtype, X, Ws, bs, acts, rng = case
    X = with_layout(X, data.draw(st.sampled_from(LAYOUTS)))
    ep = data.draw(st.sampled_from([None, "softmax", "log_softmax"]))
    lanes, rows = lanes_and_rows(lambda: K.mlp_forward(X, Ws, bs, acts, epilogue=ep, threads=threads))
    np.testing.assert_array_equal(lanes, rows)


@given(case=mlp_case(max_width=64), data=st.data())
def test_lane_gradient_gives_the_row_paths_bits(config, case, data):
    """ce_grad_mlp of narrow MLPs on lane panels: gradient, loss and probabilities with the row
    path's bits (test hook), any input layout, into an out with padded rows."""
    from conftest import with_layout, LAYOUTS
    _, threads = config
    dtype, X, Ws, bs, acts, rng = case
    y = rng.integers(0, Ws[-1].shape[1], X.shape[0])
    X = with_layout(X, data.draw(st.sampled_from(LAYOUTS)))
    out = np.zeros((X.shape[0], X.shape[1] + 3), dtype)[:, :X.shape[1]]  # row stride D + 3
    lanes, rows = lanes_and_rows(
        lambda: K.ce_grad_mlp(X, Ws, bs, acts, y, return_prob=True, threads=threads))
    assert_same_bits(lanes, rows, ("grad", "loss", "prob"))
    K.ce_grad_mlp(X, Ws, bs, acts, y, threads=threads, out=out)
    np.testing.assert_array_equal(out, rows[0], err_msg="out with padded rows")


@given(data=st.data())
def test_linear_lane_route_gives_the_row_paths_bits(config, data):
    """Linear models off the dot path (D < 128 or many classes) take the lane path of a
    one-layer MLP for their CE gradients and fused steps; the row path (test hook) gives the same
    bits: gradient, loss, probabilities and iterates, any layout, with or without a bias, L-inf
    and L2, one or several steps."""
    from conftest import with_layout, LAYOUTS
    _, threads = config
    dtype = data.draw(st.sampled_from(DTYPES))
    N = data.draw(N_SIZES)
    D = data.draw(st.one_of(st.sampled_from([1, 7, 64, 127, 200]), st.integers(1, 150)))
    C = data.draw(C_SIZES)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    W = with_layout((rng.standard_normal((C, D)) / np.sqrt(D)).astype(dtype),
                    data.draw(st.sampled_from(LAYOUTS)))
    b = data.draw(st.sampled_from([None, rng.standard_normal(C).astype(dtype)]))
    X = with_layout(data.draw(arrays((N, D), dtype)), data.draw(st.sampled_from(LAYOUTS)))
    y = rng.integers(0, C, N)
    lanes, rows = lanes_and_rows(lambda: K.ce_grad_linear(X, W, b, y, return_prob=True,
                                                          threads=threads))
    assert_same_bits(lanes, rows, ("grad", "loss", "prob"))
    kw = dict(step=data.draw(st.sampled_from([0.01, -0.02])), eps=data.draw(st.sampled_from([0.03, np.inf])),
              norm=data.draw(st.sampled_from(["inf", 2])), clip=data.draw(st.sampled_from([None, (-1.0, 1.0)])),
              steps=data.draw(st.integers(1, 4)), threads=threads, return_loss=True, return_prob=True)
    lanes, rows = lanes_and_rows(lambda: K.ce_step_linear(X, W, b, y, X, **kw))
    assert_same_bits(lanes, rows, ("x", "loss", "prob"))


@given(case=mlp_case(max_width=64), data=st.data())
def test_lane_vjp_gives_the_row_paths_bits(config, case, data):
    """mlp_vjp (DeepFool's products) on lane panels: the input gradient of sum(V * logits) and
    the logits with the row path's bits (test hook), any layout of X and V."""
    from conftest import with_layout, LAYOUTS
    _, threads = config
    dtype, X, Ws, bs, acts, rng = case
    V = with_layout(rng.standard_normal((X.shape[0], Ws[-1].shape[1])).astype(dtype),
                    data.draw(st.sampled_from(LAYOUTS)))
    X = with_layout(X, data.draw(st.sampled_from(LAYOUTS)))
    lanes, rows = lanes_and_rows(
        lambda: K.mlp_vjp(X, Ws, bs, acts, V, return_logits=True, threads=threads))
    assert_same_bits(lanes, rows, ("grad", "logits"))


@given(case=mlp_case(max_width=80), data=st.data())
def test_final_prob_of_a_step_call_is_mlp_forward_of_its_output(config, case, data):
    """ce_step_mlp(return_final_prob=True): the softmax of the returned rows, computed in the
    call on both paths (lanes and rows), bit-identical to mlp_forward of the output."""
    from fastfool import _core
    _, threads = config
    dtype, X, Ws, bs, acts, rng = case
    y = rng.integers(0, Ws[-1].shape[1], X.shape[0])
    kw = dict(step=0.01, eps=data.draw(st.sampled_from([0.03, np.inf])),
              norm=data.draw(st.sampled_from(["inf", 2])),
              quantum=data.draw(st.sampled_from([0.0, 0.01])), steps=data.draw(st.integers(1, 3)),
              threads=threads, return_final_prob=True)
    try:
        for lanes in (True, False):
            _core.set_lane_steps(lanes)
            out, final = K.ce_step_mlp(X, Ws, bs, acts, y, X, **kw)
            ref = K.mlp_forward(out, Ws, bs, acts, epilogue="softmax", threads=threads)
            np.testing.assert_array_equal(final, ref, err_msg=f"lanes={lanes}")
    finally:
        _core.set_lane_steps(True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lane_l2_steps_with_subnormal_gradients_give_the_row_paths_bits(config, dtype):
    """L2 steps whose gradients are subnormal (the scaled norm's reciprocal overflows, so it
    divides), mixed in one panel with ordinary rows: lanes and rows give the same bits, and
    every row moves by the step size."""
    _, threads = config
    rng = np.random.default_rng(5)
    N, D = 37, 64
    # relu units A (25) always on, with weights ~s in both layers: gradients ~s^2, subnormal;
    # units B on only for rows that are not 0, with first-layer weights 1: gradients ~s there
    s = 1e-21 if dtype == np.float32 else 1e-161
    W1 = np.concatenate([rng.standard_normal((D, 25)) * s, np.ones((D, 25))], axis=1)
    b1 = np.concatenate([np.ones(25), -np.ones(25)])
    Ws = [W1.astype(dtype), (rng.standard_normal((50, 10)) * s).astype(dtype)]
    bs = [b1.astype(dtype), None]
    X = rng.uniform(0, 1, (N, D)).astype(dtype)
    X[::3] = 0  # a third of the rows: only units A, subnormal gradients
    y = rng.integers(0, 10, N)
    kw = dict(step=0.01, eps=1.0, norm=2, steps=2, threads=threads, return_loss=True)
    acts = ["relu", "identity"]
    G = K.ce_grad_mlp(X, Ws, bs, acts, y, threads=threads)[0]
    gn = np.abs(G).max(axis=1)
    tiny = np.finfo(dtype).tiny
    assert (gn > 0).all() and (gn[::3] < tiny).all() and (gn > tiny).any()  # the case at hand
    lanes, rows = lanes_and_rows(lambda: K.ce_step_mlp(X, Ws, bs, acts, y, X, **kw))
    assert_same_bits(lanes, rows, ("x", "loss"))
    moved = np.linalg.norm((lanes[0] - X).astype(np.float64), axis=1)
    np.testing.assert_allclose(moved, 0.02, rtol=1e-3)  # two steps of 0.01, the same direction


@pytest.mark.parametrize("dtype", DTYPES)
def test_lane_steps_with_overflowing_logits_give_the_row_paths_bits(config, dtype):
    """Logits that overflow to +-inf (and NaN from inf - inf) take ce_block's scalar IEEE path
    in both layouts: same bits, NaN where the row path has NaN."""
    _, threads = config
    rng = np.random.default_rng(3)
    big = np.finfo(dtype).max / 8
    X = rng.uniform(-1, 1, (37, 9)).astype(dtype)
    Ws = [rng.standard_normal((9, 12)).astype(dtype), (rng.standard_normal((12, 5)) * big).astype(dtype)]
    Ws[1][:, 2] = np.abs(Ws[1][:, 2])  # some rows: +inf in two classes (inf - inf = NaN)
    Ws[1][:, 3] = np.abs(Ws[1][:, 3])
    bs = [None, None]
    y = rng.integers(0, 5, 37)
    kw = dict(step=0.01, eps=0.05, clip=(-1.0, 1.0), steps=2, threads=threads, return_loss=True,
              return_prob=True)
    lanes, rows = lanes_and_rows(lambda: K.ce_step_mlp(X, Ws, bs, ["relu", "identity"], y, X, **kw))
    logits = K.mlp_forward(X, Ws, bs, ["relu", "identity"], threads=threads)
    assert np.isinf(logits).any()  # the case this test is about
    assert_same_bits(lanes, rows, ("x", "loss", "prob"))


@given(data=st.data())
def test_ce_rows_through_lanes_give_ce_blocks_bits(config, data):
    """The cross-entropy rows of the linear gradient, the linear steps and the MLP row path go
    through lane panels (ce_rows -> ce_lanes) where C <= 64: the same bits as ce_block (the test
    hook routes them back), with or without a bias, any layout, scores that overflow to inf in
    some rows (ce_block's IEEE path for that panel) and C past 64 (ce_block throughout)."""
    from conftest import with_layout, LAYOUTS
    _, threads = config
    dtype = data.draw(st.sampled_from(DTYPES))
    N, D = data.draw(N_SIZES), data.draw(D_SIZES)
    C = data.draw(st.one_of(C_SIZES, st.sampled_from([64, 65])))
    X = data.draw(arrays((N, D), dtype))
    W = data.draw(arrays((C, D), dtype, scale=3 / np.sqrt(D)))
    if N and data.draw(st.booleans()):  # rows whose scores overflow: +-inf, inf - inf = NaN
        X[:: max(1, N // 3)] = np.where(X[:: max(1, N // 3)] >= 0, 1, -1) * (np.finfo(dtype).max / 8)
    X = with_layout(X, data.draw(st.sampled_from(LAYOUTS)))
    b = data.draw(st.one_of(st.none(), arrays((C,), dtype)))
    y = np.random.default_rng(N * 7 + C).integers(0, C, N)
    lanes, rows = lanes_and_rows(
        lambda: K.ce_grad_linear(X, W, b, y, return_prob=True, threads=threads))
    assert_same_bits(lanes, rows, ("grad", "loss", "prob"))
    kw = dict(step=0.01, eps=0.05, steps=2, threads=threads, return_loss=True, return_prob=True)
    lanes, rows = lanes_and_rows(lambda: K.ce_step_linear(X, W, b, y, X, **kw))
    assert_same_bits(lanes, rows, ("x", "loss", "prob"))
    # an MLP with a layer wider than 64: the row path, whose logits go through ce_rows
    rng = np.random.default_rng(C)
    Ws, bs, acts = random_mlp(rng, [D, 70, C], dtype, ["tanh"])
    lanes, rows = lanes_and_rows(
        lambda: K.ce_grad_mlp(X, Ws, bs, acts, y, return_prob=True, threads=threads))
    assert_same_bits(lanes, rows, ("grad", "loss", "prob"))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", 2**31])
def test_steps_must_be_a_positive_integer(bad):
    X = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="steps"):
        K.ce_step_linear(X, np.ones((2, 3), np.float32), None, [0, 1], X, step=0.1, steps=bad)
    with pytest.raises(ValueError, match="steps"):
        K.ce_step_mlp(X, [np.ones((3, 2), np.float32)], [None], ["identity"], [0, 1], X,
                      step=0.1, steps=bad)


@pytest.mark.parametrize("C", range(1, 14))
def test_narrow_outputs_every_class_group_and_row_tail(config, C):
    """Narrow products (C <= 12, D >= 128, contiguous rows) take the dot-product path on AVX2:
    every class-group split (groups of 1..6), an odd last row, a D that is not a multiple of 8,
    and C = 13 just past it (the tile path). Scores and the CE gradient against float64."""
    _, threads = config
    rng = np.random.default_rng(100 + C)
    for N, D in ((1, 128), (7, 131), (97, 789)):
        X = rng.standard_normal((N, D)).astype(np.float32)
        W = (rng.standard_normal((C, D)) / np.sqrt(D)).astype(np.float32)
        b = rng.standard_normal(C).astype(np.float32)
        y = rng.integers(0, C, N)
        mag = np.abs(R.f64(X)) @ np.abs(R.f64(W)).T + np.abs(R.f64(b))
        R.assert_close(K.scores(X, W, b, threads=threads), R.scores(X, W, b), mag, np.float32, D, "scores")
        G, loss = K.ce_grad_linear(X, W, b, y, threads=threads)
        Gr, lr, Pr = R.ce_grad_linear(X, W, b, y)
        s_err = R.dot_tol(np.float32, D) * mag.max(axis=1, keepdims=True) + 8 * R.unit(np.float32)
        aW = np.abs(R.f64(W))
        bound = 2 * s_err * aW.sum(axis=0) + R.dot_tol(np.float32, C) * (np.abs(Pr - np.eye(C)[y]) @ aW)
        R.assert_close_rows(G, Gr, bound, np.float32, "grad")
        R.assert_close_rows(loss, lr, 2 * s_err[:, 0], np.float32, "loss")


def test_narrow_path_results_do_not_depend_on_layout(config):
    """The dot-product path is chosen by shape, not layout: Fortran-ordered or strided X and W
    give bit-identical scores and gradients to C-ordered ones."""
    _, threads = config
    rng = np.random.default_rng(9)
    X = rng.standard_normal((41, 300)).astype(np.float32)
    W = rng.standard_normal((10, 300)).astype(np.float32) / 17
    y = rng.integers(0, 10, 41)
    S = K.scores(X, W, threads=threads)
    G, loss = K.ce_grad_linear(X, W, None, y, threads=threads)
    Xs = np.zeros((41, 600), np.float32)[:, ::2]
    Xs[...] = X
    for Xl, Wl in ((np.asfortranarray(X), W), (Xs, np.asfortranarray(W)), (X, np.asfortranarray(W))):
        np.testing.assert_array_equal(K.scores(Xl, Wl, threads=threads), S)
        G2, loss2 = K.ce_grad_linear(Xl, Wl, None, y, threads=threads)
        np.testing.assert_array_equal(G2, G)
        np.testing.assert_array_equal(loss2, loss)


@given(data=st.data())
def test_diff_norms_matches_reference_at_any_magnitude(config, data):
    """Per-row L2 and L-inf norms of A - B against a float64 (scaled) reference, from tiny to
    huge magnitudes (the direct sum of squares and the overflow-safe scaled path), any layout."""
    _, threads = config
    dtype = data.draw(st.sampled_from(DTYPES))
    N, D = data.draw(st.integers(0, 40)), data.draw(D_SIZES)
    big = 1e30 if dtype == np.float32 else 1e300
    scale = data.draw(st.sampled_from([1 / big, 1e-3, 1.0, 1e3, big / 1e3]))
    A = data.draw(arrays((N, D), dtype, scale=scale))
    B = data.draw(arrays((N, D), dtype, scale=scale))
    l2, linf = K.diff_norms(A, B, threads=threads)
    d = R.f64(A) - R.f64(B)  # exact for float32 inputs; |d| <= 2 * 1e300 stays finite
    ref_inf = np.abs(d).max(axis=1) if D else np.zeros(N)
    m = np.where(ref_inf > 0, ref_inf, 1.0)
    ref_l2 = m * np.sqrt(((d / m[:, None]) ** 2).sum(axis=1))
    assert l2.dtype == dtype and linf.dtype == dtype
    np.testing.assert_allclose(linf, ref_inf.astype(dtype), rtol=R.unit(dtype), atol=0)
    np.testing.assert_allclose(l2, ref_l2, rtol=4 * R.unit(dtype) + 2 * D * np.finfo(np.float64).eps,
                               atol=0)
    # with max |A| from the same pass: the norms' bits unchanged, max |A| exactly NumPy's
    l2m, linfm, amax = K.diff_norms(A, B, threads=threads, return_max_abs=True)
    np.testing.assert_array_equal(l2m, l2)
    np.testing.assert_array_equal(linfm, linf)
    np.testing.assert_array_equal(amax, np.abs(A).max(axis=1) if D else np.zeros(N, dtype))
    if N and D:  # a NaN in A shows in max |A|
        A = np.array(A)
        A[0, D // 2] = np.nan
        assert np.isnan(K.diff_norms(A, B, threads=threads, return_max_abs=True)[2][0])


@given(data=st.data())
def test_argmax_rows_is_numpys_argmax(config, data):
    """kernels.argmax_rows against numpy.argmax(axis=1) and the values there: ties (first
    wins), NaN anywhere in a row (the first NaN), +-inf, a single column, any layout."""
    from conftest import with_layout, LAYOUTS
    _, threads = config
    dtype = data.draw(st.sampled_from(DTYPES))
    N, C = data.draw(N_SIZES), data.draw(st.one_of(C_SIZES, st.just(1)))
    P = data.draw(arrays((N, C), dtype))
    rng = np.random.default_rng(N * 31 + C)
    if N and C > 1:
        P[rng.random(N) < 0.3, rng.integers(0, C)] = P.max() if P.size else 0  # ties
        specials = np.array([np.nan, np.inf, -np.inf], dtype)
        hit = rng.random((N, C)) < data.draw(st.sampled_from([0.0, 0.05, 0.5]))
        P[hit] = rng.choice(specials, hit.sum())
    before = snapshot(P)
    P = with_layout(P, data.draw(st.sampled_from(LAYOUTS)))
    idx, val = K.argmax_rows(P, threads=threads)
    ref = np.argmax(P, axis=1)
    assert idx.dtype == np.int64 and val.dtype == dtype
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_array_equal(val, P[np.arange(N), ref])
    assert_unchanged(before, [np.ascontiguousarray(P)])


def test_argmax_rows_refuses_bad_input():
    with pytest.raises(ValueError, match="P: needs at least one column"):
        K.argmax_rows(np.zeros((3, 0), np.float32))
    with pytest.raises(ValueError, match="P: expected a 2-D"):
        K.argmax_rows(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="P: expected float32 or float64"):
        K.argmax_rows(np.zeros((3, 2), np.int64))
    from fastfool import _core
    P = np.zeros((3, 2), np.float32)
    with pytest.raises(TypeError, match="idx: expected int64"):
        _core.argmax_rows(P, np.zeros(3, np.int32), None, 1)
    with pytest.raises(ValueError, match="idx: expected shape"):
        _core.argmax_rows(P, np.zeros(4, np.int64), None, 1)


def _with_specials(P, rng, data):
    """P with ties, +-inf and NaN dropped in (a drawn share of entries), in place."""
    N, C = P.shape
    if N and C > 1:
        P[rng.random(N) < 0.3, rng.integers(0, C)] = P.max() if P.size else 0  # ties
        specials = np.array([np.nan, np.inf, -np.inf, np.finfo(P.dtype).max, -np.finfo(P.dtype).max],
                            P.dtype)
        hit = rng.random((N, C)) < data.draw(st.sampled_from([0.0, 0.05, 0.5]))
        P[hit] = rng.choice(specials, hit.sum())
    return P


def _top2_reference(P, dup):
    """The verdict's reduction in NumPy: argmax, its value, the rivals' masked max (float64)."""
    N = P.shape[0]
    idx = np.argmax(P, axis=1)
    r = np.arange(N)
    other = P.astype(np.float64)
    if dup is not None:
        other[dup[None, :] == dup[idx][:, None]] = -np.inf
    other[r, idx] = -np.inf
    return idx, P[r, idx].astype(np.float64), other.max(axis=1) if N else np.zeros(0)


@given(data=st.data())
def test_top2_rows_is_the_masked_numpy_max(config, data):
    """kernels.top2_rows against argmax + a masked copy + max (the verdict's old NumPy code):
    ties (second = top), NaN anywhere (NumPy's propagation), +-inf, the float maximum, one
    column (second = -inf), duplicate-class groups, any layout; S untouched."""
    from conftest import with_layout, LAYOUTS
    _, threads = config
    dtype = data.draw(st.sampled_from(DTYPES))
    N, C = data.draw(N_SIZES), data.draw(st.one_of(C_SIZES, st.just(1)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    P = _with_specials(data.draw(arrays((N, C), dtype)), rng, data)
    dup = None
    if C > 1 and data.draw(st.booleans()):  # groups of equal classes: each maps to its first
        g = rng.integers(0, max(1, C // 2), C)
        dup = np.array([int(np.flatnonzero(g == g[c])[0]) for c in range(C)], dtype=np.int64)
    before = snapshot(P)
    P = with_layout(P, data.draw(st.sampled_from(LAYOUTS)))
    idx, top, second = K.top2_rows(P, dup, threads=threads)
    ridx, rtop, rsecond = _top2_reference(P, dup)
    assert idx.dtype == np.int64 and top.dtype == second.dtype == np.float64
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(top, rtop)
    np.testing.assert_array_equal(second, rsecond)
    assert_unchanged(before, [np.ascontiguousarray(P)])


def _dlr_reference(S, y, t):
    """The DLR loss and its logit gradient, vectorised in float64 NumPy (apgd's first code: a
    stable sort of every row, then five scattered updates in this order)."""
    L = np.asarray(S, np.float64)
    n, C = L.shape
    r = np.arange(n)
    order = np.argsort(-L, axis=1, kind="stable")
    i1, i3, i4 = order[:, 0], order[:, min(2, C - 1)], order[:, min(3, C - 1)]
    if t is None:
        u = np.where(i1 == y, order[:, min(1, C - 1)], i1)
        den = L[r, i1] - L[r, i3] + 1e-12
        w3, w4 = 1.0, 0.0
    else:
        u = t
        den = L[r, i1] - 0.5 * (L[r, i3] + L[r, i4]) + 1e-12
        w3, w4 = 0.5, 0.5
    num = L[r, y] - L[r, u]
    G = np.zeros_like(L)
    np.add.at(G, (r, y), -1.0 / den)
    np.add.at(G, (r, u), 1.0 / den)
    np.add.at(G, (r, i1), num / den ** 2)
    np.add.at(G, (r, i3), -w3 * num / den ** 2)
    if w4:
        np.add.at(G, (r, i4), -w4 * num / den ** 2)
    return -num / den, G.astype(S.dtype)


@given(data=st.data())
def test_dlr_rows_is_the_numpy_dlr(config, data):
    """kernels.dlr_rows against the vectorised NumPy DLR (untargeted and targeted): the same
    bits for the loss and the gradient, with ties (small integers), NaN and +-inf anywhere, the
    float range, any layout; S untouched; too few classes refused."""
    from conftest import with_layout, LAYOUTS
    _, threads = config
    dtype = data.draw(st.sampled_from(DTYPES))
    targeted = data.draw(st.booleans())
    N = data.draw(N_SIZES)
    C = data.draw(st.one_of(st.integers(4, 13), st.sampled_from([64, 1000])))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    if data.draw(st.booleans()):  # ties everywhere
        P = rng.integers(-2, 3, (N, C)).astype(dtype)
    else:
        P = _with_specials(data.draw(arrays((N, C), dtype)), rng, data)
    y = rng.integers(0, C, N)
    t = (y + rng.integers(1, C, N)) % C if targeted else None
    before = snapshot(P)
    P = with_layout(P, data.draw(st.sampled_from(LAYOUTS)))
    with np.errstate(all="ignore"):
        loss, V = K.dlr_rows(P, y, t, threads=threads)
        rloss, rV = _dlr_reference(P, y, t)
    assert loss.dtype == np.float64 and V.dtype == dtype and V.shape == (N, C)
    np.testing.assert_array_equal(loss, rloss)
    np.testing.assert_array_equal(V, rV)
    assert_unchanged(before, [np.ascontiguousarray(P)])


def test_dlr_rows_refuses_bad_arguments():
    with pytest.raises(ValueError, match="at least 3"):
        K.dlr_rows(np.zeros((2, 2)), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="at least 4"):
        K.dlr_rows(np.zeros((2, 3)), np.zeros(2, np.int64), np.ones(2, np.int64))
    with pytest.raises(ValueError, match="y"):
        K.dlr_rows(np.zeros((2, 5)), np.array([0, 5]))
    with pytest.raises(ValueError, match="t"):
        K.dlr_rows(np.zeros((2, 5)), np.array([0, 1]), np.array([0, -1]))
    with pytest.raises(ValueError, match="indices"):
        ff._core.dlr_rows(np.zeros((2, 5)), np.array([0, 7]), None, np.empty(2), np.empty((2, 5)), 1)
    assert K.dlr_rows(np.zeros((0, 2)), np.zeros(0, np.int64))[1].shape == (0, 2)


@given(data=st.data())
def test_softmax_at_matches_float64_softmax(config, data):
    """kernels.softmax_at against NumPy's float64 softmax at the given columns (the argmax and
    random ones), relative error within 8 float64 ulps; NaN exactly for rows whose max is not
    finite; scores spanning the float range, any layout."""
    from conftest import with_layout, LAYOUTS
    _, threads = config
    dtype = data.draw(st.sampled_from(DTYPES))
    N, C = data.draw(N_SIZES), data.draw(st.one_of(C_SIZES, st.just(1)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    scale = data.draw(st.sampled_from([1.0, 30.0, 1e3]))
    P = _with_specials(data.draw(arrays((N, C), dtype, scale=scale)), rng, data)
    P = with_layout(P, data.draw(st.sampled_from(LAYOUTS)))
    idx = np.argmax(P, axis=1) if data.draw(st.booleans()) else rng.integers(0, C, N)
    before = snapshot(P)
    out = K.softmax_at(P, idx, threads=threads)
    S = P.astype(np.float64)
    m = S.max(axis=1, keepdims=True) if N else np.zeros((0, 1))
    with np.errstate(all="ignore"):
        e = np.exp(S - m)
        ref = e[np.arange(N), idx] / e.sum(axis=1)
    fin = np.isfinite(m[:, 0])
    assert out.dtype == np.float64 and out.shape == (N,)
    assert np.isnan(out[~fin]).all()
    tiny = np.finfo(np.float64).tiny
    normal = fin & (ref >= tiny)
    rel = np.abs(out[normal] - ref[normal]) / ref[normal]
    assert (rel <= 8 * np.finfo(np.float64).eps).all(), rel.max()
    assert (np.abs(out[fin & ~normal] - ref[fin & ~normal]) <= tiny).all()  # flushed underflow
    assert_unchanged(before, [np.ascontiguousarray(P)])


@given(data=st.data())
def test_max_abs_rows_is_numpys(config, data):
    """kernels.max_abs_rows against abs().max(axis=1): NaN where a row has one, +-inf, signed
    zeros, zero columns (0), any layout, odd widths (vector tails)."""
    from conftest import with_layout, LAYOUTS
    _, threads = config
    dtype = data.draw(st.sampled_from(DTYPES))
    N, D = data.draw(N_SIZES), data.draw(st.one_of(st.just(0), D_SIZES))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    X = _with_specials(data.draw(arrays((N, D), dtype)), rng, data)
    if X.size:
        X[rng.random(X.shape) < 0.05] = -0.0
    X = with_layout(X, data.draw(st.sampled_from(LAYOUTS)))
    out = K.max_abs_rows(X, threads=threads)
    ref = np.abs(X).max(axis=1) if D else np.zeros(N, dtype)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, ref)


def test_verdict_reductions_refuse_bad_input():
    S = np.zeros((3, 2))
    with pytest.raises(ValueError, match="S: needs at least one column"):
        K.top2_rows(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="dup: values must be class indices"):
        K.top2_rows(S, np.array([0, 2]))
    with pytest.raises(ValueError, match="dup: expected shape"):
        K.top2_rows(S, np.array([0]))
    with pytest.raises(ValueError, match="idx: values must be column indices"):
        K.softmax_at(S, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="idx: expected shape"):
        K.softmax_at(S, np.array([0, 1]))
    with pytest.raises(TypeError, match="idx: expected integer"):
        K.softmax_at(S, np.zeros(3))
    with pytest.raises(TypeError, match="X: expected float32 or float64"):
        K.max_abs_rows(np.zeros((3, 2), np.int64))
    from fastfool import _core
    with pytest.raises(ValueError, match="idx: values must be column indices"):  # the binding checks too
        _core.softmax_at(S, np.array([0, 5, 1], np.int64), np.empty(3), 1)
    with pytest.raises(TypeError, match="dup: expected dtype int64"):
        _core.top2_rows(S, np.zeros(2, np.int32), np.empty(3, np.int64), np.empty(3), np.empty(3), 1)


def test_empty_is_cache_line_aligned():
    for shape, dtype in (((3, 5), np.float32), ((0, 4), np.float64), (7, np.float64), ((2, 0, 3), np.float32)):
        a = K.empty(shape, dtype)
        assert a.shape == (shape if isinstance(shape, tuple) else (shape,))
        assert a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.size == 0 or a.ctypes.data % 64 == 0
    with pytest.raises(ValueError, match="negative"):
        K.empty((2, -1))


@pytest.mark.parametrize("simd_path", [pytest.param("generic", marks=pytest.mark.slow), "avx2",
                                       "avx512"])
def test_streamed_large_gradients_equal_the_cached_path(simd_path):
    """Gradients and back-projections of 32 MiB or more go out with streaming stores when the
    output is cache-line aligned (kernel-allocated or K.empty): bit-identical to the same kernel
    writing through the cache into a 16-byte-aligned out=, and right against float64 on sampled
    rows."""
    from conftest import AVAILABLE_PATHS, SIMD_PATHS, simd
    if simd_path not in AVAILABLE_PATHS:
        pytest.skip(f"no {simd_path} on this CPU")
    if simd_path not in SIMD_PATHS:
        pytest.skip(f"{simd_path}: the middle SIMD path runs in CI (HYPOTHESIS_PROFILE=ci)")
    rng = np.random.default_rng(11)
    N, D, C = 11000, 784, 10  # 34.5 MB of float32 gradient, rows of 49 cache lines
    X = rng.standard_normal((N, D)).astype(np.float32)
    W = (rng.standard_normal((C, D)) / 28).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    y = rng.integers(0, C, N)
    raw = K.empty(N * D + 4, np.float32)
    misaligned = raw[4:].reshape(N, D)  # 16 bytes past a cache line: the cached path
    assert misaligned.ctypes.data % 64 == 16
    Ws = [(rng.standard_normal((D, 20)) / 28).astype(np.float32), (rng.standard_normal((20, C)) / 4).astype(np.float32)]
    bs = [np.zeros(20, np.float32), b]
    # a back-projection 20 -> 784 of N codes: the same 34.5 MB output, streamed or cached
    codes = rng.standard_normal((N, 20)).astype(np.float32)
    Ps = [(rng.standard_normal((20, 50)) / 4).astype(np.float32),
          (rng.standard_normal((50, D)) / 7).astype(np.float32)]
    with simd(simd_path):
        for threads in (1, 2) if simd_path != "generic" else (2,):  # generic: the slow reference path
            G, loss = K.ce_grad_linear(X, W, b, y, threads=threads)
            assert G.ctypes.data % 64 == 0
            G2, loss2 = K.ce_grad_linear(X, W, b, y, out=misaligned, threads=threads)
            np.testing.assert_array_equal(G, G2)
            np.testing.assert_array_equal(loss, loss2)
            H, _ = K.ce_grad_mlp(X, Ws, bs, ["tanh", "identity"], y, threads=threads)
            H2, _ = K.ce_grad_mlp(X, Ws, bs, ["tanh", "identity"], y, out=misaligned, threads=threads)
            np.testing.assert_array_equal(H, H2)
            B1 = K.backproject(codes, Ps, None, "identity", threads=threads)
            assert B1.ctypes.data % 64 == 0
            B2 = K.backproject(codes, Ps, None, "identity", out=misaligned, threads=threads)
            np.testing.assert_array_equal(B1, B2)
    rows = rng.choice(N, 50, replace=False)
    Gr, _, Pr = R.ce_grad_linear(X[rows], W, b, y[rows])
    mag = np.abs(R.f64(X[rows])) @ np.abs(R.f64(W)).T + np.abs(R.f64(b))
    s_err = R.dot_tol(np.float32, D) * mag.max(axis=1, keepdims=True) + 8 * R.unit(np.float32)
    aW = np.abs(R.f64(W))
    bound = 2 * s_err * aW.sum(axis=0) + R.dot_tol(np.float32, C) * (np.abs(Pr - np.eye(C)[y[rows]]) @ aW)
    R.assert_close_rows(G[rows], Gr, bound, np.float32, "grad")
    acts = ["identity", "identity"]
    ref = R.backproject(codes[rows], Ps, [None, None], acts, 1e-6)
    err = R.backproject_error_bound(codes[rows], Ps, [None, None], acts, 1e-6, np.float32)
    assert np.all(np.abs(B1[rows] - ref) <= err), "streamed back-projection against float64"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [1, 3, 10, 17, 130])
def test_softmax_rows_do_not_depend_on_their_batch(dtype, C):
    """The softmax epilogue runs over blocks of rows (one vector exp per run of finite rows); a
    row's probabilities must be bit-identical whether it is scored alone, in a batch, next to
    NaN / infinite rows, or written through a strided output, and equal the float64 softmax."""
    rng = np.random.default_rng(C)
    N, D = 203, 37
    X = rng.standard_normal((N, D)).astype(dtype)
    X[5, 0] = np.nan
    X[6, 1] = np.inf
    X[70:75] *= 1e3  # saturated rows
    W = rng.standard_normal((C, D)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    for ep in ("softmax", "log_softmax"):
        whole = K.scores(X, W, b, epilogue=ep)
        alone = np.concatenate([K.scores(X[i:i + 1], W, b, epilogue=ep) for i in range(N)])
        np.testing.assert_array_equal(whole, alone)
        wide = np.full((N, C + 5), 7.0, dtype)
        K.scores(X, W, b, epilogue=ep, out=wide[:, :C])
        np.testing.assert_array_equal(wide[:, :C], whole)
        assert (wide[:, C:] == 7).all()
        m = ff.MLP([W.T.copy()], [b], activation="identity")
        np.testing.assert_array_equal(K.mlp_forward(X, m.coefs_, m.intercepts_, ["identity"],
                                                    epilogue=ep), whole)
    P = K.scores(X, W, b, epilogue="softmax")
    ok = np.isfinite(X).all(axis=1)
    S = X[ok].astype(np.float64) @ W.T.astype(np.float64) + b
    E = np.exp(S - S.max(axis=1, keepdims=True))
    # absolute slack for the tiny probabilities of the saturated rows: the logits' own rounding
    # (|s| ~ 1e3) moves exp(s - max) by ~1e-4 relative there
    f32 = dtype == np.float32
    np.testing.assert_allclose(P[ok], E / E.sum(axis=1, keepdims=True),
                               rtol=1e-4 if f32 else 1e-11, atol=1e-7 if f32 else 1e-14)
    assert np.isnan(P[5]).all()
