"""Attacks against independent NumPy implementations (attack_reference.py) and their
properties, on scikit-learn models trained on load_digits."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier

import fastfool as ff

import attack_reference as AR


@pytest.fixture(scope="module")
def models(digits, digits_logreg):
    X, y = digits
    lr = digits_logreg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tanh = MLPClassifier((50, 20), activation="tanh", max_iter=40, random_state=0).fit(X, y)
        ident = MLPClassifier((50, 20, 2), activation="identity", max_iter=40, random_state=21).fit(X, y)
    return {"logreg": lr, "mlp-tanh": tanh, "mlp-identity": ident}


MODEL_NAMES = ["logreg", "mlp-tanh", "mlp-identity"]


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("norm", ["inf", 2])
@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_matches_reference(digits, models, name, norm, targeted):
    X, y = digits
    X, y = X[:300], y[:300]
    m = ff.from_sklearn(models[name])
    eps = 0.1 if norm == "inf" else 1.0
    t = (y + 1) % 10 if targeted else None
    res = ff.fgsm(m, X, y, eps=eps, norm=norm, target=t, clip=(0.0, 1.0))
    ref = AR.fgsm(AR.spec_of(m), X, t if targeted else y, eps, "inf" if norm == "inf" else "2",
                  targeted, 0.0, 1.0)
    # L2 steps follow the gradient's direction: a confident row's gradient (P - Y ~ 1e-10) carries
    # the cancellation error of 1 - p, so its direction agrees to ~1e-9 relative only.
    np.testing.assert_allclose(res.x_adv, ref, rtol=0, atol=1e-12 if norm == "inf" else 1e-8)
    # success is measured on x_adv, by the model
    pred = m.predict(res.x_adv)
    np.testing.assert_array_equal(res.pred, pred)
    np.testing.assert_array_equal(res.success, pred == t if targeted else pred != y)
    clean = m.predict(X)
    baseline = np.mean(clean == t) if targeted else np.mean(clean != y)
    assert res.success.mean() > baseline + 0.02  # the attack does something
    lim = res.linf if norm == "inf" else res.l2
    assert np.all(lim <= eps * (1 + 1e-12))
    np.testing.assert_allclose(res.linf, np.abs(res.x_adv - X).max(axis=1), rtol=1e-12)
    np.testing.assert_allclose(res.l2, np.linalg.norm(res.x_adv - X, axis=1), rtol=1e-12)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("norm", ["inf", 2])
def test_pgd_without_random_start_matches_reference(digits, models, name, norm):
    X, y = digits
    X, y = X[::6], y[::6]
    m = ff.from_sklearn(models[name])
    eps, alpha = (0.1, 0.025) if norm == "inf" else (1.0, 0.25)
    res = ff.pgd(m, X, y, eps=eps, steps=7, step_size=alpha, norm=norm, random_start=False,
                 clip=(0.0, 1.0))
    ref = AR.bim(AR.spec_of(m), X, y, eps, alpha, 7, "inf" if norm == "inf" else "2", False, 0.0, 1.0)
    np.testing.assert_allclose(res.x_adv, ref, rtol=0, atol=1e-9)
    assert np.all(res.iterations == 7)
    assert res.success.mean() >= ff.fgsm(m, X, y, eps=eps, norm=norm, clip=(0, 1)).success.mean() - 0.02


def test_pgd_targeted_hits_targets(digits, models):
    X, y = digits
    X, y = X[:200], y[:200]
    m = ff.from_sklearn(models["logreg"])
    res = ff.pgd(m, X, y, eps=0.3, steps=20, target="random", seed=1, clip=(0, 1))
    assert res.target is not None and np.all(res.target != y)
    np.testing.assert_array_equal(res.success, res.pred == res.target)
    assert res.success.mean() > 0.9
    assert np.all(res.linf <= 0.3 + 1e-12)


def test_pgd_float32_model(digits, models):
    X, y = digits
    m = ff.from_sklearn(models["mlp-tanh"], dtype=np.float32)
    res = ff.pgd(m, X[:500], y[:500], eps=0.1, steps=10, seed=0, clip=(0, 1))
    assert res.x_adv.dtype == np.float32
    assert np.all(res.linf <= np.float32(0.1) * (1 + 1e-6))
    assert res.success.mean() > 0.3


@pytest.mark.parametrize("random_start", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pgd_verdicts_are_the_estimators_over_row_chunks(digits, models, random_start, dtype):
    """PGD's pred / success are the source estimator's predict on the returned x_adv, also for
    a binary MLP (one output unit) and over several row chunks."""
    X, y = digits
    Xb, yb = X[y < 2], y[y < 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        binary = MLPClassifier((12,), max_iter=300, random_state=0).fit(Xb, yb)
    import fastfool.attacks.gradient as G
    chunks = lambda N, D, be=None, weights=0: [slice(i, min(N, i + 128)) for i in range(0, N, 128)]  # 5 chunks
    for est, Xs, ys in [(models["mlp-tanh"], X[:600], y[:600]), (binary, Xb[:200], yb[:200])]:
        m = ff.from_sklearn(est, dtype=dtype)
        G.row_chunks, orig_chunks = chunks, G.row_chunks
        try:
            res = ff.pgd(m, Xs, ys, eps=0.1, steps=4, seed=1, clip=(0, 1),
                         random_start=random_start)
        finally:
            G.row_chunks = orig_chunks
        truth = est.predict(res.x_adv)
        np.testing.assert_array_equal(res.pred, truth)
        np.testing.assert_array_equal(res.success, truth != ys)
        np.testing.assert_array_equal(res.correct, est.predict(Xs) == ys)
        P = est.predict_proba(res.x_adv)
        np.testing.assert_allclose(res.confidence, P[np.arange(len(ys)), np.searchsorted(est.classes_, truth)],
                                   rtol=1e-4 if dtype == np.float32 else 1e-9)


def test_pgd_is_reproducible_and_thread_independent(digits, models):
    X, y = digits
    m = ff.from_sklearn(models["mlp-tanh"])
    a = ff.pgd(m, X[:400], y[:400], eps=0.1, steps=5, restarts=2, seed=7, threads=1)
    b = ff.pgd(m, X[:400], y[:400], eps=0.1, steps=5, restarts=2, seed=7, threads=2)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)
    c = ff.pgd(m, X[:400], y[:400], eps=0.1, steps=5, restarts=2, seed=8, threads=2)
    assert not np.array_equal(a.x_adv, c.x_adv)


def test_pgd_restarts_keep_the_best(digits, models):
    X, y = digits
    m = ff.from_sklearn(models["logreg"])
    one = ff.pgd(m, X[:300], y[:300], eps=0.05, steps=5, restarts=1, seed=3, clip=(0, 1))
    many = ff.pgd(m, X[:300], y[:300], eps=0.05, steps=5, restarts=4, seed=3, clip=(0, 1))
    # the first restart of `many` is `one`; later restarts only replace rows with better ones
    assert np.all(many.success >= one.success)
    assert np.all(many.iterations == 20)


def test_pgd_early_stop(digits, models):
    X, y = digits
    m = ff.from_sklearn(models["logreg"])
    full = ff.pgd(m, X[:400], y[:400], eps=0.2, steps=20, random_start=False, clip=(0, 1))
    early = ff.pgd(m, X[:400], y[:400], eps=0.2, steps=20, random_start=False, clip=(0, 1),
                   early_stop=True)
    assert early.iterations.max() <= 20 and early.iterations.mean() < full.iterations.mean()
    assert early.success.mean() >= full.success.mean() - 0.01
    assert np.all(early.linf <= 0.2 + 1e-12)
    # rows never fooled ran every step and match the fixed-step attack exactly
    never = ~early.success
    np.testing.assert_array_equal(early.x_adv[never], full.x_adv[never])


def test_quantized_attacks_stay_on_the_grid(digits, models):
    X, y = digits  # digits/16: a 1/16 grid
    m = ff.from_sklearn(models["logreg"])
    for attack in (ff.fgsm, ff.pgd):
        kw = dict(seed=0) if attack is ff.pgd else {}
        for norm, eps in (("inf", 3 / 16), (2, 0.9)):
            res = attack(m, X[:300], y[:300], eps=eps, norm=norm, clip=(0, 1), quantize=1 / 16, **kw)
            k = res.x_adv * 16
            np.testing.assert_allclose(k, np.round(k), atol=1e-9)
            lim = res.linf if norm == "inf" else res.l2
            assert np.all(lim <= eps + 1e-9)
            np.testing.assert_array_equal(res.pred, m.predict(res.x_adv))  # measured after rounding
            assert res.success.mean() > 0.05


def test_attack_result_summary_and_roundtrip(tmp_path, digits, models):
    X, y = digits
    m = ff.from_sklearn(models["logreg"])
    res = ff.fgsm(m, X[:100], y[:100], eps=0.1, clip=(0, 1))
    s = res.summary()
    assert s["rows"] == 100 and 0 <= s["success_rate"] <= 1 and s["rows_per_second"] > 0
    assert "fgsm" in repr(res) and "success" in repr(res)
    path = tmp_path / "r.npz"
    res.save(path)
    back = ff.AttackResult.load(path)
    for k in ("x_adv", "success", "pred", "confidence", "l2", "linf", "iterations", "y"):
        np.testing.assert_array_equal(getattr(back, k), getattr(res, k))
    assert back.attack == "fgsm" and back.params["eps"] == 0.1
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a fastfool AttackResult"):
        ff.AttackResult.load(bad)


def test_attack_bad_input(digits, models):
    X, y = digits
    m = ff.from_sklearn(models["logreg"])
    with pytest.raises(ValueError, match="eps"):
        ff.fgsm(m, X[:5], eps=-0.1)
    with pytest.raises(ValueError, match="steps"):
        ff.pgd(m, X[:5], eps=0.1, steps=0)
    with pytest.raises(ValueError, match="norm"):
        ff.pgd(m, X[:5], eps=0.1, norm=1)
    Xn = X[:5].copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ff.fgsm(m, Xn, eps=0.1)
    with pytest.raises(ValueError, match="target: equals the attacked label"):
        ff.fgsm(m, X[:5], y[:5], eps=0.1, target=y[:5])
    with pytest.raises(ValueError, match="outside clip"):
        ff.fgsm(m, X[:5] + 2, eps=0.1, clip=(0, 1))
    with pytest.raises(TypeError, match="model: expected a fastfool model"):
        ff.fgsm(models["logreg"], X[:5], eps=0.1)
    with pytest.raises(ValueError, match="not one of the model's classes"):
        ff.fgsm(m, X[:5], eps=0.1, target=11)


def test_attacks_do_not_modify_inputs_and_handle_empty(digits, models):
    X, y = digits
    m = ff.from_sklearn(models["mlp-tanh"])
    Xc, yc = X[:50].copy(), y[:50].copy()
    ff.pgd(m, Xc, yc, eps=0.1, steps=3, seed=0, clip=(0, 1), early_stop=True)
    np.testing.assert_array_equal(Xc, X[:50])
    np.testing.assert_array_equal(yc, y[:50])
    empty = ff.pgd(m, X[:0], y[:0], eps=0.1)
    assert empty.x_adv.shape == (0, 64) and empty.success.shape == (0,)


def test_eps_zero_changes_nothing(digits, models):
    X, y = digits
    m = ff.from_sklearn(models["logreg"])
    res = ff.pgd(m, X[:50], y[:50], eps=0.0, steps=3, seed=0)
    np.testing.assert_array_equal(res.x_adv, X[:50])
    np.testing.assert_array_equal(res.success, m.predict(X[:50]) != y[:50])


def test_one_value_outside_the_clip_box_is_refused():
    """The clip-box check (a min / max reduction when every column has the same bound, a
    comparison per value otherwise) finds a single value outside, below or above, and accepts
    values on the bounds."""
    from fastfool.attacks._common import check_inside_clip
    rng = np.random.default_rng(0)
    X = rng.uniform(0.2, 0.8, (300, 7))
    X[0, 0], X[1, 6] = 0.0, 1.0  # on the bounds of both boxes: fine
    uniform = (np.zeros(7), np.ones(7))
    per_col = (np.linspace(0, 0.1, 7), np.linspace(0.9, 1, 7))
    for lo, hi in (uniform, per_col):
        for lo_, hi_ in ((lo, hi), (lo, None), (None, hi)):
            check_inside_clip(X, lo_, hi_)
        for r, c, v, which in ((123, 4, -1e-9, "lo"), (299, 6, 1 + 1e-9, "hi")):
            Xb = X.copy()
            Xb[r, c] = v
            with pytest.raises(ValueError, match="outside clip"):
                check_inside_clip(Xb, lo, hi)
            with pytest.raises(ValueError, match="outside clip"):
                check_inside_clip(Xb, lo if which == "lo" else None, hi if which == "hi" else None)
    lo, hi = per_col  # a value inside the uniform box but below its own column's bound
    Xb = X.copy()
    Xb[5, 6] = 0.05
    with pytest.raises(ValueError, match="outside clip"):
        check_inside_clip(Xb, lo, hi)
    check_inside_clip(np.zeros((0, 7)), *uniform)


def _wide_estimator(rng, D=3000, C=800):
    """A wide "fitted" LogisticRegression (C x D random weights): its predict is the reference."""
    from sklearn.linear_model import LogisticRegression
    lr = LogisticRegression()
    lr.classes_, lr.n_features_in_, lr.n_iter_ = np.arange(C), D, np.array([1])
    lr.coef_, lr.intercept_ = rng.standard_normal((C, D)) / 50, rng.standard_normal(C) / 10
    return lr


@pytest.mark.slow
def test_wide_models_get_row_chunks_sized_by_their_weights():
    """A model with more weights than CHUNK_ELEMENTS gets chunks of as many elements (its
    weights packed once per chunk), and FGSM's result does not depend on the chunking."""
    from fastfool.attacks import _common
    import fastfool.attacks.gradient as G
    assert len(_common.row_chunks(2000, 12288, weights=1000 * 12288)) == 2
    assert len(_common.row_chunks(2000, 12288)) == 12
    assert len(_common.row_chunks(2000, 64, weights=640)) == 1
    rng = np.random.default_rng(3)
    lr = _wide_estimator(rng)
    m = ff.from_sklearn(lr, dtype=np.float32)
    assert m.n_weights == lr.coef_.size > _common.CHUNK_ELEMENTS
    X = rng.uniform(0, 1, (1000, lr.n_features_in_))
    res = ff.fgsm(m, X, eps=0.02, clip=(0, 1))
    orig = G.row_chunks
    G.row_chunks = lambda N, D, be=_common.CPU, weights=0: orig(N, D, be, 0)  # the old chunks
    try:
        old = ff.fgsm(m, X, eps=0.02, clip=(0, 1))
    finally:
        G.row_chunks = orig
    np.testing.assert_array_equal(res.x_adv, old.x_adv)
    np.testing.assert_array_equal(res.pred, old.pred)
    np.testing.assert_array_equal(res.pred, lr.predict(res.x_adv))


@pytest.mark.slow
def test_wide_model_verdicts_over_weight_sized_chunks_are_the_estimators():
    """Every verdict of FGSM and PGD over weight-sized chunks (2 chunks of 800 rows) is the
    scikit-learn estimator's own predict, in float32 and float64, with and without clip."""
    from fastfool.attacks import _common
    rng = np.random.default_rng(4)
    lr = _wide_estimator(rng)
    X = rng.uniform(0, 1, (1000, lr.n_features_in_))
    y = lr.predict(X)
    for dtype in (np.float32, np.float64):
        m = ff.from_sklearn(lr, dtype=dtype)
        assert len(_common.row_chunks(len(X), X.shape[1], weights=m.n_weights)) == 2
        for clip in (None, (0, 1)):
            for res in (ff.fgsm(m, X, y, eps=0.02, clip=clip),
                        ff.pgd(m, X, y, eps=0.02, steps=2, clip=clip, seed=0)):
                truth = lr.predict(res.x_adv)
                np.testing.assert_array_equal(res.pred, truth)
                np.testing.assert_array_equal(res.success, truth != y)
