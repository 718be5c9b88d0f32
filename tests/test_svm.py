"""Binary kernel SVMs from scikit-learn: scores, gradients and attacks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.svm import SVC, NuSVC

import fastfool as ff


@pytest.fixture(scope="module")
def pair():
    X, y = load_digits(return_X_y=True)
    keep = (y == 3) | (y == 8)
    return X[keep] / 16.0, np.where(y[keep] == 3, "three", "eight")


@pytest.mark.parametrize("kernel", ["linear", "rbf", "poly", "sigmoid"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_svm_matches_sklearn(pair, kernel, dtype):
    X, y = pair
    est = SVC(kernel=kernel, coef0=0.5).fit(X, y)
    m = ff.from_sklearn(est, dtype=dtype)
    assert isinstance(m, ff.KernelSVM) and m.binary
    ref = est.decision_function(X)
    tol = 1e-10 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(m.decision_function(X), ref, rtol=tol, atol=tol * np.abs(ref).max())
    agree = np.mean(m.predict(X) == est.predict(X))
    assert agree == 1.0 if dtype == np.float64 else agree > 0.99
    P = m.predict_proba(X)
    np.testing.assert_allclose(P[:, 1], 1 / (1 + np.exp(-ref)), rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize("kernel", ["linear", "rbf", "poly", "sigmoid"])
def test_kernel_svm_gradient_matches_finite_differences(pair, kernel):
    X, y = pair
    m = ff.from_sklearn(NuSVC(kernel=kernel, coef0=0.5).fit(X, y))
    Xs, ys = X[:6], y[:6]
    G = m.loss_gradient(Xs, ys)
    h = 1e-6
    fd = np.empty_like(Xs)
    for j in range(Xs.shape[1]):
        e = np.zeros_like(Xs)
        e[:, j] = h
        fd[:, j] = (m.loss_gradient(Xs + e, ys, return_loss=True)[1] -
                    m.loss_gradient(Xs - e, ys, return_loss=True)[1]) / (2 * h)
    np.testing.assert_allclose(G, fd, rtol=1e-5, atol=1e-8)


def test_gradient_attacks_fool_an_rbf_svm(pair):
    X, y = pair
    m = ff.from_sklearn(SVC().fit(X, y))
    for res in (ff.pgd(m, X, y, eps=0.3, steps=20, seed=0, clip=(0, 1)), ff.deepfool(m, X, y)):
        assert res.success.mean() > 0.7
        np.testing.assert_array_equal(res.pred, m.predict(res.x_adv))
    lin = ff.from_sklearn(SVC(kernel="linear").fit(X, y))
    r, _ = ff.certify(lin, X)  # a linear-kernel SVM is a linear model: exact radii
    mn = ff.minimal(lin, X)
    np.testing.assert_allclose(mn.l2[mn.success], r[mn.success], rtol=1e-4)
    # an rbf SVM gets sound bounds (tests/test_certify_svm.py): never above DeepFool's distance
    c = ff.certify(m, X)
    df = ff.deepfool(m, X)
    assert c.method == "svm-auto" and np.mean(c.radius > 0) > 0.5
    assert np.all(c.radius[df.success] <= df.l2[df.success] * (1 + 1e-9))


MULTI = [("rbf", {}), ("poly", {"degree": 3, "coef0": 1.0}), ("linear", {}),
         ("sigmoid", {"gamma": 0.01, "coef0": 0.0})]


@pytest.mark.parametrize("kernel,kw", MULTI)
@pytest.mark.parametrize("nu", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_multiclass_svc_decides_by_the_estimators_votes(kernel, kw, nu):
    """Multi-class SVC / NuSVC (one-vs-one, every kernel): predict is scikit-learn's vote,
    decision_function matches it in both shapes, and FGSM / PGD / DeepFool (on the softmax
    surrogate) report the estimator's own verdicts on x_adv, in both dtypes."""
    from sklearn.datasets import load_wine
    from sklearn.svm import NuSVC
    X, y = load_wine(return_X_y=True)
    X = (X - X.min(0)) / np.ptp(X, axis=0)
    rows = np.arange(len(X)) % 3 == 0
    cls = NuSVC(kernel=kernel, nu=0.3, **kw) if nu else SVC(kernel=kernel, **kw)
    for shape in ("ovr", "ovo"):
        est = cls.set_params(decision_function_shape=shape).fit(X[~rows], y[~rows])
        for dtype in (np.float64, np.float32):
            m = ff.from_sklearn(est, dtype=dtype)
            Xt = X[rows].astype(dtype)
            np.testing.assert_array_equal(m.predict(Xt), est.predict(Xt))
            D = est.decision_function(Xt)
            np.testing.assert_allclose(m.decision_function(Xt), D, rtol=1e-9, atol=1e-9 * (1 + np.abs(D).max()))
            for what, res in (("fgsm", ff.fgsm(m, Xt, y[rows], eps=0.1)),
                              ("pgd", ff.pgd(m, Xt, y[rows], eps=0.1, steps=5, seed=0)),
                              ("pgd-clip", ff.pgd(m, Xt, y[rows], eps=0.2, steps=5, seed=0,
                                                  clip=(0, 1))),
                              ("deepfool", ff.deepfool(m, Xt, y[rows], max_iter=30))):
                truth = est.predict(res.x_adv)
                assert np.array_equal(res.pred, truth), (what, kernel, shape, dtype)
                assert np.array_equal(res.success, truth != y[rows]), (what, kernel, shape, dtype)
            assert res.success.mean() > 0.9  # DeepFool's surrogate leads across the votes


