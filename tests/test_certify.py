"""Certified radii (IBP, CROWN) for MLPs: never above the exact minimal L-inf radius of small
ReLU networks (a MILP in the tests, HiGHS), never above any attack's distance on tanh and
logistic networks, never contradicted by the estimator on points inside the certified ball, IBP
never above CROWN, and the affine certificates unchanged."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.datasets import load_iris
from sklearn.neural_network import MLPClassifier

import fastfool as ff

import attack_reference as AR


def _fit(X, y, hidden, act, seed=0, iters=300):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MLPClassifier(hidden, activation=act, max_iter=iters, random_state=seed).fit(X, y)


@pytest.fixture(scope="module")
def iris01():
    X, y = load_iris(return_X_y=True)
    return (X - X.min(0)) / (X.max(0) - X.min(0)), y


@pytest.mark.parametrize("seed,hidden", [(0, 8), pytest.param(1, 5, marks=pytest.mark.slow),
                                         pytest.param(2, 12, marks=pytest.mark.slow)])
def test_bounds_never_exceed_the_exact_radius_of_relu_nets(iris01, seed, hidden):
    X, y = iris01
    est = _fit(X, y, (hidden,), "relu", seed, 2000)
    m = ff.from_sklearn(est)
    rows = np.flatnonzero(est.predict(X) == y)[seed::7][:14]
    exact = np.array([AR.exact_min_linf_relu(est.coefs_, est.intercepts_, X[i], est.predict(
        X[i:i + 1])[0], 0.0, 1.0) for i in rows])
    ibp = ff.certify(m, X[rows], norm="inf", method="ibp", clip=(0, 1))
    crown = ff.certify(m, X[rows], norm="inf", method="crown", clip=(0, 1))
    assert np.all(ibp.radius <= exact) and np.all(crown.radius <= exact), (crown.radius / exact)
    assert np.all(ibp.radius <= crown.radius)
    assert np.median(crown.radius / exact) >= 0.8  # one hidden layer: CROWN is close
    assert crown.method == "crown" and ibp.method == "ibp"
    np.testing.assert_array_equal(crown.pred, est.predict(X[rows]))


@pytest.fixture(scope="module")
def digits_nets(digits):
    X, y = digits
    tr = np.arange(len(X)) % 3 != 0
    return {act: (_fit(X[tr], y[tr], (20, 12), act, 0, 150), X[~tr][:60], y[~tr][:60])
            for act in ("tanh", "logistic", "relu")}


@pytest.mark.parametrize("act", ["tanh", pytest.param("logistic", marks=pytest.mark.slow), "relu"])
@pytest.mark.parametrize("norm", ["inf", pytest.param(2, marks=pytest.mark.slow)])
def test_bounds_stay_below_every_attack_and_no_attack_beats_them(digits_nets, act, norm):
    est, X, y = digits_nets[act]
    m = ff.from_sklearn(est)
    c = ff.certify(m, X, norm=norm, clip=(0, 1))
    ci = ff.certify(m, X, norm=norm, method="ibp", clip=(0, 1))
    assert np.all(ci.radius <= c.radius)
    assert np.all(c.radius >= 0) and np.isfinite(c.radius).all()
    own = est.predict(X)
    nn = 2 if norm == 2 else "inf"
    for res in (ff.fmn(m, X, own, norm=nn, steps=60, clip=(0, 1)),
                ff.deepfool(m, X, own, norm=nn, clip=(0, 1)),
                ff.fab(m, X, own, norm=nn, steps=40, clip=(0, 1))):
        d = (res.l2 if norm == 2 else res.linf).astype(np.float64)
        assert np.all(c.radius[res.success] <= d[res.success]), res.attack
    # an attack confined to the certified ball never fools (the certificate is sound)
    ok = c.radius > 0
    rad = c.radius[ok]
    pgd = ff.apgd(m, X[ok], own[ok], eps=float(rad.min()), norm=nn, steps=50, clip=(0, 1))
    inside = (pgd.l2 if norm == 2 else pgd.linf) <= rad
    assert not np.any(pgd.success & inside)
    assert np.median(c.radius) > 0


@given(seed=st.integers(0, 2**31 - 1), depth=st.integers(1, 3),
       act=st.sampled_from(["relu", "tanh", "logistic", "identity"]),
       norm=st.sampled_from(["inf", "2"]), box=st.booleans())
def test_points_inside_the_certified_ball_keep_the_decision(seed, depth, act, norm, box):
    """Random MLPs (sampled weights, 2 to 5 classes): the estimator-free fastfool MLP's own
    predict on random points and corners inside the certified ball equals its decision at X."""
    rng = np.random.default_rng(seed)
    D, C = int(rng.integers(2, 7)), int(rng.integers(2, 6))
    widths = [D] + [int(rng.integers(2, 9)) for _ in range(depth - 1)] + [C]
    Ws = [rng.standard_normal((a, b)) * rng.choice([0.5, 2.0]) for a, b in zip(widths, widths[1:])]
    bs = [rng.standard_normal(b) * 0.3 for b in widths[1:]]
    m = ff.MLP(Ws, bs, act)
    X = rng.uniform(0.1, 0.9, (6, D))
    clip = (0.0, 1.0) if box else None
    c = ff.certify(m, X, norm=norm, method="crown" if act != "identity" else "auto", clip=clip)
    pred = m.predict(X)
    np.testing.assert_array_equal(c.pred, pred)
    for i in range(len(X)):
        r = c.radius[i]
        if r <= 0:
            continue
        if norm == "inf":
            pts = X[i] + r * rng.choice([-1.0, 1.0], (64, D)) * rng.choice([1.0, rng.random()],
                                                                          (64, 1))
        else:
            u = rng.standard_normal((64, D))
            pts = X[i] + r * u / np.linalg.norm(u, axis=1, keepdims=True)
        if box:
            pts = np.clip(pts, 0.0, 1.0)
        assert np.all(m.predict(pts) == pred[i]), (i, r)


def test_certificate_object_and_refusals(digits_nets, digits_logreg, digits):
    X, y = digits
    lin = ff.from_sklearn(digits_logreg)
    c = ff.certify(lin, X[:20])
    r, b = c  # the earlier tuple
    assert c.method == "affine" and len(c) == 20 and r is c.radius and b is c.boundary_class
    assert set(c.summary()) >= {"method", "norm", "rows", "median_radius"}
    np.testing.assert_array_equal(c.certified(0.0), np.ones(20, bool))
    est, Xt, yt = digits_nets["tanh"]
    m = ff.from_sklearn(est)
    with pytest.raises(ValueError, match="method"):
        ff.certify(m, Xt[:3], method="milp")
    with pytest.raises(ValueError, match="affine"):
        ff.certify(m, Xt[:3], method="affine")
    with pytest.raises(ValueError, match="upper"):
        ff.certify(m, Xt[:3], upper=np.ones(2))
    with pytest.raises(ValueError, match="clip"):
        ff.certify(m, Xt[:3] + 2, clip=(0, 1))
    # a known upper bound tightens nothing it should not: the radius stays below it
    up = np.full(3, 0.01)
    c3 = ff.certify(m, Xt[:3], norm="inf", upper=up, clip=(0, 1))
    assert np.all(c3.radius <= up)
    # float32 models are certified through their float64 weights
    m32 = ff.from_sklearn(est, dtype=np.float32)
    c32 = ff.certify(m32, Xt[:10].astype(np.float32), norm="inf", clip=(0, 1))
    c64 = ff.certify(m, Xt[:10].astype(np.float32).astype(np.float64), norm="inf", clip=(0, 1))
    np.testing.assert_allclose(c32.radius, c64.radius, rtol=1e-6, atol=1e-9)


def test_saturated_and_huge_networks_give_finite_sound_radii():
    rng = np.random.default_rng(0)
    m = ff.MLP([rng.standard_normal((4, 6)) * 1e3, rng.standard_normal((6, 3)) * 1e3], None,
               "tanh")
    X = rng.uniform(0, 1, (20, 4))
    c = ff.certify(m, X, norm="inf")
    assert np.isfinite(c.radius).all() and np.all(c.radius >= 0)
    res = ff.deepfool(m, X, norm="inf")
    assert np.all(c.radius[res.success] <= res.linf[res.success].astype(np.float64))


@pytest.mark.slow
def test_exact_mode_equals_the_tests_milp(iris01):
    X, y = iris01
    est = _fit(X, y, (8,), "relu", 0, 2000)
    m = ff.from_sklearn(est)
    rows = np.flatnonzero(est.predict(X) == y)[::9][:8]
    c = ff.certify(m, X[rows], norm="inf", method="exact", clip=(0, 1))
    ref = np.array([AR.exact_min_linf_relu(est.coefs_, est.intercepts_, X[i], y[i], 0.0, 1.0)
                    for i in rows])
    assert c.method == "exact" and c.extra["exact"].all()
    np.testing.assert_allclose(c.extra["upper"], ref, rtol=1e-6, atol=1e-8)
    assert np.all(c.radius <= ref) and np.all(c.radius >= ref * (1 - 1e-5) - 2e-7)
    assert c.extra["witness_fools"].all()
    np.testing.assert_array_equal(est.predict(c.extra["x_adv"]) != est.predict(X[rows]),
                                  np.ones(len(rows), bool))
    tanh = ff.from_sklearn(_fit(X, y, (5,), "tanh", 0, 300))
    with pytest.raises(ValueError, match="relu"):
        ff.certify(tanh, X[:2], norm="inf", method="exact")
    with pytest.raises(ValueError, match="norm"):
        ff.certify(m, X[:2], norm=2, method="exact")


@pytest.mark.slow
def test_exact_mode_brackets_a_two_hidden_layer_net_in_linf_and_l1(digits):
    """CROWN <= exact <= any attack, the witnesses fool (a MILP per rival: ~25 s)."""
    Xd, yd = digits
    est2 = _fit(Xd[:600], yd[:600], (12, 10), "relu", 0, 200)
    m2 = ff.from_sklearn(est2)
    Xt = Xd[1000:1004]
    for norm in ("inf", 1):
        e = ff.certify(m2, Xt, norm=norm, method="exact", clip=(0, 1), time_limit=20)
        b = ff.certify(m2, Xt, norm=norm, clip=(0, 1))
        f = ff.fmn(m2, Xt, est2.predict(Xt), norm=1 if norm == 1 else "inf", steps=100,
                   clip=(0, 1))
        fd = np.linalg.norm(f.x_adv - Xt, 1 if norm == 1 else np.inf, axis=1)
        assert np.all(b.radius <= e.extra["upper"] + 1e-9)
        assert np.all(e.radius <= e.extra["upper"])
        ok = f.success
        assert np.all(e.extra["upper"][ok] <= fd[ok] * (1 + 1e-6) + 1e-7)
        assert e.extra["witness_fools"][e.extra["exact"]].all()


@pytest.mark.parametrize("norm", [pytest.param("inf", marks=pytest.mark.slow), 1])
def test_verify_never_calls_a_fooled_row_robust_nor_fools_without_a_valid_example(iris01, norm):
    X, y = iris01
    est = _fit(X, y, (8,), "relu", 0, 2000)
    m = ff.from_sklearn(est)
    rows = np.arange(0, 150, 6)
    for eps in ((0.05, 0.15) if norm == "inf" else (0.2, 0.5)):
        v = ff.verify(m, X[rows], y[rows], eps=eps, norm=norm, clip=(0, 1), time_limit=30)
        assert set(np.unique(v.status)) <= {"robust", "fooled", "unknown"}
        f = v.status == "fooled"
        np.testing.assert_array_equal(est.predict(v.x_adv)[f] != y[rows][f], np.ones(f.sum(), bool))
        d = np.linalg.norm(v.x_adv - X[rows], np.inf if norm == "inf" else 1, axis=1)
        assert np.all(d[f] <= eps) and v.x_adv.min() >= 0 and v.x_adv.max() <= 1
        if norm == "inf":  # against the tests' own MILP: the exact answer per row
            own = est.predict(X[rows])
            ex = np.array([AR.exact_min_linf_relu(est.coefs_, est.intercepts_, X[i], own[j],
                                                  0.0, 1.0) if own[j] == y[i] else 0.0
                           for j, i in enumerate(rows)])
            assert np.all(ex[v.status == "robust"] > eps)
            assert np.all(ex[f] <= eps)
            assert (v.status == "unknown").sum() == 0  # a small relu net: everything decided
        r = v.status == "robust"
        assert np.all(v.radius[r] >= eps * (1 - 1e-6))
    assert set(v.summary()) >= {"robust_fraction", "fooled_fraction", "unknown_fraction"}


def test_verify_on_a_tanh_net_uses_bounds_and_attacks(digits_nets):
    est, X, y = digits_nets["tanh"]
    m = ff.from_sklearn(est)
    v = ff.verify(m, X, y, eps=0.03, norm="inf", clip=(0, 1))
    f = v.status == "fooled"
    np.testing.assert_array_equal(est.predict(v.x_adv)[f] != y[f], np.ones(f.sum(), bool))
    assert np.all(np.abs(v.x_adv - X).max(axis=1)[f] <= 0.03)
    robust = v.status == "robust"
    assert robust.any() and set(np.unique(v.stage[robust])) <= {"bound"}
    # no attack fools a row called robust
    p = ff.pgd(m, X[robust], y[robust], eps=0.03, steps=40, restarts=3, clip=(0, 1), seed=0)
    assert not p.success.any()
    c = v.counts()
    assert sum(c.values()) == len(X) and repr(v).startswith("Verification")


def test_a_pipelines_mlp_is_certified_in_raw_units(iris01):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = iris01
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = make_pipeline(StandardScaler(), MLPClassifier((6,), activation="relu", max_iter=500,
                                                          random_state=0)).fit(X * 10, y)
    m = ff.from_sklearn(p)
    Xr = X[::10] * 10
    c = ff.certify(m, Xr, norm="inf")
    assert np.all(c.radius >= 0) and c.radius.max() > 0
    res = ff.fmn(m, Xr, p.predict(Xr), norm="inf", steps=80)
    assert np.all(c.radius[res.success] <= res.linf[res.success])
    np.testing.assert_array_equal(c.pred, p.predict(Xr))
    with pytest.raises(NotImplementedError, match="Pipeline"):
        ff.certify(m, Xr, norm="inf", method="exact")


@settings(max_examples=80, deadline=None)
@given(act=st.sampled_from(["tanh", "logistic", "relu"]),
       l=st.floats(-60, 60), w=st.sampled_from([1e-12, 1e-7, 1e-3, 0.1, 1.0, 3.0, 10.0, 80.0]),
       shift=st.floats(0, 1))
def test_relaxation_lines_bound_the_activation(act, l, w, shift):
    """aL z + bL <= act(z) <= aU z + bU on [l, u], checked in long double on a dense grid (ends
    and the chord-slope points included): the parallel chord-slope lines and DeepPoly's."""
    from fastfool.certify import _chord_point, _relax
    u = l + w
    L, Uu = np.array([l - shift * w]), np.array([u])
    aL, bL, aU, bU, _ = _relax(act, L, Uu)
    z = np.linspace(np.longdouble(L[0]), np.longdouble(Uu[0]), 4001)
    if act != "relu":
        ch = (np.tanh(Uu) - np.tanh(L)) / (Uu - L) if act == "tanh" else None
        if ch is not None:
            zs = _chord_point(act, ch)
            z = np.concatenate([z, np.clip(np.array([zs[0], -zs[0]], np.longdouble), z[0], z[-1])])
    if act == "tanh":
        f = np.tanh(z)
    elif act == "logistic":
        f = 1 / (1 + np.exp(-z))
    else:
        f = np.maximum(z, 0)
    lo = np.longdouble(aL[0]) * z + np.longdouble(bL[0])
    hi = np.longdouble(aU[0]) * z + np.longdouble(bU[0])
    assert np.all(lo <= f), (act, L, Uu, float((lo - f).max()))
    assert np.all(f <= hi), (act, L, Uu, float((f - hi).max()))
