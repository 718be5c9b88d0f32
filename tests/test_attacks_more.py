"""template, invert, far_points, confidence_map, score_attack, transfer, robustness_curve."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC

import fastfool as ff


@pytest.fixture(scope="module")
def data(digits, digits_logreg):
    X, y = digits
    keep = y < 4
    lr = digits_logreg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ident = MLPClassifier((50, 20, 2), activation="identity", max_iter=60, random_state=21).fit(X[keep], y[keep])
        tanh = MLPClassifier((50, 20, 2), activation="tanh", max_iter=60, random_state=21).fit(X[keep], y[keep])
    return X, y, keep, ff.from_sklearn(lr), ff.from_sklearn(ident), ff.from_sklearn(tanh), lr


def test_template_from_images_and_noise(data):
    X, y, _, lin, _, _, _ = data
    t = (y[:100] + 5) % 10
    res = ff.template(lin, X[:100], target=t, confidence=0.99, clip=(0, 1))
    assert res.success.mean() > 0.95
    np.testing.assert_array_equal(res.target, t)
    P = lin.predict_proba(res.x_adv)
    ok = res.success
    assert np.all(P[ok, t[ok]] >= 0.99)
    # without clipping the perturbation is a multiple of the target's weight template ...
    free = ff.template(lin, X[:100], target=t, confidence=0.99)
    assert free.success.all()
    W = lin.coef_
    d = free.x_adv - X[:100]
    cos = np.einsum("ij,ij->i", d, W[t]) / (np.linalg.norm(d, axis=1) * np.linalg.norm(W[t], axis=1))
    np.testing.assert_allclose(cos, 1, atol=1e-9)
    # ... and the smallest one to 1e-3: 0.99 of it does not reach the confidence
    Ps = lin.predict_proba(X[:100] + 0.99 * d)
    assert np.all(Ps[np.arange(100), t] < 0.99)
    noise = ff.template(lin, target=np.arange(10), start="noise", n=10, seed=3)
    assert noise.success.all() and np.all(noise.confidence >= 0.99)


def test_invert_identity_network_from_the_last_hidden_layer(data):
    X, y, keep, _, ident, _, _ = data
    H = ident.hidden(X[keep], -1)
    codes = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], float) * np.abs(H).max() * 20
    res = ff.invert(ident, codes, layer=-1)
    intended = np.argmax(ident.scores(res.x_adv, None, 1), axis=1)  # what the model says
    np.testing.assert_array_equal(res.pred, ident.classes_[intended])
    assert np.all(res.extra["code_error"] < 1e-6 * np.abs(codes).max())
    assert res.success.all() and np.all(res.confidence > 0.99)
    near = ff.invert(ident, codes[[0, 0, 1]] / 10, layer=-1, x0=X[keep][:3])
    far = ff.invert(ident, codes[[0, 0, 1]] / 10, layer=-1)
    x0 = X[keep][:3]
    assert np.all(near.l2 <= np.linalg.norm(far.x_adv - x0, axis=1) + 1e-9)
    assert np.all(near.extra["code_error"] < 1e-6)


def test_invert_reports_failures_honestly(data):
    X, _, keep, _, _, tanh, _ = data
    codes = np.array([[5.0, 5.0], [0.2, -0.3]])  # the first is outside tanh's range: clamped
    res = ff.invert(tanh, codes, layer=-1)
    assert res.extra["clamped"][0] >= 2
    assert res.extra["code_error"][0] > 1  # the clamped code is not what the input carries
    assert res.extra["code_error"][1] < 1e-6
    np.testing.assert_array_equal(res.pred, tanh.predict(res.x_adv))


def test_far_points_input_and_hidden_space(data):
    X, y, keep, lin, ident, _, _ = data
    for model, Xd, layer in ((lin, X, None), (ident, X[keep], -1), (ident, X[keep], None)):
        res = ff.far_points(model, Xd, p=0.99, k=10, layer=layer)
        assert res.n == model.n_classes
        assert res.success.mean() >= 0.75
        ok = res.success
        assert np.all(res.extra["distance"][ok] >= 10 - 1e-9)
        assert np.all(res.confidence[ok] >= 0.99)
        np.testing.assert_array_equal(res.pred[ok], res.target[ok])
        if layer is None:  # distances really are >= k radii in input space
            mu = Xd.mean(axis=0)
            R = np.max(np.linalg.norm(Xd - mu, axis=1))
            assert np.all(np.linalg.norm(res.x_adv[ok] - mu, axis=1) >= 10 * R * (1 - 1e-9))


def test_iris_far_points_of_the_seed():
    iris = load_iris()
    X, y = iris.data[:, 2:], iris.target
    clf = LogisticRegression(max_iter=100).fit(X, y)
    assert abs(clf.score(X, y) - 0.966) < 0.001
    m = ff.from_sklearn(clf)
    pts = np.array([[0.1, 5], [10, 10], [5, -5]])
    P = m.predict_proba(pts)
    np.testing.assert_array_equal(m.predict(pts), [0, 2, 1])
    np.testing.assert_allclose(P.max(axis=1), [0.998, 1.000, 0.992], atol=0.01)
    cmap = ff.confidence_map(m, (-10, 20), (-10, 20), resolution=1000)
    assert cmap.label.shape == (1000, 1000) and cmap.confidence.shape == (1000, 1000)
    # the grid agrees with the model at sampled points
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, 1000, 50), rng.integers(0, 1000, 50)
    pts = np.column_stack([cmap.xs[j], cmap.ys[i]])
    np.testing.assert_array_equal(cmap.label[i, j], m.predict(pts))
    np.testing.assert_allclose(cmap.confidence[i, j], m.predict_proba(pts).max(axis=1), rtol=1e-12)
    assert cmap.confidence.max() > 0.999 and set(np.unique(cmap.label)) == {0, 1, 2}


def test_confidence_map_of_a_hidden_layer(data):
    X, _, keep, _, ident, _, lin = data
    cmap = ff.confidence_map(ident, (-30, 30), (-30, 30), resolution=200, layer=-1)
    H = np.array([[cmap.xs[5], cmap.ys[7]], [cmap.xs[150], cmap.ys[20]]])
    L = H @ ident.coefs_[-1] + ident.intercepts_[-1]
    np.testing.assert_array_equal(cmap.label[[7, 20], [5, 150]], ident.classes_[np.argmax(L, axis=1)])
    with pytest.raises(ValueError, match="has 50 units, not 2"):
        ff.confidence_map(ident, (0, 1), (0, 1), layer=0)
    with pytest.raises(ValueError, match="64 features"):
        ff.confidence_map(ff.from_sklearn(lin), (0, 1), (0, 1))


@pytest.mark.slow  # 3.4 s of predict_proba queries
def test_score_attack_black_box_on_random_forest_and_rbf_svc(data):
    X, y, _, _, _, _, _ = data
    rf = RandomForestClassifier(30, random_state=0).fit(X, y)
    res = ff.score_attack(rf, X[:40], y[:40], eps=0.25, max_queries=200, clip=(0, 1), seed=1)
    assert res.success.mean() > 0.5
    assert np.all(res.linf <= 0.25 + 1e-12) and np.all(res.queries <= 200)
    np.testing.assert_array_equal(res.pred, rf.predict(res.x_adv))
    np.testing.assert_array_equal(res.success, rf.predict(res.x_adv) != y[:40])
    again = ff.score_attack(rf, X[:40], y[:40], eps=0.25, max_queries=200, clip=(0, 1), seed=1)
    np.testing.assert_array_equal(again.x_adv, res.x_adv)
    svc = CalibratedClassifierCV(SVC(), ensemble=False).fit(X[:600], y[:600])  # RBF SVC with probabilities
    res = ff.score_attack(svc, X[600:630], y[600:630], eps=2.0, max_queries=300, clip=(0, 1), norm=2)
    assert res.success.mean() > 0.3 and np.all(res.l2 <= 2.0 + 1e-9)
    with pytest.raises(TypeError, match="predict_proba"):
        ff.score_attack(object(), X[:2], eps=0.1)


def test_score_attack_ends_when_no_coordinate_can_move():
    """eps = 0 (or a box that pins every coordinate) leaves nothing to try: the row ends after
    one sweep with its budget unspent instead of sweeping forever."""
    rng = np.random.default_rng(0)
    lm = ff.LinearModel(rng.standard_normal((5, 4)))
    X = rng.uniform(0, 1, (3, 4))
    r = ff.score_attack(lm, X, eps=0.0, max_queries=10**6)
    assert np.all(r.queries <= 2) and not r.success.any()
    pinned = np.full((3, 4), 0.25)
    r = ff.score_attack(lm, pinned, eps=0.5, max_queries=10**6, clip=(0.25, 0.25))
    assert np.all(r.queries <= 2) and not r.success.any()


@pytest.mark.slow  # 3.8 s of random-forest queries
def test_score_attack_uses_its_whole_budget():
    """Past one sweep over the coordinates, further sweeps (same step, then halved) keep
    improving: on a random forest the success rate at 1000 and 3000 queries is above that of one
    sweep's budget, never below it, the L-inf budget holds throughout and verdicts are the
    forest's predict."""
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rf = RandomForestClassifier(20, random_state=0).fit(X[::2], y[::2])
    Xt, yt = X[1:160:2], y[1:160:2]
    rates = []
    for q in (130, 600, 1500):  # 130: about one sweep of the 64 coordinates (two tries each)
        res = ff.score_attack(rf, Xt, yt, eps=0.15, max_queries=q, clip=(0, 1), seed=0)
        assert np.all(res.linf <= 0.15 + 1e-12) and np.all(res.queries <= q)
        np.testing.assert_array_equal(res.success, rf.predict(res.x_adv) != yt)
        rates.append(res.success.mean())
        if q == 1500:
            assert res.extra["sweeps"].max() >= 3
    assert rates[0] <= rates[1] <= rates[2] and rates[2] > rates[0] + 0.05, rates


