"""Certified radii of kernel SVMs (rbf, poly, sigmoid, linear; binary, one-vs-one, one-vs-rest;
behind pipelines' affine steps): sound against the estimator itself (its own predict on points
sampled throughout the certified ball, corners included, never disagrees with the row's
decision), never above any attack's distance, exact where the bound is (a linear kernel's
pair behind a scaler), and the combined bound at least as tight as either part."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.datasets import load_iris
from sklearn.decomposition import PCA
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import SVC

import fastfool as ff


def _data(seed, n=60, d=2, classes=3):
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.2, 0.8, (classes, d))
    y = rng.integers(0, classes, n)
    X = np.clip(centers[y] + rng.normal(0, 0.12, (n, d)), 0, 1)
    return X, y


def _fit(kernel, kind, X, y, gamma=2.0, C=5.0):
    kw = dict(kernel=kernel, gamma=gamma, C=C, coef0=0.5 if kernel != "rbf" else 0.0, degree=3)
    if kind == "binary":
        return SVC(**kw).fit(X, (y == 0).astype(int))
    if kind == "ovr":
        return OneVsRestClassifier(SVC(**kw)).fit(X, y)
    return SVC(**kw).fit(X, y)


def _ball_points(x, r, norm, n, rng, lo=0.0, hi=1.0):
    """n points of the norm ball of radius r around x inside [lo, hi]: uniform inside, on the
    surface, and (L-inf) every corner of the box."""
    d = x.size
    if norm == "inf":
        pts = x + rng.uniform(-r, r, (n, d))
        face = x + rng.uniform(-r, r, (n, d))
        j = rng.integers(0, d, n)
        face[np.arange(n), j] = x[j] + r * rng.choice([-1.0, 1.0], n)
        corners = x + r * np.array(np.meshgrid(*[[-1.0, 1.0]] * d)).reshape(d, -1).T
        pts = np.vstack([pts, face, corners])
    else:
        u = rng.standard_normal((2 * n, d))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        rad = np.concatenate([r * rng.uniform(0, 1, n) ** (1 / d), np.full(n, r)])
        pts = x + u * rad[:, None]
    return np.clip(pts, lo, hi)


def _check_sound(est, m, X, norm, cert, rng, n=300):
    pred = est.predict(X)
    np.testing.assert_array_equal(cert.pred, pred)
    for i in range(len(X)):
        r = cert.radius[i] * (1 - 1e-9)
        if r <= 0:
            continue
        P = _ball_points(X[i], r, norm, n, rng)
        bad = est.predict(P) != pred[i]
        assert not bad.any(), (i, cert.radius[i], P[bad][:1])
    for attack in (lambda: ff.deepfool(m, X, norm=norm, clip=(0, 1)),
                   lambda: ff.fmn(m, X, norm=norm, steps=60, clip=(0, 1))):
        res = attack()
        dist = res.linf if norm == "inf" else res.l2
        ok = res.success & (pred == est.predict(X))
        assert np.all(cert.radius[ok] <= dist[ok] * (1 + 1e-9) + 1e-12), \
            (cert.radius[ok] - dist[ok]).max()


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["rbf", "poly", "sigmoid", "linear"])
@pytest.mark.parametrize("kind", ["binary", "ovo", "ovr"])
@pytest.mark.parametrize("norm", ["inf", 2])
def test_svm_certificates_are_sound(kernel, kind, norm):
    if kind == "binary" and kernel == "linear":
        pytest.skip("affine: the exact path (test_certify)")
    X, y = _data(1)
    est = _fit(kernel, kind, X, y, gamma=0.7 if kernel == "sigmoid" else 2.0)
    m = ff.from_sklearn(est)
    cert = ff.certify(m, X, norm, clip=(0, 1))
    assert cert.method == "svm-auto"
    assert np.all(cert.radius >= 0) and np.mean(cert.radius > 0) >= 0.5
    _check_sound(est, m, X, norm, cert, np.random.default_rng(0))


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), gamma=st.floats(0.3, 20.0),
       kernel=st.sampled_from(["rbf", "poly"]), kind=st.sampled_from(["binary", "ovo"]),
       norm=st.sampled_from(["inf", 2]), d=st.integers(1, 4))
def test_svm_certificates_sound_over_generated_models(seed, gamma, kernel, kind, norm, d):
    X, y = _data(seed, n=40, d=d)
    if len(np.unique(y if kind == "ovo" else (y == 0))) < 2:
        return
    est = _fit(kernel, kind, X, y, gamma=gamma if kernel == "rbf" else min(gamma, 3.0))
    m = ff.from_sklearn(est)
    cert = ff.certify(m, X, norm, clip=(0, 1))
    _check_sound(est, m, X, norm, cert, np.random.default_rng(seed), n=120)


def test_auto_is_at_least_each_bound_and_below_the_attack():
    X, y = load_iris(return_X_y=True)
    X = MinMaxScaler().fit_transform(X)
    est = SVC(gamma=1.0, C=10).fit(X, y)
    m = ff.from_sklearn(est)
    a = ff.certify(m, X, "inf", clip=(0, 1))
    i = ff.certify(m, X, "inf", clip=(0, 1), method="ibp")
    t = ff.certify(m, X, "inf", clip=(0, 1), method="taylor")
    tol = 2.0 ** -18 * a.extra["upper"]  # one bisection step
    assert np.all(a.radius >= i.radius - tol) and np.all(a.radius >= t.radius - tol)
    assert np.median(a.radius) > 1.5 * np.median(i.radius)  # the Taylor bound near the row
    df = ff.deepfool(m, X, norm="inf", clip=(0, 1))
    assert np.all(a.radius[df.success] <= df.linf[df.success] * (1 + 1e-9))
    assert np.median(a.radius[df.success] / df.linf[df.success]) >= 0.25


def test_linear_kernel_behind_a_scaler_is_exact():
    """A linear kernel after StandardScaler is affine in x but reaches the SVM bounds (the
    scaler is kept in front of the kernel); per expansion the first-order bound is exact:
    |f(x)| / ||grad f||_dual, without a box."""
    X, y = _data(3, n=80, d=3, classes=2)
    pipe = make_pipeline(StandardScaler(), SVC(kernel="linear", C=1.0)).fit(X, y)
    m = ff.from_sklearn(pipe)
    f = pipe.decision_function(X)
    w = pipe[-1].coef_.ravel() / pipe[0].scale_
    for norm, dual in (("inf", 1), (2, 2)):
        exact = np.abs(f) / np.linalg.norm(w, dual)
        cert = ff.certify(m, X, norm, upper=2 * exact)  # bisection to 2**-19 of it
        np.testing.assert_allclose(cert.radius, exact, rtol=1e-5)
        assert np.all(cert.radius <= exact * (1 + 1e-12))


@pytest.mark.slow
@pytest.mark.parametrize("pre", ["scaler", "pca"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pipeline_svm_certificates_are_sound(pre, dtype):
    X, y = _data(5, n=60, d=3)
    first = StandardScaler() if pre == "scaler" else PCA(2)
    pipe = make_pipeline(first, SVC(gamma=0.5, C=5)).fit(X, y)
    m = ff.from_sklearn(pipe, dtype=dtype)
    for norm in ("inf", 2):
        cert = ff.certify(m, X.astype(dtype), norm, clip=(0, 1))
        assert np.mean(cert.radius > 0) >= 0.5
        _check_sound(pipe, m, X.astype(dtype), norm, cert, np.random.default_rng(1), n=150)


def test_svm_certify_refuses_the_mlp_methods():
    X, y = _data(2)
    m = ff.from_sklearn(SVC().fit(X, y))
    for method in ("crown", "exact"):
        with pytest.raises(ValueError, match="kernel SVMs take"):
            ff.certify(m, X, "inf", method=method)
    mlp = ff.MLP([np.ones((2, 3)), np.ones((3, 2))], activation="relu")
    with pytest.raises(ValueError, match="taylor"):
        ff.certify(mlp, X, "inf", method="taylor")

@pytest.mark.slow

def test_verify_on_a_kernel_svm():
    """verify: robust rows hold at eps against the estimator's predict over the ball; fooled
    rows come with an x_adv inside the ball that the estimator decides otherwise."""
    X, y = load_iris(return_X_y=True)
    X = MinMaxScaler().fit_transform(X)
    est = SVC(gamma=1.0, C=10).fit(X, y)
    m = ff.from_sklearn(est)
    rng = np.random.default_rng(4)
    v = ff.verify(m, X, y, eps=0.05, clip=(0, 1))
    counts = v.counts()
    assert counts["robust"] > 30 and counts["fooled"] > 10
    for i in np.flatnonzero(v.status == "robust"):
        assert v.radius[i] >= 0.05
        P = _ball_points(X[i], 0.05, "inf", 100, rng)
        assert np.all(est.predict(P) == est.predict(X[i:i + 1])[0])
    f = v.status == "fooled"
    assert np.all(est.predict(v.x_adv[f]) != y[f])
    assert np.all(np.abs(v.x_adv[f] - X[f]).max(axis=1) <= 0.05)
