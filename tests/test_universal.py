"""Universal perturbations (Moosavi-Dezfooli et al. 2017): the paper's row-at-a-time loop in
NumPy (tests/attack_reference.py) against batch=1 on an affine model (DeepFool is exact there),
and the properties: one v inside the ball, x_adv = clip(X + v), success is the estimator's own
predict, it fools held-out rows far more often than random noise of the same norm."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

import fastfool as ff

import attack_reference as AR


@pytest.fixture(scope="module")
def models(digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr = LogisticRegression(max_iter=500).fit(X[:1200], y[:1200])
        mlp = MLPClassifier((30,), activation="tanh", max_iter=150, random_state=0).fit(X[:1200], y[:1200])
    return lr, mlp, X, y


def test_universal_matches_the_papers_loop_on_an_affine_model(models):
    lr, _, X, y = models
    m = ff.from_sklearn(lr)
    Xf, yf = X[:120], y[:120]
    res = ff.universal(m, Xf, yf, eps=1.5, norm=2, batch=1, max_passes=3, seed=4, delta=0.0)
    v_ref = AR.universal(AR.spec_of(m), Xf, yf, 1.5, "2", delta=0.0, max_passes=3, seed=4)
    # DeepFool's steps agree to its overshoot rule; v is their projected sum
    np.testing.assert_allclose(res.perturbation, v_ref, rtol=0, atol=2e-2 * np.abs(v_ref).max())
    fool_ref = np.mean(lr.predict(Xf + v_ref) != yf)
    assert abs(res.success_rate - fool_ref) <= 0.05


@pytest.mark.parametrize("norm,eps", [("inf", 0.2), (2, 2.0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_universal_properties(models, norm, eps, dtype):
    _, mlp, X, y = models
    m = ff.from_sklearn(mlp, dtype=dtype)
    Xf, yf = X[:600].astype(dtype), y[:600]
    res = ff.universal(m, Xf, yf, eps=eps, norm=norm, clip=(0, 1), max_passes=4, seed=0)
    v = res.perturbation
    assert v.shape == (64,) and v.dtype == dtype
    assert (np.abs(v).max() if norm == "inf" else np.linalg.norm(v)) <= eps * (1 + 1e-6)
    np.testing.assert_array_equal(res.x_adv, np.clip(Xf + v, 0, 1))
    np.testing.assert_array_equal(res.pred, mlp.predict(res.x_adv))
    np.testing.assert_array_equal(res.success, mlp.predict(res.x_adv) != yf)
    rates = res.extra["pass_fooling_rate"]
    assert len(rates) == int(res.extra["passes"]) and rates[-1] == pytest.approx(res.success_rate)
    Xh, yh = X[1200:], y[1200:]
    held = np.mean(mlp.predict(np.clip(Xh + v, 0, 1)) != yh)
    rng = np.random.default_rng(0)
    noise = rng.choice([-1.0, 1.0], (20, 64)) * eps if norm == "inf" else \
        (lambda u: u / np.linalg.norm(u, axis=1, keepdims=True) * eps)(rng.standard_normal((20, 64)))
    noise_rate = np.mean([np.mean(mlp.predict(np.clip(Xh + n, 0, 1)) != yh) for n in noise])
    assert held > noise_rate + 0.1, (held, noise_rate)
    again = ff.universal(m, Xf, yf, eps=eps, norm=norm, clip=(0, 1), max_passes=4, seed=0)
    np.testing.assert_array_equal(again.perturbation, v)


def test_universal_refuses_bad_settings(models):
    lr, _, X, y = models
    m = ff.from_sklearn(lr)
    for kw, match in ((dict(eps=0), "eps"), (dict(eps=1, delta=1.0), "delta"),
                      (dict(eps=1, batch=0), "batch"), (dict(eps=1, norm=1), "norm")):
        with pytest.raises(ValueError, match=match):
            ff.universal(m, X[:5], y[:5], **kw)
    assert ff.fgsm(m, X[:3], y[:3], eps=0.1).perturbation is None
