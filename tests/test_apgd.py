"""APGD (Croce & Hein 2020) against an independent NumPy implementation of the same loop
(tests/attack_reference.py: row by row, NumPy gradients), the paper's checkpoints, the DLR
losses and their gradients, and the properties every attack keeps: inside the ball and the box,
success is the estimator's own predict, and no weaker than PGD."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier

import fastfool as ff
from fastfool.attacks.apgd import _dlr, checkpoints

import attack_reference as AR


@pytest.fixture(scope="module")
def mlp(digits):
    X, y = digits
    tr = np.arange(len(X)) % 3 != 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((30, 12), activation="tanh", max_iter=80, random_state=0).fit(X[tr], y[tr])
    return est, X[~tr], y[~tr]


def test_checkpoints_are_the_papers():
    # Croce & Hein 2020: w = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 of N_iter
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(100) == AR.apgd_checkpoints(100)
    for n in (1, 5, 17, 250, 1000):
        c = checkpoints(n)
        assert c == AR.apgd_checkpoints(n) and all(0 < a < n for a in c) and c == sorted(set(c))


def test_dlr_losses_and_gradients():
    """The vectorised DLR / targeted DLR against row-by-row loops, and their gradients against
    central differences."""
    rng = np.random.default_rng(0)
    L = rng.standard_normal((40, 7)) * 3
    y = rng.integers(0, 7, 40)
    t = (y + 1 + rng.integers(0, 6, 40)) % 7
    for tt in (None, t):
        val, V = _dlr(L, y, tt)
        rv, rV = AR.dlr_loss_and_cotangent(L, y, tt)
        np.testing.assert_allclose(val, rv, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(V, rV, rtol=1e-10, atol=1e-12)
        h = 1e-6
        for c in range(7):
            E = np.zeros_like(L)
            E[:, c] = h
            fd = (_dlr(L + E, y, tt)[0] - _dlr(L - E, y, tt)[0]) / (2 * h)
            np.testing.assert_allclose(V[:, c], fd, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
@pytest.mark.parametrize("targeted", [False, True])
def test_apgd_matches_the_reference_loop(mlp, loss, targeted):
    """Same start (X), same steps: fastfool's batched APGD and the row-by-row NumPy loop reach
    the same points (rows where a near-zero gradient component's sign differs may part ways)."""
    est, X, y = mlp
    m = ff.from_sklearn(est)  # float64
    X, y = X[:40], y[:40]
    spec = AR.spec_of(m)
    t = None
    if targeted:
        L = m.decision_function(X)
        order = np.argsort(-L, axis=1, kind="stable")
        t = np.array([[c for c in row if c != yy][0] for row, yy in zip(order, y)])
    res = ff.apgd(m, X, y, eps=0.08, steps=25, loss=loss, target=1 if targeted else None,
                  clip=(0, 1))
    ref = AR.apgd(spec, X, y, 0.08, 25, loss=loss, t=t, lo=0.0, hi=1.0)
    same = np.all(np.abs(res.x_adv - ref) <= 1e-9, axis=1)
    assert same.mean() >= 0.95, (loss, targeted, same.mean())  # 1.0 when written
    np.testing.assert_array_equal(res.success[same], (est.predict(ref) != y)[same])


@pytest.mark.parametrize("norm", ["inf", 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_apgd_properties(mlp, norm, dtype):
    est, X, y = mlp
    m = ff.from_sklearn(est, dtype=dtype)
    Xt = X.astype(dtype)
    eps = 0.06 if norm == "inf" else 0.8
    Xt, y = Xt[:300], y[:300]
    res = ff.apgd(m, Xt, y, eps=eps, norm=norm, steps=20, restarts=2, seed=3, clip=(0, 1))
    n = res.linf if norm == "inf" else res.l2
    assert np.all(n <= eps * (1 + 1e-5) + 1e-6)
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    truth = est.predict(res.x_adv)
    np.testing.assert_array_equal(res.pred, truth)
    np.testing.assert_array_equal(res.success, truth != y)
    assert np.all(res.iterations > 0)
    again = ff.apgd(m, Xt, y, eps=eps, norm=norm, steps=20, restarts=2, seed=3, clip=(0, 1))
    np.testing.assert_array_equal(again.x_adv, res.x_adv)  # reproducible with the seed
    pgd = ff.pgd(m, Xt, y, eps=eps, norm=norm, steps=20, clip=(0, 1), seed=3)
    assert res.success.mean() >= pgd.success.mean() - 0.02
    T = ff.apgd(m, Xt, y, eps=eps, norm=norm, steps=20, loss="dlr", target="top-3", clip=(0, 1))
    np.testing.assert_array_equal(T.pred, est.predict(T.x_adv))
    assert T.success.mean() >= res.success.mean() - 0.05


def test_apgd_refuses_bad_settings(mlp):
    est, X, y = mlp
    m = ff.from_sklearn(est)
    for kw, match in ((dict(loss="cw"), "loss"), (dict(norm=3), "norm"), (dict(target="x"), "target"),
                      (dict(steps=0), "steps")):
        with pytest.raises(ValueError, match=match):
            ff.apgd(m, X[:3], y[:3], eps=0.1, **kw)
    binary = ff.LinearModel(np.ones((1, 64)))
    with pytest.raises(ValueError, match="dlr"):
        ff.apgd(binary, X[:3], eps=0.1, loss="dlr")


def test_l1_projection_is_the_bisections():
    from fastfool.attacks.apgd import project_l1_box
    rng = np.random.default_rng(3)
    for D in (1, 2, 7, 64, 301):
        x0 = rng.uniform(0, 1, (6, D))
        x0[:, ::3] = 0.0
        v = x0 + rng.normal(0, 0.4, (6, D))
        for eps in (0.05, 1.0, 50.0):
            z = project_l1_box(x0, v, eps, 0.0, 1.0)
            for i in range(6):
                ref = AR.project_l1_box_bisect(x0[i], v[i], eps, 0.0, 1.0)
                np.testing.assert_allclose(z[i], ref, atol=1e-10)
            assert np.all(np.abs(z - x0).sum(axis=1) <= eps * (1 + 1e-9))  # to rounding
            assert z.min() >= 0 and z.max() <= 1
    # without a box: the plain L1-ball projection
    z = project_l1_box(np.zeros((1, 3)), np.array([[3.0, -1.0, 0.5]]), 2.0, None, None)
    np.testing.assert_allclose(z, [[2.0, 0.0, 0.0]])


def test_l1_apgd_matches_the_reference_loop_and_keeps_the_ball(mlp):
    est, X, y = mlp
    m = ff.from_sklearn(est)
    X, y = X[:15], y[:15]
    res = ff.apgd(m, X, y, eps=1.5, norm=1, steps=25, clip=(0, 1))
    ref = AR.apgd_l1(AR.spec_of(m), X, y, 1.5, 25, 0.0, 1.0)
    same = np.all(np.abs(res.x_adv - ref) <= 1e-8, axis=1)
    assert same.mean() >= 0.9, same.mean()  # 1.0 when written
    np.testing.assert_array_equal(res.success, est.predict(res.x_adv) != y)
    m32 = ff.from_sklearn(est, dtype=np.float32)
    r32 = ff.apgd(m32, X.astype(np.float32), y, eps=1.5, norm=1, steps=25, clip=(0, 1),
                  restarts=2, seed=1)
    d = np.abs(r32.x_adv.astype(np.float64) - X.astype(np.float32)).sum(axis=1)
    assert np.all(d <= 1.5 * (1 + 1e-5)) and r32.x_adv.min() >= 0 and r32.x_adv.max() <= 1
    np.testing.assert_array_equal(r32.success, est.predict(r32.x_adv) != y)
    # stronger than FMN within the same budget, on these rows
    f = ff.fmn(m, X, y, norm=1, steps=25, clip=(0, 1))
    within = f.success & (np.abs(f.x_adv - X).sum(axis=1) <= 1.5)
    assert res.success.sum() >= within.sum() - 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm,eps,loss", [("inf", 0.05, "dlr"), ("inf", 0.12, "ce"),
                                           (2, 0.6, "dlr")])
def test_apgd_t_batched_targets_are_the_sequential_runs(mlp, monkeypatch, dtype, norm, eps, loss):
    """APGD-T's runs toward its targets side by side (a row's later runs leaving the batch once
    one is fooled by the logits, in batches of at most _PAIRS rows) give the bits of the runs
    one after another, and the steps charged to each row."""
    import importlib
    A = importlib.import_module("fastfool.attacks.apgd")
    est, X, y = mlp
    m = ff.from_sklearn(est, dtype=dtype)
    X, y = X[:80].astype(dtype), y[:80]
    kw = dict(eps=eps, norm=norm, loss=loss, target=5, steps=20, clip=(0, 1))
    monkeypatch.setattr(A, "_PAIRS", 160)  # two targets at a time, then the rest
    fast = ff.apgd(m, X, y, **kw)
    monkeypatch.setattr(A, "_BATCH_TARGETS", False)
    ref = ff.apgd(m, X, y, **kw)
    np.testing.assert_array_equal(fast.x_adv, ref.x_adv)
    np.testing.assert_array_equal(fast.iterations, ref.iterations)
    np.testing.assert_array_equal(fast.success, est.predict(fast.x_adv) != y)
    assert np.any(ref.iterations == 20) and np.any(ref.iterations > 40)  # early and late rows
