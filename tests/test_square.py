"""Square Attack (Andriushchenko et al. 2020) against an independent NumPy loop over explicit
images (tests/attack_reference.py), its schedule, and the properties every attack keeps: inside
the ball and the box, success is the estimator's own predict, queries within the budget,
reproducible with the seed, and more queries never fool fewer rows."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC

import fastfool as ff
from fastfool.attacks.square import image_layout, p_schedule

import attack_reference as AR


@pytest.fixture(scope="module")
def mlp(digits):
    X, y = digits
    tr = np.arange(len(X)) % 3 != 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((30,), activation="relu", max_iter=80, random_state=0).fit(X[tr], y[tr])
    return est, X[~tr], y[~tr]


def test_schedule_is_the_papers():
    for n in (1, 7, 100, 1000, 5000, 10000):
        for it in range(0, n, max(1, n // 97)):
            assert p_schedule(0.8, it, n) == AR.square_p(0.8, it, n)
    assert p_schedule(0.8, 0, 10000) == 0.8 and p_schedule(0.8, 11, 10000) == 0.4
    assert p_schedule(0.8, 9000, 10000) == 0.8 / 512


def test_layouts():
    H, W, C, g = image_layout(64)
    assert (H, W, C) == (8, 8, 1) and g[1, 2, 0] == 10
    H, W, C, g = image_layout(10)
    assert (H, W, C) == (1, 10, 1)
    H, W, C, g = image_layout(2 * 3 * 4, (2, 3, 4))  # channels last: index (h * W + w) * C + c
    assert g[1, 2, 3] == (1 * 3 + 2) * 4 + 3
    H, W, C, g = image_layout(2 * 3 * 4, (4, 2, 3), channels_last=False)  # (C, H, W)
    assert (H, W, C) == (2, 3, 4) and g[1, 2, 3] == 3 * 6 + 1 * 3 + 2
    with pytest.raises(ValueError, match="image_shape"):
        image_layout(64, (7, 9))


@pytest.mark.parametrize("box", ["scalar", "per-feature"])
@pytest.mark.parametrize("windows", ["shared", "per-row"])
@pytest.mark.parametrize("layout", ["square", "row", "channels"])
def test_square_matches_the_reference_loop(mlp, layout, windows, box):
    """Same seed, same budget: the batched attack and the row-by-row image loop reach the same
    points with the same query counts (float64, the estimator's own classes)."""
    est, X, y = mlp
    m = ff.from_sklearn(est)
    X, y = X[:30], y[:30]
    shape, (H, W, C) = {"square": (None, (8, 8, 1)), "row": ((1, 64), (1, 64, 1)),
                        "channels": ((4, 4, 4), (4, 4, 4))}[layout]
    lo, hi = (0.0, 1.0) if box == "scalar" else (np.zeros(64), np.linspace(0.5, 1.0, 64))
    X = np.minimum(X, hi)
    res = ff.square(m, X, y, eps=0.1, max_queries=150, image_shape=shape, clip=(lo, hi), seed=5,
                    windows=windows)
    spec = AR.spec_of(m)
    ref, q = AR.square_linf(spec, X, y, 0.1, 150, H, W, C, seed=5, lo=lo, hi=hi,
                            shared=windows == "shared")
    np.testing.assert_allclose(res.x_adv, ref, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(res.queries, q)
    np.testing.assert_array_equal(res.success, est.predict(res.x_adv) != y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_square_properties(mlp, dtype):
    est, X, y = mlp
    m = ff.from_sklearn(est, dtype=dtype)
    Xt, y = X[:200].astype(dtype), y[:200]
    eps = 0.1
    res = ff.square(m, Xt, y, eps=eps, max_queries=300, clip=(0, 1), seed=1)
    assert np.all(res.linf <= eps * (1 + 1e-6))
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    truth = est.predict(res.x_adv)
    np.testing.assert_array_equal(res.pred, truth)
    np.testing.assert_array_equal(res.success, truth != y)
    assert np.all((res.queries >= 1) & (res.queries <= 300))
    # a row still queried at the end was never fooled by the logits
    again = ff.square(m, Xt, y, eps=eps, max_queries=300, clip=(0, 1), seed=1)
    np.testing.assert_array_equal(again.x_adv, res.x_adv)
    np.testing.assert_array_equal(Xt, X[:200].astype(dtype))  # the input untouched
    more = ff.square(m, Xt, y, eps=eps, max_queries=1200, clip=(0, 1), seed=1)
    assert more.success.mean() >= res.success.mean()
    assert more.success.mean() > 0.2



def test_square_on_a_kernel_svm(digits):
    """Score-based: needs only the logits, so it runs on models without a useful gradient; its
    verdicts are the SVC's own."""
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = SVC(kernel="rbf", gamma=0.05).fit(X[::2], y[::2])
    m = ff.from_sklearn(est)
    res = ff.square(m, X[1:120:2], y[1:120:2], eps=0.2, max_queries=200, clip=(0, 1), seed=0)
    np.testing.assert_array_equal(res.pred, est.predict(res.x_adv))
    assert res.success.any()


def test_square_refuses_bad_settings(mlp):
    est, X, y = mlp
    m = ff.from_sklearn(est)
    for kw, err, match in ((dict(eps=0), ValueError, "eps"), (dict(max_queries=0), ValueError, "max_queries"),
                           (dict(p_init=1.5), ValueError, "p_init"), (dict(image_shape=(3, 3)), ValueError, "image_shape"),
                           (dict(norm=1), ValueError, "norm"),
                           (dict(norm=2, windows="per-row"), ValueError, "windows"),
                           (dict(windows="all"), ValueError, "windows")):
        args = dict(eps=0.1, **kw) if "eps" not in kw else kw
        with pytest.raises(err, match=match):
            ff.square(m, X[:3], y[:3], **args)


@pytest.mark.parametrize("layout", ["square", "channels"])
def test_square_l2_matches_the_reference_loop(mlp, layout):
    """L2: the batched attack and the row-by-row image loop (the window profile computed cell by
    cell) reach the same points with the same query counts."""
    est, X, y = mlp
    m = ff.from_sklearn(est)
    X, y = X[:25], y[:25]
    shape, (H, W, C) = {"square": (None, (8, 8, 1)), "channels": ((4, 4, 4), (4, 4, 4))}[layout]
    res = ff.square(m, X, y, eps=0.8, norm=2, max_queries=120, image_shape=shape, clip=(0, 1),
                    seed=2)
    ref, q = AR.square_l2(AR.spec_of(m), X, y, 0.8, 120, H, W, C, seed=2, lo=0.0, hi=1.0)
    np.testing.assert_allclose(res.x_adv, ref, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(res.queries, q)
    np.testing.assert_array_equal(res.success, est.predict(res.x_adv) != y)


def test_eta_profile_is_the_papers():
    from fastfool.attacks.square import eta_profile
    for sh, sw in ((3, 3), (5, 5), (7, 7), (1, 5), (4, 4), (6, 2)):
        for flip in (False, True):
            e = eta_profile(sh, sw, flip)
            np.testing.assert_allclose(e, AR.eta_l2(sh, sw, flip), rtol=1e-12, atol=1e-15)
            assert abs(np.sqrt((e ** 2).sum()) - 1) < 1e-12


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_square_l2_properties(mlp, dtype):
    est, X, y = mlp
    m = ff.from_sklearn(est, dtype=dtype)
    X, y = X[:60].astype(dtype), y[:60]
    few = ff.square(m, X, y, eps=1.0, norm=2, max_queries=30, clip=(0, 1), seed=1)
    res = ff.square(m, X, y, eps=1.0, norm=2, max_queries=300, clip=(0, 1), seed=1)
    for r in (few, res):
        truth = est.predict(r.x_adv)
        np.testing.assert_array_equal(r.success, truth != y)
        assert r.l2.max() <= 1.0 * (1 + 1e-5) and r.x_adv.min() >= 0 and r.x_adv.max() <= 1
        assert r.queries.max() <= r.params["max_queries"]
    assert res.success.mean() > few.success.mean()
    again = ff.square(m, X, y, eps=1.0, norm=2, max_queries=300, clip=(0, 1), seed=1)
    np.testing.assert_array_equal(again.x_adv, res.x_adv)
    one_row = ff.square(m, X[:10], y[:10], eps=1.0, norm=2, max_queries=40, image_shape=(1, 64),
                        clip=(0, 1))
    np.testing.assert_array_equal(one_row.success, est.predict(one_row.x_adv) != y[:10])
    assert one_row.l2.max() <= 1.0 * (1 + 1e-5)
