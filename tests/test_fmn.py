"""FMN (Pintor et al. 2021) against an independent row-by-row NumPy loop, against the exact
minimal L-inf radius of a small ReLU network (a MILP solved by HiGHS in the tests), and the
properties of a minimum-norm attack: never below the exact optimum, inside the box, success is
the estimator's own predict, smaller than DeepFool's."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.neural_network import MLPClassifier

import fastfool as ff
from fastfool.attacks.fmn import project_l0, project_l1

import attack_reference as AR


@pytest.fixture(scope="module")
def mlp(digits):
    X, y = digits
    tr = np.arange(len(X)) % 3 != 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((30,), activation="tanh", max_iter=80, random_state=0).fit(X[tr], y[tr])
    return est, X[~tr], y[~tr]


@pytest.mark.parametrize("norm", ["2", "inf", "1", "0"])
def test_fmn_matches_the_reference_loop(mlp, norm):
    est, X, y = mlp
    m = ff.from_sklearn(est)  # float64
    X, y = X[:25], y[:25]
    nn = {"1": 1, "0": 0}.get(norm, norm)
    # few steps: the same points (last-bit differences between the kernels' gradients and
    # NumPy's are amplified by later steps, which pick other near-equal best iterates)
    res = ff.fmn(m, X, y, norm=nn, steps=6, clip=(0, 1))
    ref = AR.fmn(AR.spec_of(m), X, y, norm, 6, 0.0, 1.0)
    same = np.all(np.abs(res.x_adv - ref) <= 1e-9, axis=1)
    assert same.mean() >= 0.95, (norm, same.mean())  # 1.0 when written
    # more steps: the same minimal norms to 1e-2
    res = ff.fmn(m, X, y, norm=nn, steps=30, clip=(0, 1))
    ref = AR.fmn(AR.spec_of(m), X, y, norm, 30, 0.0, 1.0)
    ordn = {"2": 2, "inf": np.inf, "1": 1, "0": 0}[norm]
    a, b = np.linalg.norm(res.x_adv - X, ordn, axis=1), np.linalg.norm(ref - X, ordn, axis=1)
    assert np.mean(np.abs(a - b) <= 1e-2 * b + 1e-12) >= 0.95
    np.testing.assert_array_equal(res.success, est.predict(res.x_adv) != y)


def test_project_l1():
    rng = np.random.default_rng(0)
    d = rng.standard_normal((50, 17))
    eps = rng.uniform(0.1, 10, 50)
    out = project_l1(d, eps)
    n = np.abs(out).sum(axis=1)
    inside = np.abs(d).sum(axis=1) <= eps
    np.testing.assert_array_equal(out[inside], d[inside])
    np.testing.assert_allclose(n[~inside], eps[~inside], rtol=1e-12)
    assert np.all(np.sign(out) * np.sign(d) >= 0)
    # optimality: no point of the ball is closer than the projection (random probes)
    for r in np.flatnonzero(~inside)[:5]:
        for _ in range(200):
            q = project_l1(out[r:r + 1] + rng.standard_normal((1, 17)) * 0.05, eps[r:r + 1])[0]
            assert np.linalg.norm(q - d[r]) >= np.linalg.norm(out[r] - d[r]) - 1e-12


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm", [2, "inf", 1])
def test_fmn_properties(mlp, dtype, norm):
    est, X, y = mlp
    m = ff.from_sklearn(est, dtype=dtype)
    Xt, y = X[:150].astype(dtype), y[:150]
    res = ff.fmn(m, Xt, y, norm=norm, steps=60, clip=(0, 1))
    truth = est.predict(res.x_adv)
    np.testing.assert_array_equal(res.pred, truth)
    np.testing.assert_array_equal(res.success, truth != y)
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert res.success.mean() >= 0.95
    # moved but not adversarial to the model: only boundary points of float32 logits, rare
    assert np.mean(~res.success & (res.l2 > 0)) <= 0.02
    if norm != 1:
        d = ff.deepfool(m, Xt, y, norm=norm, clip=(0, 1))
        n = res.l2 if norm == 2 else res.linf
        dn = d.l2 if norm == 2 else d.linf
        both = res.success & d.success
        assert np.median(n[both]) < np.median(dn[both])
    t = (y + 1) % 10
    T = ff.fmn(m, Xt[:40], y[:40], norm=norm, steps=60, target=t[:40], clip=(0, 1))
    assert T.success.mean() >= 0.8
    np.testing.assert_array_equal(T.success, (est.predict(T.x_adv) == t[:40]) & (t[:40] != y[:40]))


@pytest.mark.slow
def test_fmn_is_never_below_the_exact_linf_radius_and_close_to_it():
    """On a small ReLU network the exact minimal L-inf radius is a MILP: every adversarial
    example FMN returns is at least that far (any x_adv is an upper bound), and the median
    found / exact is within 5%."""
    X, y = load_iris(return_X_y=True)
    X = (X - X.min(axis=0)) / (X.max(axis=0) - X.min(axis=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((8,), activation="relu", max_iter=2000, random_state=0).fit(X, y)
    m = ff.from_sklearn(est)
    rows = np.arange(0, 150, 5)
    Xs, ys = X[rows], y[rows]
    res = ff.fmn(m, Xs, ys, norm="inf", steps=200, clip=(0, 1), init="deepfool")
    ok = res.success & (est.predict(Xs) == ys)
    assert ok.mean() >= 0.8
    exact = np.array([AR.exact_min_linf_relu(est.coefs_, est.intercepts_, Xs[i], ys[i], 0.0, 1.0)
                      for i in np.flatnonzero(ok)])
    found = res.linf[ok]
    assert np.all(found >= exact - 1e-7), (found - exact).min()
    ratio = found / exact
    assert np.median(ratio) <= 1.05, np.median(ratio)


def test_project_l0():
    rng = np.random.default_rng(1)
    d = rng.standard_normal((40, 13))
    d[:5, :4] = 0.5  # ties
    k = rng.integers(0, 15, 40)
    out = project_l0(d, k)
    for r in range(40):
        kept = np.flatnonzero(out[r])
        assert kept.size == min(k[r], 13)
        np.testing.assert_array_equal(out[r, kept], d[r, kept])
        dropped = np.setdiff1d(np.arange(13), kept)
        if kept.size and dropped.size:  # nothing dropped is larger than what was kept
            assert np.abs(d[r, dropped]).max() <= np.abs(d[r, kept]).min()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fmn_l0(mlp, dtype):
    """L0: success is the estimator's predict; extra["l0"] counts the changed features; no row
    with a one-feature adversarial example that FMN misses by more than a few percent of rows
    (a brute force over 17 levels per feature finds them); targeted runs reach the target."""
    est, X, y = mlp
    m = ff.from_sklearn(est, dtype=dtype)
    Xt, yt = X[:60].astype(dtype), y[:60]
    res = ff.fmn(m, Xt, yt, norm=0, steps=100, clip=(0, 1))
    np.testing.assert_array_equal(res.success, est.predict(res.x_adv) != yt)
    np.testing.assert_array_equal(res.extra["l0"], np.count_nonzero(res.x_adv != Xt, axis=1))
    assert res.params["norm"] == "0" and res.success.mean() >= 0.95
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    levels = np.linspace(0, 1, 17)
    single = np.zeros(len(Xt), dtype=bool)
    for i in range(len(Xt)):
        C = np.repeat(Xt[i][None], 64 * 17, axis=0)
        C[np.arange(64 * 17), np.repeat(np.arange(64), 17)] = np.tile(levels, 64)
        single[i] = (est.predict(C) != yt[i]).any()
    l0 = res.extra["l0"]
    wrong = est.predict(Xt) != yt  # already misclassified: returned unchanged
    np.testing.assert_array_equal(l0[wrong], 0)
    assert np.all(l0[res.success & ~wrong] >= 1)
    # rows a single feature fools where FMN needed more: few (FMN is a heuristic for L0)
    assert np.mean(single & ~wrong & (l0 > 1)) <= 0.3, (single.sum(), np.sum(single & (l0 > 1)))
    t = (yt + 1) % 10
    T = ff.fmn(m, Xt[:30], yt[:30], norm=0, steps=100, target=t[:30], clip=(0, 1))
    assert T.success.mean() >= 0.8
    np.testing.assert_array_equal(T.success, est.predict(T.x_adv) == t[:30])


def test_fmn_refuses_bad_settings(mlp):
    est, X, y = mlp
    m = ff.from_sklearn(est)
    for kw, match in ((dict(norm=3), "norm"), (dict(steps=0), "steps"), (dict(init="pgd"), "init"),
                      (dict(gamma_init=1.5), "gamma"), (dict(init=np.zeros((2, 64))), "init")):
        with pytest.raises(ValueError, match=match):
            ff.fmn(m, X[:3], y[:3], **kw)


@pytest.mark.parametrize("norm", [2, "inf"])
def test_min_norm_points_on_the_boundary_are_confirmed_outward(mlp, monkeypatch, norm):
    """Long float32 runs end on the boundary, adversarial by the float32 logits: where the
    user's model (the estimator) decides otherwise the point moves out by at most 1% and is
    then fooled; rows the model confirmed stay exactly where they were."""
    import importlib
    est, X, y = mlp
    m = ff.from_sklearn(est, dtype=np.float32)
    ok = est.predict(X) == y
    X, y = X[ok][:150].astype(np.float32), y[ok][:150]
    def run():
        return ff.fmn(m, X, y, norm=norm, steps=600, clip=(0, 1))

    res = run()
    mod = importlib.import_module("fastfool.attacks.fmn")
    monkeypatch.setattr(mod, "confirm_outward", lambda model, X0, x, *a, **k: x)
    raw = run()
    moved = np.any(res.x_adv != raw.x_adv, axis=1)
    assert res.success.all(), res.success.mean()
    np.testing.assert_array_equal(res.success, est.predict(res.x_adv) != y)
    np.testing.assert_array_equal(moved, ~raw.success)  # exactly the unconfirmed rows moved
    assert moved.any()
    n_res, n_raw = (res.l2, raw.l2) if norm == 2 else (res.linf, raw.linf)
    assert np.all(n_res[moved] <= n_raw[moved] * 1.01 + 1e-7)
    assert np.all(n_res[moved] >= n_raw[moved])


@pytest.mark.parametrize("dtype,clip", [(np.float64, (0, 1)), (np.float32, None)])
@pytest.mark.parametrize("target", [False, True])
def test_fmn_from_ddn_refines_its_point(mlp, target, dtype, clip):
    """init="ddn": FMN starts on the boundary between X and DDN's point, so each row it and DDN
    both fool ends no farther than DDN's point (to the outward confirmation's 1%); success is
    the estimator's decision (targeted: the target)."""
    est, X, y = mlp
    m = ff.from_sklearn(est, dtype=dtype)
    Xt, yt = X[:80].astype(dtype), y[:80]
    t = (yt + 1) % 10 if target else None
    d = ff.ddn(m, Xt, yt, steps=40, clip=clip, target=t)
    res = ff.fmn(m, Xt, yt, norm=2, steps=40, clip=clip, init="ddn", target=t)
    truth = est.predict(res.x_adv)
    np.testing.assert_array_equal(res.success, truth == t if target else truth != yt)
    if clip is not None:
        assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    both = res.success & d.success
    assert both.mean() >= 0.8
    assert np.all(res.l2[both] <= d.l2[both] * 1.01 + 1e-9), (res.l2 - d.l2)[both].max()
    assert np.median(res.l2[both]) < np.median(d.l2[both])
