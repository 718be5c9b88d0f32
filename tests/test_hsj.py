"""HopSkipJump (Chen et al. 2020) against an independent row-by-row NumPy loop with the same
per-row generators, and the properties of a decision-based attack: success is the
classifier's own predict, queries within the budget, distances shrink with the budget, a row's
result does not depend on the other rows, close to the exact distance on a linear model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

import fastfool as ff

import attack_reference as AR


@pytest.fixture(scope="module")
def forest(digits):
    X, y = digits
    rf = RandomForestClassifier(20, random_state=0).fit(X[::2], y[::2])
    return rf, X[1::2][:40], y[1::2][:40]


@pytest.mark.parametrize("norm", ["2", pytest.param("inf", marks=pytest.mark.slow)])
def test_hsj_matches_the_reference_loop(forest, norm):
    rf, X, y = forest
    X, y = X[:12], y[:12]
    res = ff.hop_skip_jump(rf, X, y, norm=2 if norm == "2" else "inf", max_queries=700,
                           clip=(0, 1), seed=3)
    ref, q = AR.hop_skip_jump(rf.predict, X, y, norm, 700, 3, 0.0, 1.0)
    same = np.all(np.abs(res.x_adv - ref) <= 1e-9, axis=1)
    assert same.mean() >= 0.9, same.mean()  # 1.0 when written
    np.testing.assert_array_equal(res.queries[same], q[same])


@pytest.mark.parametrize("norm", [2, "inf"])
def test_hsj_properties(forest, norm):
    rf, X, y = forest
    meds = []
    for budget in (300, 1500):
        r = ff.hop_skip_jump(rf, X, y, norm=norm, max_queries=budget, clip=(0, 1), seed=0)
        np.testing.assert_array_equal(r.pred, rf.predict(r.x_adv))
        np.testing.assert_array_equal(r.success, rf.predict(r.x_adv) != y)
        assert np.all(r.queries <= budget) and r.x_adv.min() >= 0 and r.x_adv.max() <= 1
        assert r.success.mean() >= 0.9
        n = r.l2 if norm == 2 else r.linf
        meds.append(np.median(n[r.success]))
    assert meds[1] < meds[0], meds
    # per-row generators keyed by (seed, position): a row's result does not depend on the rows
    # attacked with it
    part = ff.hop_skip_jump(rf, X[:10], y[:10], norm=norm, max_queries=1500, clip=(0, 1), seed=0)
    np.testing.assert_array_equal(part.x_adv, r.x_adv[:10])
    np.testing.assert_array_equal(part.queries, r.queries[:10])


def test_hsj_near_the_exact_distance_of_a_linear_model(digits):
    """Binary logistic regression: the exact L2 distance to the boundary is |w.x + b| / ||w||;
    HopSkipJump (labels only) comes within 10% of it at the median with 3000 queries per row
    (and never below it)."""
    X, y = digits
    yb = (y >= 5).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr = LogisticRegression(max_iter=1000).fit(X, yb)
    Xt = X[:30]
    r = ff.hop_skip_jump(lr, Xt, max_queries=3000, seed=1, clip=(-1, 2))
    exact = np.abs(lr.decision_function(Xt)) / np.linalg.norm(lr.coef_)
    ok = r.success
    assert ok.mean() >= 0.95
    ratio = r.l2[ok] / exact[ok]
    assert ratio.min() >= 1 - 1e-9 and np.median(ratio) <= 1.1, (ratio.min(), np.median(ratio))


def test_hsj_refuses_bad_input(forest):
    rf, X, y = forest
    with pytest.raises(TypeError, match="predict"):
        ff.hop_skip_jump(object(), X[:2])
    with pytest.raises(ValueError, match="outside"):
        ff.hop_skip_jump(rf, X[:2] + 5, clip=(0, 1))
    with pytest.raises(ValueError, match="max_queries"):
        ff.hop_skip_jump(rf, X[:2], max_queries=0)
    with pytest.raises(ValueError, match="finite"):
        ff.hop_skip_jump(rf, X[:2], clip=(0, np.inf))