def test_transfer_and_robustness_curve(data):
    X, y, _, lin, _, _, lr = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = LogisticRegression(max_iter=500, C=0.1).fit(X[::2], y[::2])
    res, rates = ff.transfer(ff.pgd, lin, {"self": lin, "other": other}, X[:300], y[:300], eps=0.15,
                             seed=0, clip=(0, 1))
    clean = lin.predict(X[:300]) == y[:300]
    assert rates["self"] == pytest.approx(res.success[clean].mean())
    assert rates["self"] > 0.5 and 0 < rates["other"] <= 1
    curve = ff.robustness_curve(lin, X[:300], y[:300], [0, 0.02, 0.05, 0.1], steps=10, seed=0)
    acc = curve["accuracy"]
    assert acc[0] == pytest.approx(np.mean(lin.predict(X[:300]) == y[:300]))
    assert np.all(np.diff(acc) <= 0) and acc[-1] < acc[0]
    exact = ff.robustness_curve(lin, X[:300], y[:300], [0, 0.2, 0.5, 1.0], attack="exact", norm=2)
    pg = ff.robustness_curve(lin, X[:300], y[:300], [0, 0.2, 0.5, 1.0], norm=2, steps=20, seed=0)
    # the exact radii give the true robust accuracy: no attack can do better than them
    assert np.all(exact["accuracy"] <= pg["accuracy"] + 1e-12)


def test_target_all_fools_each_row_into_every_other_class(data):
    X, y, _, lin, _, _, _ = data
    for attack, kw in ((ff.pgd, dict(eps=0.5, steps=30, seed=0, clip=(0, 1))),
                       (ff.fgsm, dict(eps=0.5, clip=(0, 1))),
                       (ff.minimal, dict(norm=2))):
        res = attack(lin, X[:4], y[:4], target="all", **kw)
        assert res.n == 4 * 9
        np.testing.assert_array_equal(res.extra["row"], np.repeat(np.arange(4), 9))
        for r in range(4):
            ts = res.target[res.extra["row"] == r]
            assert sorted(ts) == sorted(set(range(10)) - {y[r]})
        np.testing.assert_array_equal(res.success, res.pred == res.target)
        if attack is not ff.fgsm:
            assert res.success.mean() > 0.9
