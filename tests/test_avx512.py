"""The AVX-512 table against the AVX2 table: the same tile geometry and the same chains of
multiply-adds, so every kernel must give the same bits on both paths (and the NumPy references
of test_kernels.py / test_numerics.py hold on it: conftest's SIMD_PATHS includes "avx512" on a
CPU that has it). Skipped, with the reason shown by pytest's -ra summary, on CPUs without
AVX-512."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastfool as ff
from fastfool import _core
from fastfool import kernels as K

from conftest import simd

pytestmark = pytest.mark.skipif(
    _core.detected_simd() != "avx512",
    reason=f"no AVX-512 (F/VL/DQ/BW) on this CPU: detected {_core.detected_simd()!r}")

ACTS = ["relu", "tanh", "logistic", "identity"]


def _both(fn):
    """fn() under AVX2 and under AVX-512, on 1 and 2 threads: the four results."""
    outs = []
    for path in ("avx2", "avx512"):
        with simd(path):
            assert ff.get_simd() == path
            for t in (1, 2):
                outs.append(fn(t))
    return outs


def _same(outs):
    first = outs[0]
    for o in outs[1:]:
        for a, b in zip(first if isinstance(first, tuple) else (first,),
                        o if isinstance(o, tuple) else (o,)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_avx512_is_forcible_and_reported():
    assert ff.set_simd("avx512") == "avx512"
    assert ff.simd_info()["detected"] == "avx512"
    assert ff.simd_info()["tile_float32"] == (6, 16, 256, 96)  # the AVX2 geometry
    ff.set_simd("avx2")
    assert ff.get_simd() == "avx2"
    ff.set_simd("auto")
    assert ff.get_simd() == "avx512"


shapes = st.tuples(st.sampled_from([0, 1, 5, 17, 97, 300]), st.sampled_from([1, 3, 10, 33]),
                   st.sampled_from([1, 7, 64, 257, 530]))


@settings(deadline=None)
@given(shape=shapes, dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31),
       transposed=st.booleans(), scale=st.sampled_from([1e-30, 1.0, 1e30]))
def test_products_and_gradients_same_bits(shape, dtype, seed, transposed, scale):
    """scores (plain and with the softmax / log-softmax epilogues), the linear and MLP
    cross-entropy gradients, and back-projection: the same bits on both paths, for shapes with
    tile tails, non-contiguous inputs and extreme magnitudes."""
    N, C, D = shape
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((D, N)).T if transposed else rng.standard_normal((N, D))) * scale
    X = X.astype(dtype)
    W = (rng.standard_normal((C, D)) / np.sqrt(D)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    y = rng.integers(0, C, N)
    with np.errstate(all="ignore"):
        _same(_both(lambda t: K.scores(X, W, b, threads=t)))
        _same(_both(lambda t: K.scores(X, W, b, epilogue="softmax", threads=t)))
        _same(_both(lambda t: K.scores(X, W, b, epilogue="log_softmax", threads=t)))
        _same(_both(lambda t: K.ce_grad_linear(X, W, b, y, threads=t)))
        H = 1 + int(rng.integers(1, 40))
        Ws = [(rng.standard_normal((D, H)) / np.sqrt(D)).astype(dtype),
              (rng.standard_normal((H, C)) / np.sqrt(H)).astype(dtype)]
        bs = [rng.standard_normal(H).astype(dtype), b]
        act = ACTS[seed % 4]
        _same(_both(lambda t: K.ce_grad_mlp(X, Ws, bs, [act, "identity"], y, threads=t)))
        _same(_both(lambda t: K.mlp_forward(X, Ws, bs, [act, "identity"], threads=t)))
        P = (rng.standard_normal((C, D)) / np.sqrt(C)).astype(dtype)
        codes = rng.standard_normal((N, C)).astype(dtype)
        _same(_both(lambda t: K.backproject(codes, [P], None, "identity", threads=t)))


@settings(deadline=None)
@given(N=st.sampled_from([0, 1, 15, 16, 17, 200]), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**31), norm=st.sampled_from(["inf", 2]), steps=st.sampled_from([1, 3]),
       hidden=st.sampled_from([(), (50, 20), (64,), (5,)]), lanes=st.booleans())
def test_fused_steps_same_bits(N, dtype, seed, norm, steps, hidden, lanes):
    """The fused attack steps (linear and MLP, L-inf and L2, clipped, several steps per call),
    through the lane path and the row path: the same bits on both SIMD paths."""
    rng = np.random.default_rng(seed)
    D, C = 64, 10
    X = rng.uniform(0, 1, (N, D)).astype(dtype)
    y = rng.integers(0, C, N)
    widths = (D, *hidden, C)
    Ws = [(rng.standard_normal((a, c)) / np.sqrt(a)).astype(dtype) for a, c in zip(widths, widths[1:])]
    bs = [rng.standard_normal(c).astype(dtype) for c in widths[1:]]
    acts = [ACTS[(seed + i) % 3] for i in range(len(hidden))] + ["identity"]
    kw = dict(step=0.02, eps=0.1, norm=norm, clip=(0.0, 1.0), steps=steps, return_loss=True)
    prev = _core.lane_steps()
    _core.set_lane_steps(lanes)
    try:
        if hidden:
            _same(_both(lambda t: K.ce_step_mlp(X, Ws, bs, acts, y, X, threads=t, **kw)))
        else:
            _same(_both(lambda t: K.ce_step_linear(X, Ws[0].T, bs[0], y, X, threads=t, **kw)))
    finally:
        _core.set_lane_steps(prev)


@pytest.mark.parametrize("fn", ["exp", "tanh", "logistic", "log1p"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_math_same_bits(fn, dtype):
    """The vector exp / tanh / logistic / log1p over 400k values (all magnitudes, the special
    values, every tail length 0..40): the same bits as AVX2's."""
    rng = np.random.default_rng(3)
    finfo = np.finfo(dtype)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, -1.5, finfo.tiny, finfo.max,
                        -finfo.max, 88.0, -87.0, 89.0, -104.0, 709.0, -708.5, 710.0, 9.05, -9.1])
    x = np.concatenate([rng.uniform(-30, 30, 200000),
                        10.0 ** rng.uniform(-30, 30, 200000) * rng.choice([-1, 1], 200000),
                        special]).astype(dtype)
    outs = []
    for path in ("avx2", "avx512"):
        with simd(path):
            outs.append(_core.vmath(fn, x))
            outs.extend(_core.vmath(fn, x[:n]) for n in range(41))
    half = len(outs) // 2
    for a, b in zip(outs[:half], outs[half:]):
        np.testing.assert_array_equal(a, b)


def test_attacks_same_bits(digits, digits_logreg):
    """Whole attacks (FGSM, PGD with a random start, DeepFool) on a fitted scikit-learn model and
    an MLP: the same x_adv and verdicts on both paths."""
    from sklearn.neural_network import MLPClassifier
    X, y = digits
    X = X[:400]
    y = y[:400]
    mlp = MLPClassifier((30,), max_iter=50, random_state=0)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp.fit(X, y)
    for est, dtype in ((digits_logreg, np.float32), (digits_logreg, np.float64),
                       (mlp, np.float32), (mlp, np.float64)):
        m = ff.from_sklearn(est, dtype=dtype)
        Xd = X.astype(dtype)
        for attack in (lambda: ff.fgsm(m, Xd, y, eps=0.05),
                       lambda: ff.pgd(m, Xd, y, eps=0.05, steps=7, random_start=True, seed=2),
                       lambda: ff.deepfool(m, Xd, y)):
            res = []
            for path in ("avx2", "avx512"):
                with simd(path):
                    res.append(attack())
            np.testing.assert_array_equal(res[0].x_adv, res[1].x_adv)
            np.testing.assert_array_equal(res[0].success, res[1].success)
