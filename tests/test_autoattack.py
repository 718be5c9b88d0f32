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


def test_autoattack_skip_certified_changes_nothing_but_the_work(mlp):
    """The rows CROWN proves robust after APGD-CE skip the later stages: every row's result,
    the stage table and the robust accuracy are those of the full run."""
    est, X, y = mlp
    m = ff.from_sklearn(est, dtype=np.float32)
    X = X.astype(np.float32)
    kw = dict(eps=0.04, steps=15, square_queries=80, clip=(0, 1), n_targets=3)
    fast = ff.autoattack(m, X, y, **kw)
    full = ff.autoattack(m, X, y, skip_certified=False, **kw)
    cert = fast.extra["certified"]
    assert 0 < cert.sum() < np.sum(fast.extra["stage"] == -1)  # some proven, some attacked
    assert not full.extra["certified"].any()
    np.testing.assert_array_equal(fast.x_adv, full.x_adv)
    np.testing.assert_array_equal(fast.extra["stage"], full.extra["stage"])
    np.testing.assert_array_equal(fast.extra["stage_robust_accuracy"],
                                  full.extra["stage_robust_accuracy"])
    np.testing.assert_array_equal(fast.success, est.predict(fast.x_adv) != y)
    assert np.all(fast.extra["stage"][cert] == -1)
    # the proven rows spent APGD-CE's steps only; the others the same as in the full run
    np.testing.assert_array_equal(fast.queries[~cert], full.queries[~cert])
    assert np.all(fast.queries[cert] < full.queries[cert])
    assert fast.summary()["certified"] == int(cert.sum())


@pytest.mark.parametrize("seed", [pytest.param(s, marks=pytest.mark.slow) for s in range(4)])
def test_proven_robust_rows_have_an_exact_radius_beyond_eps(seed):
    """Generated relu nets (random weights, 4 inputs): every row proven at eps has an exact
    minimal L-inf distance in the box (a MILP, tests/attack_reference.py) of at least eps."""
    import attack_reference as AR
    from fastfool.certify import proven_robust
    rng = np.random.default_rng(seed)
    D, H, C = 4, int(rng.integers(3, 9)), int(rng.integers(2, 5))
    W1, W2 = rng.standard_normal((D, H)), rng.standard_normal((H, C))
    b1, b2 = rng.standard_normal(H) * 0.3, rng.standard_normal(C) * 0.3
    m = ff.MLP([W1, W2], [b1, b2], activation="relu")
    X = rng.uniform(0, 1, (25, D))
    yi = m.predict(X)
    proven = {eps: proven_robust(m, X, yi, eps, "inf", (0, 1)) for eps in (0.02, 0.08, 0.2)}
    assert proven[0.02].any()
    rows = np.flatnonzero(proven[0.02] | proven[0.08] | proven[0.2])
    exact = {i: AR.exact_min_linf_relu([W1, W2], [b1, b2], X[i], yi[i], 0.0, 1.0) for i in rows}
    for eps, ok in proven.items():
        for i in np.flatnonzero(ok):
            assert exact[i] >= eps, (seed, eps, i, exact[i])
    # a label the model does not give is never proven
    assert not proven_robust(m, X, (yi + 1) % C, 0.02, "inf", (0, 1)).any()


@pytest.mark.parametrize("act", ["tanh", "logistic"])
def test_proven_robust_rows_hold_at_the_balls_corners(digits, act):
    """s-shaped layers (no MILP): at 2000 random corners of the L-inf ball inside the box, the
    estimator decides every proven row as at X; a non-MLP model has no bound (None)."""
    from fastfool.certify import proven_robust
    Xd, yd = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((20,), activation=act, max_iter=60, random_state=2).fit(Xd[::2], yd[::2])
    m = ff.from_sklearn(est)
    X, y = Xd[1:200:2], yd[1:200:2]
    yi = np.searchsorted(est.classes_, y)
    eps = 0.03
    proven = proven_robust(m, X, yi, eps, "inf", (0, 1))
    assert proven.any() and not proven.all()
    assert np.all(est.predict(X[proven]) == y[proven])
    rng = np.random.default_rng(0)
    for i in np.flatnonzero(proven)[:25]:
        corners = np.clip(X[i] + eps * rng.choice([-1.0, 1.0], size=(2000, X.shape[1])), 0, 1)
        assert np.all(est.predict(corners) == y[i])
    from sklearn.svm import SVC
    svc = ff.from_sklearn(SVC(kernel="rbf").fit(Xd[:300], yd[:300]))
    assert proven_robust(svc, X, yi, eps, "inf", (0, 1)) is None