def test_multiclass_svc_rows_near_vote_ties_are_the_estimators():
    """Points on the segments between the classes' centres cross vote boundaries (and, between
    three classes, pass near three-way ties): every row's verdict is est.predict's."""
    from sklearn.datasets import load_iris
    X, y = load_iris(return_X_y=True)
    est = SVC(kernel="rbf", gamma=2.0).fit(X, y)
    m = ff.from_sklearn(est)
    c = np.array([X[y == k].mean(0) for k in range(3)])
    t = np.linspace(0, 1, 400)[:, None]
    pts = np.vstack([c[0] + t * (c[1] - c[0]), c[1] + t * (c[2] - c[1]), c[0] + t * (c[2] - c[0]),
                     (c[0] + c[1] + c[2]) / 3 + 0.3 * np.random.default_rng(0).standard_normal((400, 4))])
    np.testing.assert_array_equal(m.predict(pts), est.predict(pts))
    res = ff.deepfool(m, pts, max_iter=30, overshoot=0.0)  # rows pushed onto vote boundaries
    np.testing.assert_array_equal(res.pred, est.predict(res.x_adv))


def test_multiclass_svc_with_break_ties_is_refused():
    from sklearn.datasets import load_iris
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match="break_ties"):
        ff.from_sklearn(SVC(break_ties=True).fit(X, y))


@pytest.mark.parametrize("kernel", ["rbf", "poly", "linear"])
def test_one_vs_rest_of_kernel_svcs_decides_as_the_ovr(kernel):
    """OneVsRestClassifier(SVC(kernel)) as one model over the union of the support vectors:
    predict, decision_function and the attacks' verdicts are the OvR object's own (multi-class
    and binary)."""
    from sklearn.datasets import load_wine
    from sklearn.multiclass import OneVsRestClassifier
    X, y = load_wine(return_X_y=True)
    X = (X - X.min(0)) / np.ptp(X, axis=0)
    for yy in (y, (y == 1).astype(int)):
        est = OneVsRestClassifier(SVC(kernel=kernel, degree=2, coef0=1.0)).fit(X, yy)
        for dtype in (np.float64, np.float32):
            m = ff.from_sklearn(est, dtype=dtype)
            Xt = X.astype(dtype)
            np.testing.assert_array_equal(m.predict(Xt), est.predict(Xt))
            D = est.decision_function(Xt)
            tol = 1e-9 if dtype == np.float64 else 1e-6  # a binary float32 model's scores: float32
            np.testing.assert_allclose(m.decision_function(Xt), D, rtol=tol, atol=tol * (1 + np.abs(D).max()))
            for res in (ff.pgd(m, Xt, yy, eps=0.1, steps=5, seed=0), ff.deepfool(m, Xt, yy, max_iter=30)):
                truth = est.predict(res.x_adv)
                np.testing.assert_array_equal(res.pred, truth)
                np.testing.assert_array_equal(res.success, truth != yy)
