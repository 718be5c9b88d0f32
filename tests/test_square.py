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


def _numpy_loop(monkeypatch):
    """Route square's shared L-inf path through its NumPy loop (the C++ loop's reference)."""
    import importlib
    monkeypatch.setattr(importlib.import_module("fastfool.attacks.square"), "_kernel_layers",
                        lambda model: None)


_FITTED = {}


def _fitted(digits, kind):
    """The digits estimator of a kind, fitted once per session (every other row)."""
    if kind not in _FITTED:
        X, y = digits
        if kind == "linear":
            from sklearn.linear_model import LogisticRegression
            _FITTED[kind] = LogisticRegression(max_iter=300).fit(X[::2], y[::2])
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _FITTED[kind] = MLPClassifier((24, 12), activation=kind, max_iter=60,
                                              random_state=1).fit(X[::2], y[::2])
    return _FITTED[kind]


# the README's command: each kind, dtype and box once; CI (-m slow) runs the other 14
_KERNEL_CASES = [("tanh", np.float64, "scalar"), ("relu", np.float32, "per-feature"),
                 ("linear", np.float32, "none")]


@pytest.mark.parametrize("kind,dtype,box", _KERNEL_CASES + [
    pytest.param(k, d, b, marks=pytest.mark.slow)
    for k in ("tanh", "relu", "linear") for d in (np.float64, np.float32)
    for b in ("scalar", "per-feature", "none") if (k, d, b) not in _KERNEL_CASES])
def test_square_kernel_loop_equals_the_numpy_loop(digits, monkeypatch, dtype, kind, box):
    """The dense stack's C++ loop (kernels.square_linf_mlp: the first layer carried per row and
    updated by the window's columns) against square's NumPy loop (every query a full forward),
    past the kernel's 500-iteration segments: the same points, queries and verdicts up to the
    rare near-tie that the two sums' rounding decides differently; the verdicts are the model's."""
    X, y = digits
    Xt, yt = X[1:400:2], y[1:400:2]
    est = _fitted(digits, kind)
    m = ff.from_sklearn(est, dtype=dtype)
    Xt = Xt.astype(dtype)
    clip = {"scalar": (0.0, 1.0), "per-feature": (np.zeros(64), np.linspace(0.6, 1.0, 64)),
            "none": None}[box]
    if box == "per-feature":
        Xt = np.minimum(Xt, clip[1]).astype(dtype)
    kw = dict(eps=0.05, max_queries=1300, clip=clip, seed=3)
    fast = ff.square(m, Xt, yt, **kw)
    _numpy_loop(monkeypatch)
    ref = ff.square(m, Xt, yt, **kw)
    same = np.all(fast.x_adv == ref.x_adv, axis=1) & (fast.queries == ref.queries)
    # float32: a linear model's logits are summed in double by the kernel, in float32 by the loop
    assert same.mean() >= (0.99 if dtype == np.float64 else 0.9), same.mean()
    assert abs(int(fast.success.sum()) - int(ref.success.sum())) <= max(2, len(yt) // 50)
    assert fast.success.any() and not fast.success.all()
    np.testing.assert_array_equal(fast.success, est.predict(fast.x_adv) != yt)
    assert np.abs(fast.x_adv - Xt).max() <= 0.05 * (1 + 1e-6)
    if clip is not None:
        lo, hi = (np.asarray(c, dtype) for c in clip)  # the box in the model's precision
        assert np.all(fast.x_adv >= lo) and np.all(fast.x_adv <= hi)


def test_square_kernel_is_thread_invariant(mlp):
    """Each row's iterates are its own: 1 or 2 threads (other lanes beside it), the same bits."""
    est, X, y = mlp
    m = ff.from_sklearn(est, dtype=np.float32)
    X = X.astype(np.float32)
    kw = dict(eps=0.05, max_queries=700, clip=(0, 1), seed=4)
    one = ff.square(m, X, y, threads=1, **kw)
    two = ff.square(m, X, y, threads=2, **kw)
    np.testing.assert_array_equal(one.x_adv, two.x_adv)
    np.testing.assert_array_equal(one.queries, two.queries)


def test_square_kernel_refuses_bad_arguments():
    from fastfool import kernels as K
    rng = np.random.default_rng(0)
    W0, W1 = rng.standard_normal((6, 4)), rng.standard_normal((4, 3))
    X = rng.random((5, 6))
    y = np.array([0, 1, 2, 0, 1])

    def call(**kw):
        args = dict(X=X, Xb=X.copy(), margin=np.ones(5), y=y, weights=[W0, W1],
                    biases=[None, None], activations=["tanh", "identity"],
                    idx=np.array([0, 5, 2]),
                    start=np.array([0, 2, 3]), val=np.array([0.1, -0.1, 0.1]))
        args.update(kw)
        return K.square_linf_mlp(**args)

    def margin_at(x):
        z = np.tanh(x @ W0) @ W1
        zy = z[np.arange(5), y]
        z[np.arange(5), y] = -np.inf
        return zy - z.max(1)

    Xb, mb = X.copy(), margin_at(X)
    q = K.square_linf_mlp(X, Xb, mb, y, [W0, W1], [None, None], ["tanh", "identity"],
                          np.array([0, 5, 2]), np.array([0, 2, 3]), np.array([0.1, -0.1, 0.1]))
    # the margin returned is the stack's at the point returned, never above the start; a row
    # fooled at iteration it has it + 2 queries, one never fooled 1 + n_iter
    np.testing.assert_allclose(mb[mb > -np.inf], margin_at(Xb)[mb > -np.inf], rtol=1e-12,
                               atol=1e-12)
    start_margin = margin_at(X)
    assert np.all((mb <= start_margin) | (start_margin <= 0))
    assert np.all(np.where(start_margin <= 0, q == 0, np.where(mb > 0, q == 3, q <= 3)))
    call()
    for kw, match in ((dict(idx=np.array([0, 6, 2])), "idx"),
                      (dict(idx=np.array([0, -1, 2])), "idx"),
                      (dict(start=np.array([0, 3, 2])), "start"),
                      (dict(start=np.array([1, 2, 3])), "start"),
                      (dict(start=np.array([0, 2])), "start"),
                      (dict(val=np.array([0.1, 0.1])), "val"),
                      (dict(margin=np.ones(4)), "margin"),
                      (dict(Xb=np.ones((5, 5))), "Xb"),
                      (dict(it0=-1), "it0"),
                      (dict(weights=[W0, W1.T]), "weights")):
        with pytest.raises(ValueError, match=match):
            call(**kw)
    ro = X.copy()
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="Xb"):
        call(Xb=ro)

    # misaligned buffers (frombuffer at an odd offset): worked on as aligned copies, written back
    def misaligned(a):
        b = np.ndarray(a.shape, a.dtype, buffer=bytearray(a.nbytes + 1), offset=1)
        b[...] = a
        assert not b.flags.aligned
        return b

    Xm, mm, qm = misaligned(X), misaligned(margin_at(X)), misaligned(np.zeros(5, np.int64))
    K.square_linf_mlp(X, Xm, mm, y, [W0, W1], [None, None], ["tanh", "identity"],
                      misaligned(np.array([0, 5, 2])), misaligned(np.array([0, 2, 3])),
                      misaligned(np.array([0.1, -0.1, 0.1])), queries=qm)
    np.testing.assert_array_equal(Xm, Xb)
    np.testing.assert_array_equal(mm, mb)
    np.testing.assert_array_equal(qm, q)
