"""``quantize=`` in every attack: the returned points lie on X's grid (digits: multiples of
1/16), inside the ball and the box, and ``success`` is the estimator's own ``predict`` there.
The rounding helper is checked against an element-by-element reference and against the fused
kernels' ``quantum`` (the rule PGD and FGSM already follow)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.ensemble import RandomForestClassifier
from sklearn.neural_network import MLPClassifier

import fastfool as ff
from fastfool import kernels
from fastfool.attacks._common import Grid, on_grid

Q = 1 / 16  # digits' own grid (X / 16 is exact in binary)


def ref_on_grid(x, x0, q, eps, norm, lo, hi, outward):
    """Element by element, in float64: round (x - x0) / q to the nearest integer (half to
    even) or away from zero; L-inf: an element past eps moves one step back; L2 / L1: a row
    whose rounded step is too long is truncated toward x0 instead; then the box."""
    out = np.empty_like(x, dtype=np.float64)
    for i in range(x.shape[0]):
        r = [(float(x[i, j]) - float(x0[i, j])) / q for j in range(x.shape[1])]
        k = [np.sign(v) * np.ceil(abs(v)) if outward else round(v) for v in r]
        d = [kk * q for kk in k]
        if norm == "inf":
            d = [v - np.sign(v) * q if abs(v) > eps else v for v in d]
        else:
            p = 2 if norm == "2" else 1
            if sum(abs(v) ** p for v in d) ** (1 / p) > eps:
                d = [np.trunc(v) * q for v in r]
        for j in range(x.shape[1]):
            v = float(x0[i, j]) + d[j]
            out[i, j] = min(max(v, lo), hi)
    return out


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 5), d=st.integers(1, 9), seed=st.integers(0, 2**31 - 1),
       norm=st.sampled_from(["inf", "2", "1"]), outward=st.booleans(),
       eps=st.sampled_from([np.inf, 0.25, 0.3125, 1.0]))
def test_on_grid_matches_the_element_reference(n, d, seed, norm, outward, eps):
    rng = np.random.default_rng(seed)
    x0 = rng.integers(0, 17, (n, d)) * Q
    x = x0 + rng.uniform(-0.4, 0.4, (n, d))
    if np.isfinite(eps) and n:  # x inside the ball (as every attack's points are)
        ordn = {"inf": np.inf, "2": 2, "1": 1}[norm]
        r = np.linalg.norm(x - x0, ordn, axis=1, keepdims=True)
        x = x0 + (x - x0) * np.minimum(1, eps / np.maximum(r, 1e-300))
    x = np.clip(x, 0, 1)
    got = on_grid(x, x0, Q, eps=eps, norm=norm, lo=0.0, hi=1.0, outward=outward)
    want = ref_on_grid(x, x0, Q, eps, norm, 0.0, 1.0, outward)
    np.testing.assert_array_equal(got, want)
    k = (got - x0) / Q
    np.testing.assert_array_equal(k, np.rint(k))  # on the grid
    if np.isfinite(eps) and n:
        ordn = {"inf": np.inf, "2": 2, "1": 1}[norm]
        assert np.all(np.linalg.norm(got - x0, ordn, axis=1) <= eps * (1 + 1e-12))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("norm", ["inf", 2])
def test_on_grid_is_the_kernels_quantum(dtype, norm):
    rng = np.random.default_rng(3)
    x0 = (rng.integers(0, 17, (40, 13)) * Q).astype(dtype)
    eps = 0.3 if norm == "inf" else 0.7
    x = x0 + rng.uniform(-0.35, 0.35, x0.shape).astype(dtype)
    if norm == 2:  # inside the ball, as the kernel's projection would leave it
        d = x - x0
        n = np.linalg.norm(d, axis=1, keepdims=True)
        x = (x0 + d * np.minimum(1, eps / n)).astype(dtype)
    else:
        x = np.clip(x, x0 - eps, x0 + eps).astype(dtype)
    want = kernels.fused_update(x, np.zeros_like(x), x0, step=0.0, eps=eps, norm=norm,
                                clip=(0, 1), quantum=Q)
    got = on_grid(x, x0, Q, eps=eps, norm=str(norm), lo=dtype(0), hi=dtype(1))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)


def test_grid_refuses_bad_steps():
    for bad in (0, -1, np.nan, np.inf):
        with pytest.raises(ValueError, match="quantize"):
            Grid(bad)
    with pytest.raises(TypeError, match="quantize"):
        Grid("x")
    assert not Grid(None)


@pytest.fixture(scope="module")
def net(digits):
    X, y = digits
    tr = np.arange(len(X)) % 3 != 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((30,), activation="tanh", max_iter=80, random_state=0).fit(X[tr], y[tr])
    keep = est.predict(X[~tr]) == y[~tr]
    return est, X[~tr][keep][:40], y[~tr][keep][:40]


EPS = {"inf": 2 * Q, "2": 0.75, "1": 3.0}

ATTACKS = {
    "apgd": lambda m, X, y, n, **kw: ff.apgd(m, X, y, eps=EPS[n], norm=n, steps=20, **kw),
    "apgd-l1": lambda m, X, y, n, **kw: ff.apgd(m, X, y, eps=EPS["1"], norm=1, steps=20, **kw),
    "square": lambda m, X, y, n, **kw: ff.square(m, X, y, eps=EPS[n], norm=n, max_queries=200,
                                                 **kw),
    "autoattack": lambda m, X, y, n, **kw: ff.autoattack(
        m, X, y, eps=EPS[n], norm=n, version="custom", attacks=["apgd-ce", "fab-t", "square"],
        steps=10, n_targets=2, square_queries=100, **kw),
    "fab": lambda m, X, y, n, **kw: ff.fab(m, X, y, norm=n, steps=20, **kw),
    "fmn": lambda m, X, y, n, **kw: ff.fmn(m, X, y, norm=n, steps=30, **kw),
    "ddn": lambda m, X, y, n, **kw: ff.ddn(m, X, y, steps=30, **kw),
    "cw": lambda m, X, y, n, **kw: ff.cw(m, X, y, steps=60, binary_search_steps=3, **kw),
    "deepfool": lambda m, X, y, n, **kw: ff.deepfool(m, X, y, norm=n, **kw),
    "universal": lambda m, X, y, n, **kw: ff.universal(m, X, y, eps=EPS[n], norm=n,
                                                       max_passes=2, **kw),
}
BOUNDED = {"apgd", "apgd-l1", "square", "autoattack", "universal"}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_return_grid_points_judged_by_the_estimator(net, name, dtype):
    est, X, y = net
    m = ff.from_sklearn(est, dtype=dtype)
    Xd = X.astype(dtype)
    norm = "2" if name in ("ddn", "cw") else ("1" if name == "apgd-l1" else "inf")
    plain = ATTACKS[name](m, Xd, y, norm, clip=(0, 1))
    res = ATTACKS[name](m, Xd, y, norm, clip=(0, 1), quantize=Q)
    assert res.params["quantize"] == Q
    xa = np.asarray(res.x_adv, np.float64)
    k = (xa - X) / Q
    np.testing.assert_allclose(k, np.rint(k), atol=1e-5)  # on the grid
    assert xa.min() >= 0 and xa.max() <= 1
    if name in BOUNDED:
        ordn = {"inf": np.inf, "2": 2, "1": 1}[norm]
        assert np.all(np.linalg.norm(xa - X, ordn, axis=1) <= EPS[norm] * (1 + 1e-6))
    # the verdict is the estimator's, on the returned points
    np.testing.assert_array_equal(res.success, est.predict(res.x_adv) != y)
    np.testing.assert_allclose(res.linf, np.abs(xa - X).max(axis=1), rtol=1e-6)
    # rounding costs little: never more than a few rows of the unrounded attack's successes
    assert res.success.sum() >= plain.success.sum() - max(3, plain.success.sum() // 4), \
        (plain.success.sum(), res.success.sum())
    assert res.success.any()


def test_universal_perturbation_is_on_the_grid(net):
    est, X, y = net
    res = ff.universal(ff.from_sklearn(est), X, y, eps=EPS["inf"], max_passes=2, clip=(0, 1),
                       quantize=Q)
    v = res.perturbation
    np.testing.assert_allclose(v / Q, np.rint(v / Q), atol=1e-9)
    assert np.abs(v).max() <= EPS["inf"]


@pytest.mark.parametrize("attack", ["hsj", "score"])
def test_label_and_score_attacks_on_the_grid(digits, attack):
    X, y = digits
    tr = np.arange(len(X)) % 3 != 0
    rf = RandomForestClassifier(20, random_state=0).fit(X[tr], y[tr])
    Xt, yt = X[~tr][:15], y[~tr][:15]
    if attack == "hsj":
        res = ff.hop_skip_jump(rf, Xt, yt, max_queries=300, clip=(0, 1), quantize=Q)
        plain = ff.hop_skip_jump(rf, Xt, yt, max_queries=300, clip=(0, 1))
    else:
        res = ff.score_attack(rf, Xt, yt, eps=4 * Q, max_queries=300, clip=(0, 1), quantize=Q)
        plain = ff.score_attack(rf, Xt, yt, eps=4 * Q, max_queries=300, clip=(0, 1))
        assert np.all(np.abs(res.x_adv - Xt).max(axis=1) <= 4 * Q)
    k = (res.x_adv - Xt) / Q
    np.testing.assert_allclose(k, np.rint(k), atol=1e-9)
    np.testing.assert_array_equal(res.success, rf.predict(res.x_adv) != yt)
    assert res.success.sum() >= plain.success.sum() - 3, (plain.success.sum(), res.success.sum())
    assert res.queries.max() <= 300  # the grid check's queries are counted, in the budget
