"""The AutoAttack ensemble: each stage on the rows still robust, the per-row worst case, the
stage table, and the properties every attack keeps (ball, box, the estimator's own verdicts)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier

import fastfool as ff


@pytest.fixture(scope="module")
def mlp(digits):
    X, y = digits
    tr = np.arange(len(X)) % 3 != 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((30,), activation="tanh", max_iter=80, random_state=1).fit(X[tr], y[tr])
    return est, X[~tr][:150], y[~tr][:150]


@pytest.mark.parametrize("norm", ["inf", 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_autoattack_stages_and_verdicts(mlp, norm, dtype):
    est, X, y = mlp
    m = ff.from_sklearn(est, dtype=dtype)
    X = X.astype(dtype)
    eps = 0.06 if norm == "inf" else 0.6
    kw = dict(eps=eps, norm=norm, steps=15, square_queries=60, clip=(0, 1), n_targets=3)
    r = ff.autoattack(m, X, y, **kw)
    names = list(r.extra["stage_names"])
    assert names == ["apgd-ce", "apgd-t", "fab-t", "square"]
    truth = est.predict(r.x_adv)
    np.testing.assert_array_equal(r.pred, truth)
    np.testing.assert_array_equal(r.success, truth != y)
    n = r.linf if norm == "inf" else r.l2
    assert np.all(n <= eps * (1 + 1e-5) + 1e-6) and r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    clean = est.predict(X) == y
    assert float(r.extra["clean_accuracy"]) == pytest.approx(clean.mean())
    acc = r.extra["stage_robust_accuracy"]
    assert np.all(np.diff(acc) <= 0) and acc[0] <= clean.mean()
    assert acc[-1] == pytest.approx(1 - r.success_rate)
    st = r.extra["stage"]
    np.testing.assert_array_equal(st == -2, ~clean)
    np.testing.assert_array_equal(st >= 0, r.success & clean)
    np.testing.assert_array_equal(r.x_adv[st == -1], X[st == -1])  # never fooled: X itself
    for k in range(len(names)):  # the table counts the rows each stage took
        assert acc[k] == pytest.approx(clean.mean() - np.mean((st >= 0) & (st <= k)))
    # the first stage is APGD-CE itself on the clean-correct rows: the ensemble fools all it does
    first = ff.apgd(m, X[clean], y[clean], eps=eps, norm=norm, steps=15, clip=(0, 1), seed=0)
    assert np.all(r.success[clean][first.success])
    assert r.summary()["stages"][0]["attack"] == "apgd-ce"
    assert np.all(r.queries[clean] >= 15)
    again = ff.autoattack(m, X, y, **kw)
    np.testing.assert_array_equal(again.x_adv, r.x_adv)


def test_autoattack_custom_rand_and_refusals(mlp):
    est, X, y = mlp
    m = ff.from_sklearn(est)
    r = ff.autoattack(m, X, y, eps=0.06, version="custom", attacks=["square", "apgd-dlr"],
                      square_queries=50, steps=10, clip=(0, 1))
    assert list(r.extra["stage_names"]) == ["square", "apgd-dlr"]
    np.testing.assert_array_equal(r.pred, est.predict(r.x_adv))
    r = ff.autoattack(m, X[:20], y[:20], eps=0.06, version="rand", steps=5)
    assert list(r.extra["stage_names"]) == ["apgd-ce", "apgd-dlr"]
    for kw, match in ((dict(version="plus"), "version"), (dict(version="custom"), "attacks"),
                      (dict(version="custom", attacks=["fab"]), "fab"),
                      (dict(attacks=["square"]), "custom"), (dict(norm=1), "norm"),
                      (dict(steps=0), "steps")):
        with pytest.raises(ValueError, match=match):
            ff.autoattack(m, X[:3], y[:3], eps=0.1, **kw)
