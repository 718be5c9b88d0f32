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
    with pytest.raises(ValueError, match="not affine"):
        ff.certify(m, X[:2])


def test_multiclass_svc_is_refused():
    X, y = load_digits(return_X_y=True)
    with pytest.raises(ValueError, match="only binary SVC"):
        ff.from_sklearn(SVC().fit(X[:300] / 16, y[:300]))
