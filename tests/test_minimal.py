"""Exact minimal perturbations (certify, minimal) against an independent solver (SLSQP on the
primal problems), and DeepFool / PGD never beating them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import minimize
from sklearn.neural_network import MLPClassifier

import fastfool as ff


@pytest.fixture(scope="module")
def setup(digits, digits_logreg):
    X, y = digits
    lr = digits_logreg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ident = MLPClassifier((30, 5), activation="identity", max_iter=40, random_state=0).fit(X, y)
        tanh = MLPClassifier((30,), activation="tanh", max_iter=40, random_state=0).fit(X, y)
    return X, y, ff.from_sklearn(lr), ff.from_sklearn(ident), ff.from_sklearn(tanh)


def region_distance(A, c, x, j, norm):
    """Independent: min ||d|| s.t. class j has the top score at x + d (SLSQP on the primal)."""
    others = [i for i in range(A.shape[0]) if i != j]
    M = A[j] - A[others]
    b = c[others] - c[j]
    cons = {"type": "ineq", "fun": lambda d: M @ (x + d) - b + 1e-10, "jac": lambda d: M}
    D = x.size
    if norm == 2:
        res = minimize(lambda d: d @ d, np.zeros(D), jac=lambda d: 2 * d, constraints=[cons],
                       method="SLSQP", options={"maxiter": 500, "ftol": 1e-14})
        return np.sqrt(res.fun), res.x
    # L-inf: variables [d, u], minimise u with |d_i| <= u
    cons2 = [{"type": "ineq", "fun": lambda v: M @ (x + v[:D]) - b + 1e-10,
              "jac": lambda v: np.hstack([M, np.zeros((len(others), 1))])},
             {"type": "ineq", "fun": lambda v: np.concatenate([v[D] - v[:D], v[D] + v[:D]]),
              "jac": lambda v: np.vstack([np.hstack([-np.eye(D), np.ones((D, 1))]),
                                          np.hstack([np.eye(D), np.ones((D, 1))])])}]
    v0 = np.zeros(D + 1)
    v0[D] = 1.0
    res = minimize(lambda v: v[D], v0, jac=lambda v: np.eye(D + 1)[D], constraints=cons2,
                   method="SLSQP", options={"maxiter": 1000, "ftol": 1e-14})
    return res.x[D], res.x[:D]


@pytest.mark.parametrize("norm", [2, pytest.param("inf", marks=pytest.mark.slow)])
@pytest.mark.parametrize("which", ["linear", "identity-mlp"])
def test_certify_and_minimal_match_an_independent_solver(setup, norm, which):
    X, y, lin, ident, _ = setup
    m = lin if which == "linear" else ident
    A, c = m.affine_map()
    rows = np.arange(0, 1797, 180)[:10]
    Xs = X[rows]
    radius, boundary = ff.certify(m, Xs, norm=norm)
    res = ff.minimal(m, Xs, norm=norm)
    assert res.success.all()
    n = res.l2 if norm == 2 else res.linf
    np.testing.assert_allclose(n, radius, rtol=1e-4)
    pred = m.predict(Xs)
    for i, x in enumerate(Xs):
        k = int(np.searchsorted(m.classes_, pred[i]))
        best = min(region_distance(A, c, x, j, 2 if norm == 2 else "inf")[0]
                   for j in range(A.shape[0]) if j != k)
        np.testing.assert_allclose(radius[i], best, rtol=2e-3, atol=1e-6)
    # the boundary class is where the minimal perturbation lands
    np.testing.assert_array_equal(res.pred, boundary)


@pytest.mark.parametrize("norm", [2, "inf"])
def test_targeted_minimal_matches_an_independent_solver(setup, norm):
    X, y, lin, _, _ = setup
    A, c = lin.affine_map()
    rows = np.arange(3, 1797, 211)[:8]
    Xs, ys = X[rows], y[rows]
    t = (ys + 3) % 10
    res = ff.minimal(lin, Xs, ys, norm=norm, target=t)
    assert res.success.all() and np.all(res.pred == t)
    n = res.l2 if norm == 2 else res.linf
    for i, x in enumerate(Xs):
        ref, _ = region_distance(A, c, x, int(t[i]), norm)
        np.testing.assert_allclose(n[i], ref, rtol=2e-3, atol=1e-6)


def test_minimal_is_never_larger_than_deepfool_or_pgd(setup):
    X, y, lin, _, _ = setup
    Xs, ys = X[:300], y[:300]
    for norm in (2, "inf"):
        mn = ff.minimal(lin, Xs, ys, norm=norm)
        df = ff.deepfool(lin, Xs, ys, norm=norm)
        key = "l2" if norm == 2 else "linf"
        both = mn.success & df.success
        assert both.mean() > 0.95
        assert np.all(getattr(mn, key)[both] <= getattr(df, key)[both] * (1 + 1e-6))
        # on a linear model DeepFool's first step is exact: equal up to its overshoot
        np.testing.assert_allclose(getattr(df, key)[both], getattr(mn, key)[both] * 1.02, rtol=1e-3)
        eps = float(np.median(getattr(mn, key))) * 1.5
        pg = ff.pgd(lin, Xs, ys, eps=eps, norm=norm, steps=30, seed=0)
        ok = pg.success & mn.success
        assert ok.sum() > 50
        assert np.all(getattr(mn, key)[ok] <= getattr(pg, key)[ok] * (1 + 1e-6))


def test_deepfool_fools_a_tanh_mlp(setup):
    X, y, _, _, tanh = setup
    for norm in (2, "inf"):
        res = ff.deepfool(tanh, X[:400], y[:400], norm=norm)
        clean_ok = tanh.predict(X[:400]) == y[:400]
        assert res.success[clean_ok].mean() > 0.95
        assert res.iterations.max() <= 50
        np.testing.assert_array_equal(res.pred, tanh.predict(res.x_adv))
        key = res.l2 if norm == 2 else res.linf
        # smaller perturbations than a fixed-budget FGSM needs
        assert np.median(key[res.success]) < (1.5 if norm == 2 else 0.3)


def test_exact_methods_refuse_nonaffine_models(setup):
    X, _, _, _, tanh = setup
    with pytest.raises(ValueError, match="affine"):
        ff.certify(tanh, X[:3], method="affine")
    with pytest.raises(ValueError, match="not affine"):
        ff.minimal(tanh, X[:3])


@pytest.mark.parametrize("norm", [2, "inf"])
def test_deepfool_matches_reference_on_a_tanh_mlp(setup, norm):
    import attack_reference as AR
    X, y, _, _, tanh = setup
    Xs, ys = X[:40], y[:40]
    res = ff.deepfool(tanh, Xs, ys, norm=norm)
    yi = np.searchsorted(tanh.classes_, ys)
    ref = AR.deepfool(AR.spec_of(tanh), Xs, yi, 0.02, 50, "2" if norm == 2 else "inf")
    np.testing.assert_allclose(res.x_adv, ref, rtol=0, atol=1e-8)
