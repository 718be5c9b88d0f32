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


def _n_classes(spec):
    kind, params = spec
    return params[0].shape[0] if kind == "linear" else params[0][-1].shape[1]


def apgd_checkpoints(steps):
    """The paper's w_j (Croce & Hein 2020, section 3.2): p_0 = 0, p_1 = 0.22, p_{j+1} = p_j +
    max(p_j - p_{j-1} - 0.03, 0.06), as iteration counts of the reference code."""
    out, k = [], max(int(0.22 * steps), 1)
    at = k
    while at < steps:
        out.append(at)
        k = max(k - max(int(0.03 * steps), 1), max(int(0.06 * steps), 1))
        at += k
    return out


def dlr_loss_and_cotangent(L, y, t=None):
    """DLR (untargeted) or targeted DLR per row, and d loss / d logits, row by row in plain
    Python loops (the reference of fastfool's vectorised version)."""
    n, C = L.shape
    loss = np.zeros(n)
    V = np.zeros_like(L)
    for r in range(n):
        z = L[r]
        order = sorted(range(C), key=lambda c: (-z[c], c))
        if t is None:
            j = max((c for c in range(C) if c != y[r]), key=lambda c: (z[c], -c))
            den = z[order[0]] - z[order[2]] + 1e-12
            num = z[y[r]] - z[j]
            loss[r] = -num / den
            V[r, y[r]] -= 1 / den
            V[r, j] += 1 / den
            V[r, order[0]] += num / den ** 2
            V[r, order[2]] -= num / den ** 2
        else:
            den = z[order[0]] - 0.5 * (z[order[2]] + z[order[3]]) + 1e-12
            num = z[y[r]] - z[t[r]]
            loss[r] = -num / den
            V[r, y[r]] -= 1 / den
            V[r, t[r]] += 1 / den
            V[r, order[0]] += num / den ** 2
            V[r, order[2]] -= 0.5 * num / den ** 2
            V[r, order[3]] -= 0.5 * num / den ** 2
    return loss, V


def apgd(spec, X, y, eps, steps, loss="ce", t=None, lo=None, hi=None):
    """APGD, L-inf, from X itself, one row at a time (the reference code's loop): returns the
    last iterate whose logits' argmax fools, else the point of highest loss."""
    X = np.asarray(X, np.float64)
    checks = set(apgd_checkpoints(steps))
    out = np.empty_like(X)

    def f_and_g(x, r):
        xx = x[None]
        if loss == "ce":
            L, _ = logits_and_vjp(spec, xx, np.zeros((1, _n_classes(spec))))
            P = np.exp(L - L.max()) / np.exp(L - L.max()).sum()
            lab = y[r] if t is None else t[r]
            V = P.copy()
            V[0, lab] -= 1
            _, G = logits_and_vjp(spec, xx, V)
            val = -np.log(P[0, lab])
            return (val, G[0], int(np.argmax(L))) if t is None else (-val, -G[0], int(np.argmax(L)))
        L, _ = logits_and_vjp(spec, xx, np.zeros((1, _n_classes(spec))))
        val, V = dlr_loss_and_cotangent(L, np.array([y[r]]), None if t is None else np.array([t[r]]))
        _, G = logits_and_vjp(spec, xx, V)
        return val[0], G[0], int(np.argmax(L))

    for r in range(X.shape[0]):
        x0 = X[r]
        lo_r = -np.inf if lo is None else lo
        hi_r = np.inf if hi is None else hi

        def proj(v):
            return np.clip(np.clip(v, x0 - eps, x0 + eps), lo_r, hi_r)

        x, x_old, eta = x0.copy(), x0.copy(), 2 * eps
        f, g, c = f_and_g(x, r)
        bf, bx, bg = f, x.copy(), g.copy()
        fooled = (c == t[r]) if t is not None else (c != y[r])
        adv = x.copy()
        inc, last_best, reduced, last = 0, bf, False, 0
        for k in range(steps):
            mom = x - x_old
            x_old = x
            a = 0.75 if k > 0 else 1.0
            z = proj(x + eta * np.sign(g))
            x = proj(x + (z - x) * a + mom * (1 - a))
            fn, g, c = f_and_g(x, r)
            hit = (c == t[r]) if t is not None else (c != y[r])
            if hit:
                adv, fooled = x.copy(), True
            inc += fn > f
            f = fn
            if f > bf:
                bf, bx, bg = f, x.copy(), g.copy()
            if k + 1 in checks:
                cut = inc <= 0.75 * (k + 1 - last) or (not reduced and last_best >= bf)
                if cut:
                    eta /= 2
                    x, g = bx.copy(), bg.copy()
                reduced, last_best, last, inc = cut, bf, k + 1, 0
        out[r] = adv if fooled else bx
    return out
