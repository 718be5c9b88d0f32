"""Bad input: each case ends in a clear Python exception naming the argument, never a crash,
and inputs are never modified."""

from __future__ import annotations

import numpy as np
import pytest

import fastfool as ff
from fastfool import kernels as K


@pytest.fixture
def lin():
    rng = np.random.default_rng(0)
    return ff.LinearModel(rng.standard_normal((3, 8)), rng.standard_normal(3))


@pytest.fixture
def mlp():
    rng = np.random.default_rng(1)
    return ff.MLP([rng.standard_normal((8, 5)), rng.standard_normal((5, 3))],
                  [np.zeros(5), np.zeros(3)], activation="tanh")


@pytest.mark.parametrize("which", ["lin", "mlp"])
def test_wrong_feature_count_names_both_shapes(which, request):
    m = request.getfixturevalue(which)
    with pytest.raises(ValueError, match=r"X: expected shape \(4, 8\).*got \(4, 7\)"):
        m.predict(np.zeros((4, 7)))


@pytest.mark.parametrize("bad", [np.zeros(8), np.zeros((2, 2, 8)), np.float64(1.0)])
def test_wrong_rank(lin, bad):
    with pytest.raises(ValueError, match="X: expected a 2-D array"):
        lin.predict_proba(bad)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.float16, bool, np.complex64])
def test_integer_float16_bool_complex_inputs_are_refused(lin, dtype):
    with pytest.raises(TypeError, match="X: expected"):
        lin.predict(np.zeros((2, 8), dtype=dtype))


def test_object_and_non_array_inputs(lin):
    with pytest.raises(TypeError, match="X"):
        lin.predict(np.array([[object()] * 8], dtype=object))
    with pytest.raises(TypeError, match="X"):
        lin.predict("not an array")
    with pytest.raises(TypeError, match="X"):
        lin.predict([[1.0, 2.0], [3.0]])  # ragged


def test_kernel_dtype_mismatch_is_refused():
    X = np.zeros((2, 4), np.float32)
    W = np.zeros((3, 4), np.float64)
    with pytest.raises(TypeError, match="W: dtype float64 does not match float32"):
        K.scores(X, W)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_policy(lin, mlp, bad):
    X = np.ones((3, 8))
    X[1, 4] = bad
    keep = X.copy()
    for m in (lin, mlp):
        with pytest.raises(ValueError, match="X: contains NaN or infinity"):
            m.predict_proba(X)
        with pytest.raises(ValueError, match="X: contains NaN or infinity"):
            m.loss_gradient(X, [0, 1, 2])
        P = m.predict_proba(X, check_finite=False)  # opt out: other rows are unaffected
        assert np.all(np.isfinite(P[[0, 2]]))
        if np.isnan(bad):  # NaN propagates to its row (inf may saturate, e.g. through tanh)
            assert np.all(np.isnan(P[1]))
    np.testing.assert_array_equal(X, keep)


def test_labels_outside_classes(lin):
    with pytest.raises(ValueError, match="label 3 is not one of the model's classes"):
        lin.loss_gradient(np.zeros((2, 8)), [0, 3])
    with pytest.raises(ValueError, match=r"y: expected 2 labels"):
        lin.loss_gradient(np.zeros((2, 8)), [0, 1, 2])
    with pytest.raises(ValueError, match=r"y: class index 5 is outside \[0, 3\)"):
        K.ce_grad_linear(np.zeros((2, 8)), lin.coef_, lin.intercept_, [0, 5])
    with pytest.raises(TypeError, match="y: expected integer class indices"):
        K.ce_grad_linear(np.zeros((2, 8)), lin.coef_, lin.intercept_, [0.5, 1.0])


def test_empty_batches_work(lin, mlp):
    for m in (lin, mlp):
        X = np.zeros((0, 8))
        assert m.predict_proba(X).shape == (0, 3)
        assert m.predict(X).shape == (0,)
        assert m.loss_gradient(X, np.zeros(0, int)).shape == (0, 8)
    assert mlp.hidden(np.zeros((0, 8)), 0).shape == (0, 5)
    assert mlp.backproject(np.zeros((0, 5)), 0).shape == (0, 8)


def test_threads_below_one(lin):
    for t in (0, -3):
        with pytest.raises(ValueError, match="threads: must be >= 1"):
            lin.predict(np.zeros((1, 8)), threads=t)
    with pytest.raises(TypeError, match="threads"):
        lin.predict(np.zeros((1, 8)), threads=1.5)


def test_degenerate_models_are_refused():
    with pytest.raises(ValueError, match="zero classes"):
        ff.LinearModel(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="zero features"):
        ff.LinearModel(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="width 0"):
        ff.MLP([np.zeros((4, 0)), np.zeros((0, 3))])
    with pytest.raises(ValueError, match="expects 5 inputs but layer 0 has 6 outputs"):
        ff.MLP([np.zeros((4, 6)), np.zeros((5, 3))])
    with pytest.raises(ValueError, match="W: contains NaN"):
        ff.LinearModel(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="activation: unknown 'gelu'"):
        ff.MLP([np.zeros((4, 6)), np.zeros((6, 3))], activation="gelu")
    with pytest.raises(ValueError, match="classes: expected 3 labels"):
        ff.LinearModel(np.zeros((3, 4)), classes=[1, 2])
    with pytest.raises(ValueError, match="distinct"):
        ff.LinearModel(np.zeros((3, 4)), classes=[1, 2, 2])


