"""The model API against scikit-learn estimators trained on load_digits, label mapping,
hidden layers and back-projection."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.linear_model import (LogisticRegression, Perceptron, RidgeClassifier,
                                  SGDClassifier)
from sklearn.neural_network import MLPClassifier
from sklearn.svm import LinearSVC

import fastfool as ff

import reference as R


def fit_quiet(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: the fit quality is not under test
        return est.fit(X, y)


# (estimator factory, subset of classes or None, label transform)
LINEAR = {
    "logreg-multinomial": (lambda: LogisticRegression(max_iter=300), None),
    "logreg-binary": (lambda: LogisticRegression(max_iter=300), [3, 8]),
    "linearsvc": (lambda: LinearSVC(), None),
    "linearsvc-binary": (lambda: LinearSVC(), [1, 7]),
    "sgd": (lambda: SGDClassifier(random_state=0), None),
    "ridge": (lambda: RidgeClassifier(), None),
    "ridge-binary": (lambda: RidgeClassifier(), [0, 6]),
    "perceptron": (lambda: Perceptron(random_state=0), None),
    "logreg-no-intercept": (lambda: LogisticRegression(max_iter=300, fit_intercept=False), None),
}


_FITS: dict = {}


def fit_linear(name, X, y, shared=None):
    """LINEAR[name] fitted once for the module (both dtypes' tests read the same estimator);
    `shared`, when given, is a fit of the same kind of estimator on the same rows."""
    if name not in _FITS:
        _FITS[name] = shared if shared is not None else fit_quiet(LINEAR[name][0](), X, y)
    return _FITS[name]


def subset(X, y, classes):
    if classes is None:
        return X, y
    keep = np.isin(y, classes)
    return X[keep], y[keep]


def assert_scores_match(ours, theirs, dtype):
    theirs = np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape and ours.dtype == dtype
    rtol = 1e-5 if dtype == np.float32 else 1e-10
    # relative to the scale of the scores: cancellation near 0 is not a disagreement
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * np.abs(theirs).max())


@pytest.mark.parametrize("name", sorted(LINEAR))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_models_match_sklearn(digits, digits_logreg, name, dtype):
    X, y = subset(*digits, LINEAR[name][1])
    est = fit_linear(name, X, y, digits_logreg if name == "logreg-multinomial" else None)
    m = ff.from_sklearn(est, dtype=dtype)
    assert isinstance(m, ff.LinearModel) and m.dtype == dtype
    np.testing.assert_array_equal(m.classes_, est.classes_)
    assert m.binary == (len(est.classes_) == 2)
    assert_scores_match(m.decision_function(X), est.decision_function(X), dtype)
    pred = m.predict(X)
    if dtype == np.float64:
        np.testing.assert_array_equal(pred, est.predict(X))
    else:  # float32 rounding may flip rows whose top two scores tie to 1e-6
        assert np.mean(pred == est.predict(X)) > 0.995
    P = m.predict_proba(X)
    np.testing.assert_allclose(P.sum(axis=1), 1, atol=1e-5 if dtype == np.float32 else 1e-12)
    if isinstance(est, LogisticRegression):
        tol = 1e-5 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(P, est.predict_proba(X), rtol=tol, atol=tol * 1e-3)
        np.testing.assert_allclose(m.predict_log_proba(X), est.predict_log_proba(X),
                                   rtol=tol, atol=tol)


@pytest.mark.parametrize("activation", ["identity", "relu", "tanh", "logistic"])
@pytest.mark.parametrize("classes", [None, [2, 5]], ids=["10-class", "binary"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mlp_matches_sklearn(digits, activation, classes, dtype):
    X, y = subset(*digits, classes)
    key = ("mlp", activation, classes is None)
    if key not in _FITS:  # one fit for both dtypes' tests
        _FITS[key] = fit_quiet(MLPClassifier((20, 7), activation=activation, max_iter=60,
                                                    random_state=0), X, y)
    est = _FITS[key]
    m = ff.from_sklearn(est, dtype=dtype)
    assert isinstance(m, ff.MLP) and m.binary == (classes is not None)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    P = m.predict_proba(X)
    np.testing.assert_allclose(P, est.predict_proba(X), rtol=tol, atol=tol * 1e-2)
    pred = m.predict(X)
    agree = np.mean(pred == est.predict(X))
    assert agree == 1.0 if dtype == np.float64 else agree > 0.995
    # logits: sklearn has no decision_function for MLPs; compare with the reference forward
    S = m.decision_function(X)
    ref = R.mlp_forward(X, est.coefs_, est.intercepts_, [activation] * 2 + ["identity"])
    ref = ref[:, 0] if classes is not None else ref
    np.testing.assert_allclose(S, ref, rtol=tol, atol=tol * np.abs(ref).max())


def test_string_labels_map_both_ways(digits):
    X, y = subset(*digits, [0, 1, 2])
    names = np.array(["zero", "one", "two"])[y]
    est = LogisticRegression(max_iter=300).fit(X, names)
    m = ff.from_sklearn(est)
    np.testing.assert_array_equal(m.predict(X), est.predict(X))
    G = m.loss_gradient(X[:5], names[:5])
    W, b = m.coef_, m.intercept_
    idx = np.searchsorted(est.classes_, names[:5])
    Gr, _, _ = R.ce_grad_linear(X[:5], W, b, idx)
    np.testing.assert_allclose(G, Gr, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="'three' is not one of the model's classes"):
        m.loss_gradient(X[:2], np.array(["one", "three"]))
    with pytest.raises(ValueError, match="not one of the model's classes"):
        m.loss_gradient(X[:2], np.array([0, 1]))


def test_arbitrary_int_labels(digits):
    X, y = subset(*digits, [4, 9])
    est = Perceptron(random_state=0).fit(X, y * 10 - 3)  # classes 37 and 87
    m = ff.from_sklearn(est)
    np.testing.assert_array_equal(m.classes_, [37, 87])
    np.testing.assert_array_equal(m.predict(X), est.predict(X))
    g = m.loss_gradient(X[:3], 87)  # one label for every row
    assert g.shape == (3, 64)
    with pytest.raises(ValueError, match="label 4 is not one of"):
        m.loss_gradient(X[:3], [37, 4, 87])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_gradient_linear_binary_and_multiclass(digits, digits_logreg, dtype):
    X, y = digits
    for classes in (None, [3, 5]):
        Xs, ys = subset(X, y, classes)
        est = digits_logreg if classes is None else LogisticRegression(max_iter=300).fit(Xs, ys)
        m = ff.from_sklearn(est, dtype=dtype)
        G, loss = m.loss_gradient(Xs, ys, return_loss=True)
        # independent: the binary model is softmax over [0, s]; CE equals sklearn's log-loss
        lp = est.predict_log_proba(Xs)
        idx = np.searchsorted(est.classes_, ys)
        np.testing.assert_allclose(loss, -lp[np.arange(len(ys)), idx],
                                   rtol=1e-4 if dtype == np.float32 else 1e-9, atol=1e-6)
        P = est.predict_proba(Xs)
        Y = np.eye(len(est.classes_))[idx]
        if classes is None:
            Gr = (P - Y) @ est.coef_
        else:  # dL/ds = sigmoid(s) - y, ds/dx = w
            Gr = (P[:, 1] - Y[:, 1])[:, None] * est.coef_[0]
        np.testing.assert_allclose(G, Gr, rtol=1e-4 if dtype == np.float32 else 1e-9,
                                   atol=1e-5 if dtype == np.float32 else 1e-11)


@pytest.mark.parametrize("activation", ["identity", "relu", "tanh", "logistic"])
def test_mlp_loss_gradient_finite_differences(activation):
    rng = np.random.default_rng(2)
    sizes = [9, 6, 5]
    for n_out in (4, 1):  # softmax, then logistic (binary) output
        Ws = [rng.standard_normal((a, b)) for a, b in zip(sizes + [], sizes[1:] + [n_out])]
        bs = [rng.standard_normal(w.shape[1]) for w in Ws]
        m = ff.MLP(Ws, bs, activation=activation)
        X = rng.standard_normal((5, 9))
        y = rng.integers(0, m.n_classes, 5)
        G, loss = m.loss_gradient(X, y, return_loss=True)
        h = 1e-6
        fd = np.empty_like(X)
        for j in range(9):
            e = np.zeros_like(X)
            e[:, j] = h
            fd[:, j] = (m.loss_gradient(X + e, y, return_loss=True)[1] -
                        m.loss_gradient(X - e, y, return_loss=True)[1]) / (2 * h)
        np.testing.assert_allclose(G, fd, rtol=1e-5, atol=1e-7)
        P = m.predict_proba(X)
        # -log(P) of a probability within 1e-12 of 1 carries P's rounding (1e-16 absolute)
        np.testing.assert_allclose(loss, -np.log(P[np.arange(5), y]), rtol=1e-10, atol=1e-14)


def test_hidden_layers_index_like_a_list(digits):
    X, y = subset(*digits, [0, 1, 2, 3])
    est = fit_quiet(MLPClassifier((50, 20, 2), activation="identity", max_iter=50, random_state=21), X, y)
    m = ff.from_sklearn(est)
    h_last = m.hidden(X, -1)
    assert h_last.shape == (len(X), 2)
    np.testing.assert_allclose(h_last, m.hidden(X, 2), rtol=0, atol=0)
    ref = R.mlp_forward(X, est.coefs_[:2], est.intercepts_[:2], ["identity"] * 2)
    np.testing.assert_allclose(m.hidden(X, 1), ref, rtol=1e-10, atol=1e-10)
    assert m.hidden(X, 0).shape == (len(X), 50)
    with pytest.raises(ValueError, match="out of range"):
        m.hidden(X, 3)
    with pytest.raises(ValueError, match="out of range"):
        m.hidden(X, -4)


def test_backproject_identity_stack_reaches_the_codes(digits):
    """(50, 20, 2) identity network on digits 0-3: the 2-unit layer is surjective, so
    hidden(backproject(H)) == H, and far-away codes are classified as their region."""
    X, y = subset(*digits, [0, 1, 2, 3])
    est = fit_quiet(MLPClassifier((50, 20, 2), activation="identity", max_iter=200, random_state=21), X, y)
    m = ff.from_sklearn(est)
    H = m.hidden(X, -1)
    rng = np.random.default_rng(0)
    codes = rng.standard_normal((64, 2)) * np.abs(H).max() * 5
    Xb = m.backproject(codes, layer=-1)
    assert Xb.shape == (64, 64)
    np.testing.assert_allclose(m.hidden(Xb, -1), codes, rtol=1e-8, atol=1e-8 * np.abs(codes).max())
    # from the logits as well (logits the 2-unit layer can produce: 4 logits from 2 units)
    S = codes[:10] @ est.coefs_[-1] + est.intercepts_[-1]
    np.testing.assert_allclose(m.decision_function(m.backproject(S, layer="logits")), S,
                               rtol=1e-8, atol=1e-8 * np.abs(S).max())


def test_backproject_tanh_clamps_inside_the_range():
    rng = np.random.default_rng(4)
    Ws = [rng.standard_normal((30, 8)), rng.standard_normal((8, 3))]
    m = ff.MLP(Ws, [rng.standard_normal(8), rng.standard_normal(3)], activation="tanh")
    H = rng.uniform(-0.9, 0.9, (20, 8))
    X = m.backproject(H, layer=0)
    np.testing.assert_allclose(m.hidden(X, 0), H, rtol=1e-9, atol=1e-9)
    H[0, :] = [1.0, -1.0, 1.5, -3.0, 0.999999999, 0.2, 0.3, 0.4]  # on or outside the range
    X, n = m.backproject(H, layer=0, return_clamped=True)
    assert np.all(np.isfinite(X)) and n == 5
    h0 = m.hidden(X[:1], 0)[0]
    lim = np.tanh(np.arctanh(1 - ff.models.DEFAULT_MARGIN))
    np.testing.assert_allclose(np.abs(h0[:5]), lim, rtol=1e-6)
    with pytest.raises(ValueError, match="margin"):
        m.backproject(H, layer=0, margin=0)


def test_backproject_relu_is_refused():
    rng = np.random.default_rng(1)
    m = ff.MLP([rng.standard_normal((5, 4)), rng.standard_normal((4, 3))], activation="relu")
    with pytest.raises(ValueError, match="relu.*not invertible"):
        m.backproject(np.zeros((2, 4)), layer=0)
    # from the logits the relu layer is still in the way
    with pytest.raises(ValueError, match="relu"):
        m.backproject(np.zeros((2, 3)), layer="logits")


@pytest.mark.parametrize("act", ["identity", "tanh", "logistic"])
def test_backproject_minimum_change(act):
    """x0 variant: the result carries the code and is closer to x0 than any other solution."""
    rng = np.random.default_rng(7)
    D, k = 40, 3
    Ws = [rng.standard_normal((D, 12)) / np.sqrt(D), rng.standard_normal((12, k)) / np.sqrt(12),
          rng.standard_normal((k, 4))]
    bs = [rng.standard_normal(12), rng.standard_normal(k) * 0.1, rng.standard_normal(4)]
    m = ff.MLP(Ws, bs, activation=["identity", act])
    x0 = rng.standard_normal((6, D))
    H = m.hidden(x0 + rng.standard_normal((6, D)), layer=1)  # reachable codes
    x = m.backproject(H, layer=1, x0=x0)
    np.testing.assert_allclose(m.hidden(x, 1), H, rtol=1e-7, atol=1e-9)
    # Every other solution is x + v with v in the null space of A = W0 W1.
    A = Ws[0] @ Ws[1]
    _, _, Vt = np.linalg.svd(A.T)
    null = Vt[k:]  # (D - k, D): v @ A == 0
    np.testing.assert_allclose(null @ A, 0, atol=1e-9)
    d_min = np.linalg.norm(x - x0, axis=1)
    for _ in range(20):
        v = rng.standard_normal((6, D - k)) @ null
        alt = x + v
        np.testing.assert_allclose(m.hidden(alt, 1), H, rtol=1e-6, atol=1e-8)
        assert np.all(np.linalg.norm(alt - x0, axis=1) >= d_min - 1e-9)
    # and it is closer than the plain (minimum-norm, x0-blind) back-projection
    xb = m.backproject(H, layer=1)
    assert np.all(np.linalg.norm(xb - x0, axis=1) >= d_min - 1e-9)


def test_backproject_x0_needs_an_affine_path():
    rng = np.random.default_rng(3)
    m = ff.MLP([rng.standard_normal((6, 5)), rng.standard_normal((5, 4)), rng.standard_normal((4, 3))],
               activation=["tanh", "identity"])
    with pytest.raises(ValueError, match="affine path"):
        m.backproject(np.zeros((2, 4)), layer=1, x0=np.zeros((2, 6)))


def test_linear_backproject_from_logits():
    rng = np.random.default_rng(8)
    m = ff.LinearModel(rng.standard_normal((5, 30)), rng.standard_normal(5))
    S = rng.standard_normal((7, 5)) * 10
    np.testing.assert_allclose(m.decision_function(m.backproject(S, layer="logits")), S, rtol=1e-9, atol=1e-9)
    x0 = rng.standard_normal((7, 30))
    x = m.backproject(S, layer="logits", x0=x0)
    np.testing.assert_allclose(m.decision_function(x), S, rtol=1e-9, atol=1e-9)
    assert np.all(np.linalg.norm(x - x0, axis=1) <= np.linalg.norm(m.backproject(S, "logits") - x0, axis=1) + 1e-9)
    mb = ff.LinearModel(rng.standard_normal((1, 30)), 0.5)  # binary: codes are the scores s
    s = np.array([-3.0, 0.0, 7.0])
    np.testing.assert_allclose(mb.decision_function(mb.backproject(s, layer="logits")), s, atol=1e-9)


def test_pinv_is_cached():
    rng = np.random.default_rng(0)
    m = ff.MLP([rng.standard_normal((6, 4)), rng.standard_normal((4, 3))], activation="tanh")
    assert m.pinv(0) is m.pinv(0)
    np.testing.assert_allclose(m.pinv(0), np.linalg.pinv(m.coefs_[0]))


def test_threads_argument_and_global_setting(digits, digits_logreg):
    X, y = digits
    m = ff.from_sklearn(digits_logreg)
    a = m.predict_proba(X, threads=1)
    prev = ff.set_threads(2)
    try:
        assert ff.get_threads() == 2
        np.testing.assert_array_equal(m.predict_proba(X), a)  # row blocks: same bits on any thread count
    finally:
        ff.set_threads(prev)
    with pytest.raises(ValueError, match="threads"):
        m.predict_proba(X, threads=0)
    with pytest.raises(ValueError, match="threads"):
        ff.set_threads(-1)


def test_float_inputs_are_cast_to_the_model_dtype(digits, digits_logreg):
    X, y = digits
    m = ff.from_sklearn(digits_logreg, dtype=np.float32)
    out = m.predict_proba(X)  # float64 X -> float32 model
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, m.predict_proba(X.astype(np.float32)), rtol=0, atol=0)


def test_concurrent_python_threads_match_sequential_results():
    """Kernels release the GIL; calls from several Python threads at once (some run inline while
    the pool is busy) give the sequential results bit for bit."""
    import threading
    rng = np.random.default_rng(9)
    m = ff.MLP([rng.standard_normal((64, 50)), rng.standard_normal((50, 20)), rng.standard_normal((20, 10))],
               activation="tanh")
    Xs = [rng.standard_normal((500 + 37 * i, 64)) for i in range(6)]
    ys = [rng.integers(0, 10, len(X)) for X in Xs]
    expected = [m.loss_gradient(X, y, threads=2) for X, y in zip(Xs, ys)]
    results = [None] * len(Xs)

    def work(i):
        for _ in range(5):
            results[i] = m.loss_gradient(Xs[i], ys[i], threads=2)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(Xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r, e in zip(results, expected):
        np.testing.assert_array_equal(r, e)


def test_kernels_work_in_a_forked_child():
    """The pool's workers do not exist after fork(); the child runs inline instead of hanging."""
    import multiprocessing as mp
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    rng = np.random.default_rng(10)
    m = ff.LinearModel(rng.standard_normal((10, 300)), rng.standard_normal(10))
    X = rng.standard_normal((2000, 300))
    m.predict_proba(X, threads=2)  # start the pool in the parent
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        child = pool.apply_async(_child_proba, (m, X)).get(timeout=60)
    np.testing.assert_array_equal(child, m.predict_proba(X, threads=2))


def _child_proba(m, X):
    return m.predict_proba(X, threads=2)
