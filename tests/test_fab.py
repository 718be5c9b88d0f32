"""FAB (Croce & Hein 2020) against an independent row-by-row NumPy loop, its hyperplane-in-a-box
projection against a bisection and linear programs (HiGHS), the exact minimal L-inf radius of
a small ReLU network (a MILP in the tests), and the properties of a minimum-norm attack: never
below the exact optimum, inside the box, success is the estimator's own predict."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.optimize import linprog
from sklearn.datasets import load_iris
from sklearn.neural_network import MLPClassifier

import fastfool as ff
from fastfool.attacks.fab import project_plane

import attack_reference as AR

_ORD = {"2": 2, "inf": np.inf, "1": 1}


@pytest.fixture(scope="module")
def mlp(digits):
    X, y = digits
    tr = np.arange(len(X)) % 3 != 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((30,), activation="tanh", max_iter=80, random_state=0).fit(X[tr], y[tr])
    return est, X[~tr], y[~tr]


def _lp_norm(P, w, b, lo, hi, p):
    """The least L-inf or L1 norm of a move onto w . z = b inside the box, by a linear program
    (None when the plane misses the box)."""
    D = P.shape[0]
    lo = np.full(D, -np.inf) if lo is None else np.broadcast_to(lo, (D,))
    hi = np.full(D, np.inf) if hi is None else np.broadcast_to(hi, (D,))
    if p == "inf":
        c = np.r_[np.zeros(D), 1.0]
        A = np.block([[np.eye(D), -np.ones((D, 1))], [-np.eye(D), -np.ones((D, 1))]])
        res = linprog(c, A_ub=A, b_ub=np.zeros(2 * D), A_eq=np.r_[w, 0.0][None], b_eq=[b - w @ P],
                      bounds=[(lo[i] - P[i], hi[i] - P[i]) for i in range(D)] + [(0, None)],
                      method="highs")
    else:
        res = linprog(np.ones(2 * D), A_eq=np.r_[w, -w][None], b_eq=[b - w @ P],
                      bounds=[(0, hi[i] - P[i]) for i in range(D)]
                      + [(0, P[i] - lo[i]) for i in range(D)], method="highs")
    return res.fun if res.status == 0 else None


@given(D=st.integers(1, 13), seed=st.integers(0, 2**31 - 1),
       scale=st.sampled_from([1e-3, 0.3, 3.0, 30.0]), box=st.sampled_from(["unit", "none", "rows"]),
       zeros=st.booleans())
def test_project_plane_is_the_least_norm_move_in_the_box(D, seed, scale, box, zeros):
    rng = np.random.default_rng(seed)
    n = 3
    if box == "unit":
        lo, hi = np.zeros(D), np.ones(D)
    elif box == "none":
        lo = hi = None
    else:
        lo, hi = -rng.uniform(0, 2, D), rng.uniform(0, 2, D)
    if box == "unit":
        P = rng.uniform(0, 1, (n, D))
    elif box == "none":
        P = rng.standard_normal((n, D))
    else:
        P = rng.uniform(lo, hi, (n, D))
    w = rng.standard_normal((n, D))
    if zeros:
        w[rng.random((n, D)) < 0.3] = 0.0
    b = np.einsum("ij,ij->i", w, P) + scale * rng.standard_normal(n)
    b[0] = w[0] @ P[0]  # already on the plane: no move
    for p in ("inf", "2", "1"):
        d = project_plane(P, w, b, lo, hi, p)
        z = P + d
        if lo is not None:
            assert np.all(z >= lo - 1e-12) and np.all(z <= hi + 1e-12)
        assert np.abs(d[0]).max(initial=0) <= 1e-12  # on the plane up to rounding
        for i in range(n):
            ref = AR.project_plane_bisect(P[i], w[i], b[i], lo, hi, p)
            np.testing.assert_allclose(d[i], ref, rtol=1e-9, atol=1e-9 * (1 + np.abs(ref).max()))
            if p != "2":
                best = _lp_norm(P[i], w[i], b[i], lo, hi, p)
                got = np.linalg.norm(d[i], _ORD[p])
                if best is not None and np.any(w[i] != 0):
                    assert abs(w[i] @ z[i] - b[i]) <= 1e-9 * (1 + abs(b[i]) + np.abs(w[i]).sum())
                    assert got <= best * (1 + 1e-9) + 1e-12


def test_project_plane_without_reach_goes_to_the_corner_and_handles_empty_shapes():
    P = np.array([[0.5, 0.5]])
    w = np.array([[1.0, -2.0]])
    d = project_plane(P, w, np.array([10.0]), 0.0, 1.0, "2")  # w . z <= 1 in the box
    np.testing.assert_array_equal(P + d, [[1.0, 0.0]])
    assert project_plane(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0), None, None, "inf").shape \
        == (0, 4)
    assert project_plane(np.zeros((2, 0)), np.zeros((2, 0)), np.ones(2), None, None, "1").shape \
        == (2, 0)


@pytest.mark.parametrize("norm", ["inf", pytest.param("2", marks=pytest.mark.slow),
                                  pytest.param("1", marks=pytest.mark.slow)])
@pytest.mark.parametrize("mode", ["untargeted", "fab-t", "target"])
def test_fab_matches_the_reference_loop(mlp, norm, mode):
    est, X, y = mlp
    m = ff.from_sklearn(est)  # float64
    X, y = X[:10], y[:10]
    nn = 1 if norm == "1" else (2 if norm == "2" else "inf")
    t = None
    kw = dict(norm=nn, steps=10, clip=(0, 1))
    if mode == "fab-t":  # FAB-T with one target: the most likely other class
        L = m.logits(X)
        L[np.arange(len(y)), y] = -np.inf
        t = np.argmax(L, axis=1)
        res = ff.fab(m, X, y, n_targets=1, **kw)
    elif mode == "target":
        t = (y + 3) % 10
        res = ff.fab(m, X, y, target=t, **kw)
    else:
        res = ff.fab(m, X, y, **kw)
    ref, dist = AR.fab(AR.spec_of(m), X, y, norm, 10, 0.0, 1.0, target=t,
                       toward_target=mode == "target")
    same = np.all(np.abs(res.x_adv - ref) <= 1e-8, axis=1)
    assert same.mean() >= 0.9, (norm, same.mean())  # 1.0 when written
    ok = np.isfinite(dist) & same
    np.testing.assert_allclose(res.extra["distance"][ok], dist[ok], rtol=1e-9)
    truth = est.predict(res.x_adv)
    np.testing.assert_array_equal(res.success, truth == t if mode == "target" else truth != y)
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1


@pytest.mark.slow
def test_fab_is_never_below_the_exact_minimal_linf_radius():
    X, y = load_iris(return_X_y=True)
    X = (X - X.min(0)) / (X.max(0) - X.min(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((8,), activation="relu", max_iter=2000, random_state=0).fit(X, y)
    m = ff.from_sklearn(est)
    rows = np.flatnonzero(est.predict(X) == y)[::5][:20]
    res = ff.fab(m, X[rows], y[rows], norm="inf", steps=100, restarts=3, clip=(0, 1))
    assert res.success.all()
    found = res.linf.astype(np.float64)
    exact = np.array([AR.exact_min_linf_relu(est.coefs_, est.intercepts_, X[i], y[i], 0.0, 1.0)
                      for i in rows])
    ratio = found / exact
    assert np.all(ratio >= 1 - 1e-9), ratio.min()
    assert np.median(ratio) <= 1.05, np.median(ratio)
    np.testing.assert_array_equal(res.success, est.predict(res.x_adv) != y[rows])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fab_properties(mlp, dtype):
    est, X, y = mlp
    m = ff.from_sklearn(est, dtype=dtype)
    X, y = X[:40].astype(dtype), y[:40]
    res = ff.fab(m, X, y, norm="inf", steps=30, clip=(0, 1))
    truth = est.predict(res.x_adv)
    np.testing.assert_array_equal(res.pred, truth)
    np.testing.assert_array_equal(res.success, truth != y)
    assert res.x_adv.dtype == dtype and res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    found = np.isfinite(res.extra["distance"])
    np.testing.assert_allclose(res.extra["distance"][found], res.linf[found], rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_array_equal(res.x_adv[~found], X[~found])
    # smaller than DeepFool's on the rows both fool (a minimum-norm attack's point)
    df = ff.deepfool(m, X, y, norm="inf", clip=(0, 1))
    both = res.success & df.success
    assert np.median(res.linf[both]) < np.median(df.linf[both])
    # a row's result does not depend on the other rows
    part = ff.fab(m, X[5:12], y[5:12], norm="inf", steps=30, clip=(0, 1))
    np.testing.assert_array_equal(part.x_adv, res.x_adv[5:12])
    # restarts: reproducible with the seed, never worse than one run
    r3 = ff.fab(m, X, y, norm="inf", steps=30, restarts=3, clip=(0, 1), seed=4)
    again = ff.fab(m, X, y, norm="inf", steps=30, restarts=3, clip=(0, 1), seed=4)
    np.testing.assert_array_equal(r3.x_adv, again.x_adv)
    assert np.all(r3.extra["distance"] <= res.extra["distance"])
    np.testing.assert_array_equal(r3.success, est.predict(r3.x_adv) != y)


def test_fab_targets_and_fab_t(mlp):
    est, X, y = mlp
    m = ff.from_sklearn(est)
    X, y = X[:30], y[:30]
    t = (y + 3) % 10
    res = ff.fab(m, X, y, norm=2, steps=40, target=t, clip=(0, 1))
    truth = est.predict(res.x_adv)
    np.testing.assert_array_equal(res.success, truth == t)
    assert res.success.mean() >= 0.8
    # FAB-T over 3 targets: the closest over its runs, never farther than one target's run
    r3 = ff.fab(m, X, y, norm=2, steps=40, n_targets=3, clip=(0, 1))
    r1 = ff.fab(m, X, y, norm=2, steps=40, n_targets=1, clip=(0, 1))
    assert np.all(r3.extra["distance"] <= r1.extra["distance"])
    np.testing.assert_array_equal(r3.success, est.predict(r3.x_adv) != y)
    # with eps: rows found within eps are not attacked by later targets
    e = ff.fab(m, X, y, norm=2, steps=40, n_targets=3, eps=0.5, clip=(0, 1))
    inside = e.extra["distance"] <= 0.5
    np.testing.assert_array_equal(inside, r3.extra["distance"] <= 0.5)
    clean = est.predict(X) == y
    assert np.all(e.iterations[(r1.extra["distance"] <= 0.5) & clean] == 40)
    assert np.all(e.iterations[~clean] == 0) and np.all(e.extra["distance"][~clean] == 0)


def test_fab_refusals(mlp):
    est, X, y = mlp
    m = ff.from_sklearn(est)
    for kw, match in ((dict(norm=3), "norm"), (dict(target=1, n_targets=2), "n_targets"),
                      (dict(beta=1.0), "beta"), (dict(alpha_max=2.0), "alpha_max"),
                      (dict(steps=0), "steps"), (dict(eps=-1.0), "eps"),
                      (dict(target=y[:3]), "target")):
        with pytest.raises(ValueError, match=match):
            ff.fab(m, X[:3], y[:3], **kw)


@given(n=st.sampled_from([0, 1, 2, 7, 65]), D=st.sampled_from([1, 3, 64, 301]),
       seed=st.integers(0, 2**31 - 1), norm=st.sampled_from(["inf", 2, 1]),
       view=st.sampled_from(["c", "fortran", "strided"]), f32=st.booleans())
def test_fab_step_kernel_is_the_projections_and_the_mix(n, D, seed, norm, view, f32):
    """kernels.fab_step against project_plane_bisect (the tests' own projection) and the mixing
    formula in NumPy, over shapes (0, 1, odd, large), layouts and a float32 iterate."""
    rng = np.random.default_rng(seed)
    X0 = rng.uniform(0, 1, (n, D))
    X0[rng.random((n, D)) < 0.3] = 0.0
    X = np.clip(X0 + rng.normal(0, 0.05, (n, D)), 0, 1)
    if f32:
        X = X.astype(np.float32).astype(np.float64)
    W = rng.standard_normal((n, D))
    b = np.einsum("ij,ij->i", W, X) + rng.standard_normal(n)
    reach = np.full(n, 1e4)

    def lay(a):
        if view == "fortran":
            return np.asfortranarray(a)
        if view == "strided":
            big = np.zeros((a.shape[0], 2 * a.shape[1]))
            big[:, ::2] = a
            return big[:, ::2]
        return a
    out = ff.kernels.fab_step(lay(X.astype(np.float32) if f32 else X), lay(X0), lay(W), b, 0.0,
                              1.0, norm=norm, eta=1.05, alpha_max=0.1, reach=reach)
    assert out.shape == (n, D)
    p = {"inf": "inf", 2: "2", 1: "1"}[norm]
    o = _ORD[p]
    for i in range(n):
        d1 = AR.project_plane_bisect(X[i], W[i], b[i], 0.0, 1.0, p)
        d2 = AR.project_plane_bisect(X0[i], W[i], b[i], 0.0, 1.0, p)
        a1 = max(np.linalg.norm(d1, o), 1e-8)
        a2 = max(np.linalg.norm(d2, o), 1e-8)
        a = min(a1 / (a1 + a2), 0.1)
        ref = np.clip((X[i] + 1.05 * d1) * (1 - a) + (X0[i] + 1.05 * d2) * a, 0, 1)
        np.testing.assert_allclose(out[i], ref, rtol=1e-9, atol=1e-9)


def test_projection_kernels_refuse_bad_arguments_and_keep_non_finite_rows_still():
    K = ff.kernels
    X = np.zeros((2, 3))
    with pytest.raises(ValueError, match="W"):
        K.project_plane(X, np.zeros((2, 4)), np.zeros(2))
    with pytest.raises(ValueError, match="b"):
        K.project_plane(X, X, np.zeros(3))
    with pytest.raises(ValueError, match="lo, hi"):
        K.project_plane(X, X, np.zeros(2), 1.0, 0.0)
    with pytest.raises(ValueError, match="norm"):
        K.project_plane(X, X, np.zeros(2), norm=3)
    with pytest.raises(ValueError, match="reach"):
        K.fab_step(X, X, X, np.zeros(2), reach=np.ones(3))
    with pytest.raises(ValueError, match="alpha_max"):
        K.fab_step(X, X, X, np.zeros(2), alpha_max=2.0)
    W = np.array([[np.nan, 1.0, 1.0], [1.0, 1.0, 1.0]])
    d = K.project_plane(X, W, np.array([1.0, 1.0]))
    np.testing.assert_array_equal(d[0], 0.0)  # a NaN gradient: no move
    np.testing.assert_allclose(d[1], [1 / 3] * 3)  # L2 without a box: along w
    Xi = np.array([[1e308, 1e308, 0.0]])
    np.testing.assert_array_equal(K.project_plane(Xi, np.ones((1, 3)), np.zeros(1)), 0.0)
    # a move beyond reach is not taken
    step = K.fab_step(X[:1], X[:1], np.ones((1, 3)) * 1e-9, np.ones(1), reach=np.ones(1))
    np.testing.assert_array_equal(step, X[:1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm,eps", [("inf", None), ("inf", 0.06), ("inf", 0.2), (2, 0.7)])
def test_fab_t_batched_targets_are_the_sequential_runs(mlp, monkeypatch, dtype, norm, eps):
    """FAB-T's runs toward its targets side by side (a row's later runs leaving the batch once
    one lands within eps) give the bits of the runs one after another: points, distances and
    the steps charged to each row."""
    import importlib
    F = importlib.import_module("fastfool.attacks.fab")
    est, X, y = mlp
    m = ff.from_sklearn(est, dtype=dtype)
    X, y = X[:60].astype(dtype), y[:60]
    kw = dict(norm=norm, steps=25, n_targets=4, eps=eps, clip=(0, 1))
    fast = ff.fab(m, X, y, **kw)
    monkeypatch.setattr(F, "_BATCH_TARGETS", False)
    ref = ff.fab(m, X, y, **kw)
    np.testing.assert_array_equal(fast.x_adv, ref.x_adv)
    np.testing.assert_array_equal(fast.extra["distance"], ref.extra["distance"])
    np.testing.assert_array_equal(fast.iterations, ref.iterations)
    np.testing.assert_array_equal(fast.success, est.predict(fast.x_adv) != y)
    if eps is not None:  # rows stopped after one target, and (at the smaller radii) later
        assert np.any(ref.iterations == 25)
        assert eps == 0.2 or np.any(ref.iterations > 25), np.bincount(ref.iterations)


@given(n=st.sampled_from([0, 1, 2, 7, 33]), D=st.sampled_from([1, 3, 13, 64]),
       seed=st.integers(0, 2**31 - 1), box=st.sampled_from(["unit", "none", "lo", "hi"]),
       ties=st.booleans())
def test_array_projection_of_the_gpu_is_the_reference(n, D, seed, box, ties):
    """fab.plane_moves / fab.fab_step_array (the device's FAB step, in array code; run here on
    NumPy) against the tests' bisection projection and the CPU kernel, with unbounded sides,
    zero and tied gradient coordinates, rows on the plane and non-finite rows."""
    from fastfool.attacks.fab import fab_step_array, plane_moves
    rng = np.random.default_rng(seed)
    lo = None if box in ("none", "hi") else np.zeros(D)
    hi = None if box in ("none", "lo") else np.ones(D)
    X = rng.uniform(0, 1, (n, D))
    W = rng.standard_normal((n, D))
    W[rng.random((n, D)) < 0.3] = 0.0
    if ties:
        W = np.round(W * 2) / 2
    b = np.einsum("ij,ij->i", W, X) + rng.choice([0.01, 1.0, 30.0]) * rng.standard_normal(n)
    if n > 1:
        b[0] = W[0] @ X[0]  # on the plane
        W[1, 0] = np.nan  # no move
    X0 = np.clip(X + rng.normal(0, 0.1, (n, D)), 0, 1)
    reach = np.full(n, rng.choice([np.inf, 0.3]))
    for p in ("inf", "2", "1"):
        d = plane_moves(X, W, b, lo, hi, p)
        assert d.shape == (n, D)
        for i in range(n):
            ref = np.zeros(D) if not np.all(np.isfinite(W[i])) else \
                AR.project_plane_bisect(X[i], W[i], b[i], lo, hi, p)
            np.testing.assert_allclose(d[i], ref, rtol=1e-9, atol=1e-9 * (1 + np.abs(ref).max()))
        k = {"inf": "inf", "2": 2, "1": 1}[p]
        want = ff.kernels.fab_step(X, X0, W, b, lo, hi, norm=k, eta=1.05, alpha_max=0.1,
                                   reach=reach)
        got = fab_step_array(X, X0, W, b, lo, hi, p, 1.05, 0.1, reach)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
