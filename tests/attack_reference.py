"""Independent NumPy implementations of the attacks (float64), for comparison with fastfool."""

from __future__ import annotations

import numpy as np

import reference as R


def grad(model_spec, X, labels):
    """CE input gradient from a plain description of the model."""
    kind, params = model_spec
    if kind == "linear":
        W, b = params
        return R.ce_grad_linear(X, W, b, labels)[0]
    Ws, bs, acts = params
    return R.ce_grad_mlp(X, Ws, bs, acts, labels)[0]


def step(x, g, x0, alpha, eps, norm, lo, hi):
    if norm == "inf":
        x = x + alpha * np.sign(g)
        x = np.clip(x, x0 - eps, x0 + eps)
    else:
        n = np.linalg.norm(g, axis=1, keepdims=True)
        x = x + alpha * g / np.where(n > 0, n, 1)
        d = x - x0
        dn = np.linalg.norm(d, axis=1, keepdims=True)
        x = np.where(dn > eps, x0 + d * eps / np.where(dn > 0, dn, 1), x)
    if lo is not None:
        x = np.clip(x, lo, hi)
    return x


def fgsm(spec, X, labels, eps, norm="inf", targeted=False, lo=None, hi=None):
    X = np.asarray(X, np.float64)
    g = grad(spec, X, labels)
    return step(X, g, X, -eps if targeted else eps, eps, norm, lo, hi)


def bim(spec, X, labels, eps, alpha, steps, norm="inf", targeted=False, lo=None, hi=None):
    X = np.asarray(X, np.float64)
    x = X.copy()
    for _ in range(steps):
        x = step(x, grad(spec, x, labels), X, -alpha if targeted else alpha, eps, norm, lo, hi)
    return x


def spec_of(model):
    """The plain description of a fastfool model (its softmax view), float64."""
    import fastfool as ff
    if isinstance(model, ff.LinearModel):
        return ("linear", (np.asarray(model._soft_coef, np.float64), np.asarray(model._soft_b, np.float64)))
    Ws, bs = model._soft_layers()
    return ("mlp", ([np.asarray(w, np.float64) for w in Ws], [np.asarray(b, np.float64) for b in bs],
                    list(model._acts)))
