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
    Ws, bs, _ = model.layers()
    return ("mlp", ([np.asarray(w, np.float64) for w in Ws], [np.asarray(b, np.float64) for b in bs],
                    list(model._acts)))


def logits_and_vjp(spec, x, V):
    kind, params = spec
    if kind == "linear":
        W, b = params
        return x @ W.T + b, V @ W
    Ws, bs, acts = params
    G, L = R.mlp_vjp(x, Ws, bs, acts, V)
    return L, G


def deepfool(spec, X, y, overshoot=0.02, max_iter=50, norm="2"):
    """Multi-class DeepFool, one row at a time, all candidate classes."""
    X = np.asarray(X, np.float64)
    out = X.copy()
    for i, x0 in enumerate(X):
        k = int(y[i])
        r = np.zeros_like(x0)
        for _ in range(max_iter):
            x = (x0 + (1 + overshoot) * r)[None, :]
            s, _ = logits_and_vjp(spec, x, np.zeros((1, len(spec_classes(spec)))))
            if np.argmax(s[0]) != k:
                break
            best, step = np.inf, np.zeros_like(x0)
            for j in range(s.shape[1]):
                if j == k:
                    continue
                V = np.zeros((1, s.shape[1]))
                V[0, j], V[0, k] = 1, -1
                _, w = logits_and_vjp(spec, x, V)
                w = w[0]
                f = s[0, j] - s[0, k]
                dn = np.linalg.norm(w) if norm == "2" else np.abs(w).sum()
                if dn > 0 and abs(f) / dn < best:
                    best = abs(f) / dn
                    step = (abs(f) + 1e-12) / dn ** 2 * w if norm == "2" else (abs(f) + 1e-12) / dn * np.sign(w)
            r = r + step
        out[i] = x0 + (1 + overshoot) * r
    return out


def spec_classes(spec):
    kind, params = spec
    return params[0] if kind == "linear" else params[0][-1].T