def test_model_owns_its_weights():
    W = np.ones((2, 3))
    m = ff.LinearModel(W)
    W[:] = 5.0
    np.testing.assert_array_equal(m.coef_, 1.0)


def test_out_argument_checks():
    X = np.ones((4, 6))
    W = np.ones((3, 6))
    with pytest.raises(ValueError, match=r"out: expected shape \(4, 3\)"):
        K.scores(X, W, out=np.empty((3, 4)))
    with pytest.raises(TypeError, match="out: expected dtype float64"):
        K.scores(X, W, out=np.empty((4, 3), np.float32))
    ro = np.empty((4, 3))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out: array is read-only"):
        K.scores(X, W, out=ro)
    with pytest.raises(ValueError, match="out: must not share memory with x"):
        K.fused_update(X, X * 0, X.copy(), step=0.1, out=X[::-1])
    out = np.empty((4, 3))
    assert K.scores(X, W, out=out) is out


def test_kernel_argument_errors():
    X = np.ones((4, 6))
    with pytest.raises(ValueError, match="epilogue"):
        K.scores(X, np.ones((3, 6)), epilogue="sigmoid")
    with pytest.raises(ValueError, match=r"b: expected shape \(3,\)"):
        K.scores(X, np.ones((3, 6)), np.ones(4))
    with pytest.raises(ValueError, match=r"weights\[1\]: expected 5 input rows"):
        K.mlp_forward(X, [np.ones((6, 5)), np.ones((4, 2))], None, "relu")
    with pytest.raises(ValueError, match="last layer must be 'identity'"):
        K.ce_grad_mlp(X, [np.ones((6, 5)), np.ones((5, 2))], None, "tanh", [0, 1, 0, 1])
    with pytest.raises(ValueError, match="relu is not invertible"):
        K.backproject(np.ones((2, 3)), [np.ones((3, 6))], None, ["relu"])
    with pytest.raises(ValueError, match="norm"):
        K.fused_update(X, X, X, step=0.1, norm=1)
    with pytest.raises(ValueError, match="eps"):
        K.fused_update(X, X, X, step=0.1, eps=-1)
    with pytest.raises(ValueError, match="clip: lo must be <= hi"):
        K.fused_update(X, X, X, step=0.1, clip=(1.0, 0.0))
    with pytest.raises(ValueError, match="clip: expected a pair"):
        K.fused_update(X, X, X, step=0.1, clip=3.0)


def test_compiled_module_rejects_bad_arguments_directly():
    """The bindings check too (defence in depth for the fuzzing issue)."""
    from fastfool import _core
    X = np.ones((4, 6))
    with pytest.raises(TypeError):
        _core.scores(X.astype(np.int64), np.ones((3, 6)), None, 0, np.empty((4, 3)), 1)
    with pytest.raises(ValueError, match="X: has 6 columns but W has 5"):
        _core.scores(X, np.ones((3, 5)), None, 0, np.empty((4, 3)), 1)
    with pytest.raises(ValueError, match="threads"):
        _core.scores(X, np.ones((3, 6)), None, 0, np.empty((4, 3)), 0)
    with pytest.raises(ValueError, match="epilogue"):
        _core.scores(X, np.ones((3, 6)), None, 7, np.empty((4, 3)), 1)
    with pytest.raises(ValueError, match="y: class index"):
        _core.ce_grad_linear(X, np.ones((3, 6)), None, np.array([0, 1, 2, 3]), np.empty((4, 6)),
                             None, None, 1)


def test_simd_switch():
    with pytest.raises(ValueError, match="simd: expected one of"):
        ff.set_simd("sse9")
    prev = ff.get_simd()
    try:
        assert ff.set_simd("generic") == "generic"
        assert ff.get_simd() == "generic"
    finally:
        ff.set_simd(prev)


def test_simd_env_variable_forces_generic():
    import subprocess
    import sys
    code = "import fastfool as ff; print(ff.get_simd())"
    out = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ,
                         "FASTFOOL_SIMD": "generic"}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "generic"


def test_from_sklearn_refuses_unsupported():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    with pytest.raises(ValueError, match="not fitted"):
        ff.from_sklearn(LogisticRegression())
    with pytest.raises(ValueError, match="not fitted"):
        ff.from_sklearn(RandomForestClassifier())
    with pytest.raises(TypeError, match="unsupported estimator"):
        ff.from_sklearn(object())


def test_non_native_byte_order_and_unpickled_arrays(lin):
    import pickle
    X = np.random.default_rng(0).standard_normal((5, 8))
    expected = lin.predict_proba(X)
    np.testing.assert_array_equal(lin.predict_proba(X.astype(">f8")), expected)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(lin)).predict_proba(pickle.loads(pickle.dumps(X))),
                                  expected)


def test_misaligned_contiguous_inputs_reach_the_kernels_aligned():
    """A C-contiguous float array at an odd address (frombuffer at an offset) is copied before
    a kernel reads it (x86 tolerates the loads; UBSan and other CPUs do not): the fast path of
    the input check must not pass it through."""
    from fastfool._checks import float_array
    for dt in (np.float32, np.float64):
        raw = np.zeros(6 * np.dtype(dt).itemsize + 1, np.uint8)
        v = np.frombuffer(raw.data, dtype=dt, count=6, offset=1).reshape(2, 3)
        assert v.flags.c_contiguous and not v.flags.aligned
        out = float_array(v, "X")
        assert out.flags.aligned
        np.testing.assert_array_equal(out, v)
        good = np.ones((2, 3), dt)
        assert float_array(good, "X") is good  # the fast path: no copy
