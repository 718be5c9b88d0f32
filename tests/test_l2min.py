"""DDN (Rony et al. 2019) and Carlini-Wagner L2 (2017) against independent row-by-row NumPy
loops, and the properties of a minimum-norm attack: inside the box, targets hit, success is the
estimator's own predict, a row's result independent of the other rows, smaller than DeepFool."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier

import fastfool as ff

import attack_reference as AR


@pytest.fixture(scope="module")
def mlp(digits):
    X, y = digits
    tr = np.arange(len(X)) % 3 != 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((30,), activation="tanh", max_iter=80, random_state=0).fit(X[tr], y[tr])
    return est, X[~tr], y[~tr]


@pytest.mark.parametrize("targeted", [False, True])
def test_ddn_matches_the_reference_loop(mlp, targeted):
    est, X, y = mlp
    m = ff.from_sklearn(est)
    X, y = X[:20], y[:20]
    t = (y + 1) % 10 if targeted else None
    res = ff.ddn(m, X, y, steps=12, target=t, clip=(0, 1))
    ref = AR.ddn(AR.spec_of(m), X, y, 12, 0.0, 1.0, target=t)
    same = np.all(np.abs(res.x_adv - ref) <= 1e-9, axis=1)
    assert same.mean() >= 0.95, same.mean()  # 1.0 when written
    truth = est.predict(res.x_adv)
    np.testing.assert_array_equal(res.success, truth == t if targeted else truth != y)


def test_cw_matches_the_reference_loop(mlp):
    est, X, y = mlp
    m = ff.from_sklearn(est)
    X, y = X[:12], y[:12]
    res = ff.cw(m, X, y, steps=30, binary_search_steps=4, initial_const=0.1, clip=(0, 1))
    ref = AR.cw(AR.spec_of(m), X, y, 30, 4, 0.0, 1.0, initial_const=0.1)
    same = np.all(np.abs(res.x_adv - ref) <= 1e-8, axis=1)
    assert same.mean() >= 0.9, same.mean()  # 1.0 when written
    np.testing.assert_array_equal(res.success, est.predict(res.x_adv) != y)


@pytest.mark.parametrize("attack", ["ddn", "cw"])
@pytest.mark.parametrize("dtype", [np.float32, pytest.param(np.float64, marks=pytest.mark.slow)])
def test_l2_minimum_norm_properties(mlp, attack, dtype):
    est, X, y = mlp
    m = ff.from_sklearn(est, dtype=dtype)
    X, y = X[:40].astype(dtype), y[:40]
    kw = dict(steps=60) if attack == "ddn" else dict(steps=200, binary_search_steps=6,
                                                     initial_const=1.0, learning_rate=0.05)
    f = getattr(ff, attack)
    res = f(m, X, y, clip=(0, 1), **kw)
    truth = est.predict(res.x_adv)
    np.testing.assert_array_equal(res.pred, truth)
    np.testing.assert_array_equal(res.success, truth != y)
    assert res.x_adv.dtype == dtype and res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert res.success.mean() >= 0.9
    np.testing.assert_array_equal(res.x_adv[~res.success & (est.predict(X) == y)],
                                  X[~res.success & (est.predict(X) == y)])
    df = ff.deepfool(m, X, y, clip=(0, 1))
    both = res.success & df.success
    assert np.median(res.l2[both]) < np.median(df.l2[both])
    part = f(m, X[3:9], y[3:9], clip=(0, 1), **kw)  # rows do not depend on each other
    np.testing.assert_array_equal(part.x_adv, res.x_adv[3:9])
    # targeted
    t = (y + 2) % 10
    rt = f(m, X, y, target=t, clip=(0, 1), **kw)
    np.testing.assert_array_equal(rt.success, est.predict(rt.x_adv) == t)
    assert rt.success.mean() >= 0.6


def test_cw_without_a_box_and_refusals(mlp):
    est, X, y = mlp
    m = ff.from_sklearn(est)
    r = ff.cw(m, X[:10], y[:10], steps=50, binary_search_steps=3, initial_const=1.0)
    np.testing.assert_array_equal(r.success, est.predict(r.x_adv) != y[:10])
    assert np.isfinite(r.x_adv).all()
    d = ff.ddn(m, X[:10], y[:10], steps=20)
    np.testing.assert_array_equal(d.success, est.predict(d.x_adv) != y[:10])
    for f, kw, match in ((ff.ddn, dict(gamma=1.0), "gamma"), (ff.ddn, dict(steps=0), "steps"),
                         (ff.ddn, dict(init_eps=0), "init_eps"),
                         (ff.cw, dict(binary_search_steps=0), "binary_search_steps"),
                         (ff.cw, dict(learning_rate=-1), "learning_rate"),
                         (ff.cw, dict(target=y[:3]), "target"),
                         (ff.ddn, dict(target=y[:3]), "target")):
        with pytest.raises(ValueError, match=match):
            f(m, X[:3], y[:3], **kw)
