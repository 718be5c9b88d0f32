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


def square_p(p_init, it, n_iters):
    """The Square Attack's window fraction (Andriushchenko et al. 2020, their reference code's
    schedule on 10000 iterations)."""
    i = int(it / n_iters * 10000)
    if 10 < i <= 50:
        return p_init / 2
    if 50 < i <= 200:
        return p_init / 4
    if 200 < i <= 500:
        return p_init / 8
    if 500 < i <= 1000:
        return p_init / 16
    if 1000 < i <= 2000:
        return p_init / 32
    if 2000 < i <= 4000:
        return p_init / 64
    if 4000 < i <= 6000:
        return p_init / 128
    if 6000 < i <= 8000:
        return p_init / 256
    if 8000 < i <= 10000:
        return p_init / 512
    return p_init


def square_linf(spec, X, y, eps, n_iters, H, W, C, seed, lo=None, hi=None, shared=False):
    """Square Attack L-inf on images (N, H, W, C) flattened row-major, one row at a time for every
    window and test, drawing the same random numbers in the same order as a batched run (per-row
    windows, the paper's NumPy code: the centres of all rows still in play, then a sign per
    channel for each row whose window is unchanged; shared, AutoAttack's PyTorch code: one
    corner in [0, H - s) x [0, W - s) and one sign per channel per iteration). Returns
    (x_best, queries)."""
    rng = np.random.default_rng(seed)
    N = X.shape[0]
    img = np.asarray(X, np.float64).reshape(N, H, W, C)
    # the box per pixel and channel (scalar or per-feature bounds of the flat rows)
    lo_ = np.broadcast_to(-np.inf if lo is None else lo, (H * W * C,)).reshape(H, W, C)
    hi_ = np.broadcast_to(np.inf if hi is None else hi, (H * W * C,)).reshape(H, W, C)

    def margin(x):
        L = logits_and_vjp(spec, x.reshape(len(x), -1), np.zeros((len(x), _n_classes(spec))))[0]
        out = np.empty(len(x))
        for i in range(len(x)):
            others = [L[i, j] for j in range(L.shape[1]) if j != y_cur[i]]
            out[i] = L[i, y_cur[i]] - max(others)
        return out

    stripes = rng.choice(np.array([-eps, eps]), size=(N, W, C))
    best = np.clip(img + stripes[:, None, :, :], lo_, hi_)
    if shared:  # the corners as fractions of the free range, and the signs, drawn up front
        corner = rng.random((n_iters, 2))
        signs_all = rng.choice(np.array([-eps, eps]), size=(n_iters, C))
    y_cur = y
    m = margin(best)
    q = np.ones(N, dtype=np.int64)
    for it in range(n_iters - 1):
        act = [i for i in range(N) if m[i] > 0]
        if not act:
            break
        p = square_p(0.8, it, n_iters)
        if H == 1 or W == 1:
            n = max(H, W)
            s = min(max(int(round(p * H * W)), 1), max(n - 1, 1))
            sh, sw = (1, s) if H == 1 else (s, 1)
        else:
            s = min(max(int(round(np.sqrt(p * H * W))), 1), min(H, W) - 1)
            sh = sw = s
        cand = best[act].copy()
        if shared:
            h0 = int(np.floor(corner[it, 0] * (H - sh))) if H > sh else 0
            w0 = int(np.floor(corner[it, 1] * (W - sw))) if W > sw else 0
            sg = signs_all[it]
            for j, i in enumerate(act):
                # x_best + 2 eps sign, projected onto the ball, then the box
                win = best[i, h0:h0 + sh, w0:w0 + sw, :] + 2 * sg
                win = np.minimum(np.maximum(win, img[i, h0:h0 + sh, w0:w0 + sw, :] - eps),
                                 img[i, h0:h0 + sh, w0:w0 + sw, :] + eps)
                cand[j, h0:h0 + sh, w0:w0 + sw, :] = np.clip(
                    win, lo_[h0:h0 + sh, w0:w0 + sw], hi_[h0:h0 + sh, w0:w0 + sw])
        chs = rng.integers(0, H - sh + 1, size=len(act)) if H > sh and not shared else np.zeros(len(act), int)
        cws = rng.integers(0, W - sw + 1, size=len(act)) if W > sw and not shared else np.zeros(len(act), int)
        need = [] if shared else list(range(len(act)))
        for _ in range(100 if need else 0):
            signs = rng.choice(np.array([-eps, eps]), size=(len(need), C))
            still = []
            for k, j in enumerate(need):
                i, h0, w0 = act[j], chs[j], cws[j]
                win = np.clip(img[i, h0:h0 + sh, w0:w0 + sw, :] + signs[k],
                              lo_[h0:h0 + sh, w0:w0 + sw], hi_[h0:h0 + sh, w0:w0 + sw])
                cand[j, h0:h0 + sh, w0:w0 + sw, :] = win
                if np.all(np.abs(win - best[i, h0:h0 + sh, w0:w0 + sw, :]) < 1e-7):
                    still.append(j)
            need = still
            if not need:
                break
        y_cur = y[act]
        mn = margin(cand)
        y_cur = y
        for j, i in enumerate(act):
            if mn[j] < m[i]:
                best[i] = cand[j]
                m[i] = mn[j]
            q[i] += 1
    return best.reshape(N, -1), q


def fmn(spec, X, y, norm, steps, lo, hi, alpha_init=1.0, gamma_init=0.05, gamma_final=0.001):
    """Fast Minimum-Norm (Pintor et al. 2021) from delta = 0, one row at a time in float64, with
    fastfool's two changes (gradient coordinates at a bound pointing out of the box dropped; the
    linear estimate of eps before any adversarial point overshot by (1 + gamma)).
    Norms "2", "inf", "1" and "0" (the paper's integer eps rules, the eps largest changes kept).
    Returns the smallest adversarial iterate per row (X where none)."""
    import math
    X = np.asarray(X, np.float64)
    C = _n_classes(spec)
    out = X.copy()
    alpha_final = alpha_init / 100
    for r in range(X.shape[0]):
        x0 = X[r]
        yr = int(y[r])
        wmax = np.maximum(x0 - lo, hi - x0)
        worst = {"2": np.linalg.norm(wmax), "inf": wmax.max(), "1": wmax.sum(),
                 "0": float(np.sum(wmax != 0))}[norm]
        nrm = {"2": lambda v: np.linalg.norm(v), "inf": lambda v: np.abs(v).max(),
               "1": lambda v: np.abs(v).sum(), "0": lambda v: float(np.sum(v != 0))}[norm]
        dual = {"2": lambda v: np.linalg.norm(v), "inf": lambda v: np.abs(v).sum(),
                "1": lambda v: np.abs(v).max(), "0": lambda v: 0.0}[norm]
        delta = np.zeros_like(x0)
        eps, best, found = (1.0 if norm == "0" else np.inf), np.inf, False
        for i in range(steps):
            cosine = (1 + math.cos(math.pi * i / steps)) / 2
            alpha = alpha_final + (alpha_init - alpha_final) * cosine
            gamma = gamma_final + (gamma_init - gamma_final) * cosine
            xa = x0 + delta
            z = logits_and_vjp(spec, xa[None], np.zeros((1, C)))[0][0]
            j = max((c for c in range(C) if c != yr), key=lambda c: (z[c], -c))
            V = np.zeros((1, C))
            V[0, j], V[0, yr] = 1.0, -1.0
            g = logits_and_vjp(spec, xa[None], V)[1][0]
            loss = z[j] - z[yr]
            adv = int(np.argmax(z)) != yr
            dn = nrm(delta)
            if adv and dn < best:
                best, out[r] = dn, xa
            found = found or adv
            g = np.where(((xa <= lo) & (g < 0)) | ((xa >= hi) & (g > 0)), 0.0, g)
            dist = abs(loss) / max(dual(g), 1e-12)
            if norm == "0":  # integer counts
                if adv:
                    eps = max(min(eps - 1, math.floor(eps * (1 - gamma)), best), 0.0)
                else:
                    eps = max(eps + 1, math.floor(eps * (1 + gamma)))
            elif adv:
                eps = min(eps * (1 - gamma), best)
            elif found:
                eps = eps * (1 + gamma)
            else:  # the linear estimate, overshot by gamma (fastfool's rule: see fmn's docstring)
                eps = (dn + dist) * (1 + gamma)
            eps = min(eps, worst)
            d = delta + alpha * g / max(np.linalg.norm(g), 1e-12)
            if norm == "0":  # keep the floor(eps) largest |d_j| (the first of equal ones)
                keep = sorted(range(len(d)), key=lambda j: (-abs(d[j]), j))[:int(eps)]
                d = np.where(np.isin(np.arange(len(d)), keep), d, 0.0)
            elif norm == "inf":
                d = np.clip(d, -eps, eps)
            elif norm == "2":
                n = np.linalg.norm(d)
                d = d * (eps / n) if n > eps else d
            else:  # L1 ball: soft thresholding found by bisection on the level
                if np.abs(d).sum() > eps:
                    a, b = 0.0, np.abs(d).max()
                    for _ in range(200):
                        m = (a + b) / 2
                        if np.maximum(np.abs(d) - m, 0).sum() > eps:
                            a = m
                        else:
                            b = m
                    d = np.sign(d) * np.maximum(np.abs(d) - b, 0)
            delta = np.clip(x0 + d, lo, hi) - x0
    return out


def exact_min_linf_relu(Ws, bs, x, y, lo, hi):
    """The exact minimal L-inf distance from x to a point of the box [lo, hi] that a ReLU MLP
    (one hidden layer: Ws = [W1 (D, H), W2 (H, C)]) does not classify as y (some class scores at
    least as high as y), by mixed-integer programming (big-M with interval bounds over the box;
    SciPy's HiGHS), the minimum over the other classes. Returns the distance."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    W1, W2 = (np.asarray(w, np.float64) for w in Ws)
    b1, b2 = (np.asarray(b, np.float64) for b in bs)
    D, H = W1.shape
    C = W2.shape[1]
    lo = np.broadcast_to(np.asarray(lo, np.float64), (D,))
    hi = np.broadcast_to(np.asarray(hi, np.float64), (D,))
    lz = b1 + np.minimum(W1 * lo[:, None], W1 * hi[:, None]).sum(axis=0)
    uz = b1 + np.maximum(W1 * lo[:, None], W1 * hi[:, None]).sum(axis=0)
    # variables: x' (D), t, a (H), s (H)
    nv = D + 1 + 2 * H
    ix, it, ia, is_ = 0, D, D + 1, D + 1 + H
    best = np.inf
    for j in range(C):
        if j == y:
            continue
        A, lb, ub = [], [], []

        def row(coefs, lower, upper):
            v = np.zeros(nv)
            for k, c in coefs:
                v[k] += c
            A.append(v)
            lb.append(lower)
            ub.append(upper)
        for d in range(D):  # |x'_d - x_d| <= t
            row([(ix + d, 1.0), (it, -1.0)], -np.inf, x[d])
            row([(ix + d, 1.0), (it, 1.0)], x[d], np.inf)
        for k in range(H):
            zk = [(ix + d, W1[d, k]) for d in range(D)]
            if uz[k] <= 0:
                row([(ia + k, 1.0)], 0.0, 0.0)
                row([(is_ + k, 1.0)], 0.0, 0.0)
                continue
            if lz[k] >= 0:  # a = z
                row(zk + [(ia + k, -1.0)], -b1[k], -b1[k])
                row([(is_ + k, 1.0)], 1.0, 1.0)
                continue
            row(zk + [(ia + k, -1.0)], -np.inf, -b1[k])  # a >= z
            # a <= z - lz (1 - s)  <=>  a - z - lz s <= -lz + b1
            row([(ia + k, 1.0)] + [(c, -w) for c, w in zk] + [(is_ + k, -lz[k])], -np.inf,
                b1[k] - lz[k])
            row([(ia + k, 1.0), (is_ + k, -uz[k])], -np.inf, 0.0)  # a <= uz s
        # logit_j - logit_y >= 0
        row([(ia + k, W2[k, j] - W2[k, y]) for k in range(H)], b2[y] - b2[j], np.inf)
        c = np.zeros(nv)
        c[it] = 1.0
        lbv = np.concatenate([lo, [0.0], np.zeros(H), np.zeros(H)])
        ubv = np.concatenate([hi, [np.inf], np.full(H, np.inf), np.ones(H)])
        integ = np.concatenate([np.zeros(D + 1 + H), np.ones(H)])
        res = milp(c, constraints=LinearConstraint(np.array(A), lb, ub), integrality=integ,
                   bounds=Bounds(lbv, ubv), options={"mip_rel_gap": 1e-9})
        if res.status == 0:
            best = min(best, res.x[it])
    return best


def hop_skip_jump(predict, X, y, norm, max_queries, seed, lo, hi, init_evals=100,
                  max_evals=10000, gamma=1.0):
    """HopSkipJump (Chen et al. 2020), untargeted, one row at a time with the row's own generator
    np.random.default_rng([seed, row]) drawn in the same order as fastfool's batched run (the
    random starts, then per iteration the directions). ``predict`` maps (n, D) to labels.
    Returns (x_adv, queries)."""
    import math
    X = np.asarray(X, np.float64)
    N, D = X.shape
    l2 = norm == "2"
    lo = np.broadcast_to(np.asarray(lo, np.float64), (D,))
    hi = np.broadcast_to(np.asarray(hi, np.float64), (D,))
    theta = gamma / D ** 1.5 if l2 else gamma / D ** 2
    reserve = int(math.ceil(math.log2(max(2.0, 1.0 / theta)))) + 4
    out = X.copy()
    Q = np.zeros(N, dtype=np.int64)

    def dist(d):
        return float(np.sqrt(np.sum(d * d))) if l2 else float(np.max(np.abs(d)))

    for r in range(N):
        x0, yr = X[r], y[r]
        rng = np.random.default_rng([seed, r])
        q = [0]

        def adv(p):
            q[0] += len(p)
            return np.asarray(predict(p)) != yr

        def bisect(xa):
            if l2:
                a, b = 0.0, 1.0
                while b - a > theta:
                    m = (a + b) / 2
                    if adv(((1 - m) * x0 + m * xa)[None])[0]:
                        b = m
                    else:
                        a = m
                return (1 - b) * x0 + b * xa
            a, b = 0.0, dist(xa - x0)
            tol = min(b * theta, theta)
            while b - a > tol:
                m = (a + b) / 2
                if adv(np.clip(xa, x0 - m, x0 + m)[None])[0]:
                    b = m
                else:
                    a = m
            return np.clip(xa, x0 - b, x0 + b)

        xa = None
        for _ in range(100):
            if q[0] >= max_queries:
                break
            c = lo + (hi - lo) * rng.random(D)
            if adv(c[None])[0]:
                xa = c
                break
        if xa is None:
            Q[r] = q[0] + 1
            continue
        xa = bisect(xa)
        d = dist(xa - x0)
        t = 0
        while True:
            n_t = min(int(init_evals * math.sqrt(t + 1)), max_evals)
            if max_queries - 1 - q[0] < n_t + reserve or d <= 0:
                break
            delta = 0.1 * float(np.mean(hi - lo)) if t == 0 else (math.sqrt(D) if l2 else D) * theta * d
            u = rng.standard_normal((n_t, D)) if l2 else rng.uniform(-1, 1, (n_t, D))
            u = u / np.maximum(np.sqrt(np.sum(u * u, axis=1)), 1e-300)[:, None]
            pts = np.clip(xa + delta * u, lo, hi)
            u = (pts - xa) / delta
            phi = np.where(adv(pts), 1.0, -1.0)
            m = phi.mean()
            w = phi if abs(m) == 1.0 else phi - m
            g = (w[:, None] * u).sum(axis=0) / n_t
            upd = g / max(np.sqrt(np.sum(g * g)), 1e-300) if l2 else np.sign(g)
            eps = d / math.sqrt(t + 1)
            for _ in range(20):
                c = np.clip(xa + eps * upd, lo, hi)
                if adv(c[None])[0]:
                    xa = bisect(c)
                    d = dist(xa - x0)
                    break
                eps /= 2
            t += 1
        out[r] = xa
        Q[r] = q[0] + 1
    return out, Q


def universal(spec, X, y, eps, norm, delta=0.2, max_passes=10, seed=0, lo=None, hi=None,
              overshoot=0.02):
    """Universal perturbation (Moosavi-Dezfooli et al. 2017), the paper's loop one row at a time
    (float64): for each row x + v does not fool, v += DeepFool's step from x + v, projected onto
    the eps-ball; passes in the order np.random.default_rng(seed).permutation gives."""
    X = np.asarray(X, np.float64)
    N, D = X.shape
    C = _n_classes(spec)
    rng = np.random.default_rng(seed)
    v = np.zeros(D)

    def pred(Z):
        return np.argmax(logits_and_vjp(spec, Z, np.zeros((len(Z), C)))[0], axis=1)

    def pert(Z):
        Z = Z + v
        return Z if lo is None else np.clip(Z, lo, hi)

    for _ in range(max_passes):
        for i in rng.permutation(N):
            x = pert(X[i:i + 1])
            if pred(x)[0] != y[i]:
                continue
            step = deepfool(spec, x, y[i:i + 1], overshoot=overshoot, norm=norm)[0] - x[0]
            v = v + step
            if norm == "2":
                n = np.linalg.norm(v)
                v = v * (eps / n) if n > eps else v
            else:
                v = np.clip(v, -eps, eps)
        if np.mean(pred(pert(X)) != y) >= 1 - delta:
            break
    return v


def project_plane_bisect(P, w, b, lo, hi, p):
    """The least-norm move d of one point P onto {z: w . z = b} inside the box [lo, hi], for p
    "inf" and "2" by bisection on the scalar of the optimality conditions (L-inf: each
    coordinate moves by min(tau, its room); L2: by min(lam |w_i|, its room)), for "1" by filling
    the coordinates of largest |w_i| first, one at a time. Where the plane misses the box: every
    coordinate at its room (the corner furthest toward the plane)."""
    P, w = np.asarray(P, np.float64), np.asarray(w, np.float64)
    D = P.shape[0]
    r = b - w @ P
    if r == 0 or D == 0:
        return np.zeros(D)
    direction = np.sign(w) * np.sign(r)
    room = np.where(direction > 0, (np.inf if hi is None else hi - P),
                    (np.inf if lo is None else P - lo))
    room = np.where(w == 0, 0.0, np.maximum(room, 0.0))
    v, r = np.abs(w), abs(r)
    if p == "1":
        e = np.zeros(D)
        left = r
        for i in sorted(range(D), key=lambda i: -v[i]):
            if v[i] == 0 or left <= 0:
                break
            take = min(room[i], left / v[i])
            e[i] = take
            left -= take * v[i]
        return direction * e
    mult = np.ones(D) if p == "inf" else v

    def progress(s):
        move = np.minimum(s * np.where(v > 0, mult, 1.0), room)
        return float(np.sum(np.where(v > 0, v * move, 0.0)))
    if progress(np.inf) < r:
        return direction * room
    a, hi_s = 0.0, 1.0
    while progress(hi_s) < r:
        hi_s *= 2
    for _ in range(200):
        m = (a + hi_s) / 2
        if progress(m) < r:
            a = m
        else:
            hi_s = m
    return direction * np.minimum(hi_s * mult, room)


def fab(spec, X, y, norm, steps, lo, hi, target=None, alpha_max=0.1, eta=1.05, beta=0.9,
        toward_target=False):
    """FAB (Croce & Hein 2020), one run from X, one row at a time in float64: untargeted (every
    other class's linearised boundary, the nearest kept) or toward ``target`` (per row), with the
    projections of :func:`project_plane_bisect`. Success: argmax of the logits not y (also when
    targeted: AutoAttack's FAB-T); with ``toward_target``, the plane between the target and its
    strongest rival at the iterate, success when the argmax is the target. Returns (closest adversarial iterate per row (X where none),
    its norm (inf where none))."""
    X = np.asarray(X, np.float64)
    C = _n_classes(spec)
    out = X.copy()
    dist = np.full(X.shape[0], np.inf)
    nrm = {"2": lambda v: np.linalg.norm(v), "inf": lambda v: np.abs(v).max(),
           "1": lambda v: np.abs(v).sum()}[norm]
    dual = {"2": lambda v: np.linalg.norm(v), "inf": lambda v: np.abs(v).sum(),
            "1": lambda v: np.abs(v).max()}[norm]
    for r in range(X.shape[0]):
        x0 = X[r]
        yr = int(y[r])
        x = x0.copy()
        for _ in range(steps):
            z = logits_and_vjp(spec, x[None], np.zeros((1, C)))[0][0]
            classes = [c for c in range(C) if c != yr] if target is None else [int(target[r])]
            base = yr
            if toward_target:
                tr = int(target[r])
                base = max((c for c in range(C) if c != tr), key=lambda c: (z[c], -c))
            best_c, best_d, plane = None, np.inf, None
            for c in classes:
                V = np.zeros((1, C))
                V[0, c], V[0, base] = 1.0, -1.0
                g = logits_and_vjp(spec, x[None], V)[1][0]
                f = z[c] - z[base]
                dd = abs(f) / (1e-12 + dual(g))
                if best_c is None or dd < best_d:
                    best_c, best_d, plane = c, dd, (g, g @ x - f)
            w, b = plane
            d1 = project_plane_bisect(x, w, b, lo, hi, norm)
            d2 = project_plane_bisect(x0, w, b, lo, hi, norm)
            a1, a2 = max(nrm(d1), 1e-8), max(nrm(d2), 1e-8)
            a = min(a1 / (a1 + a2), alpha_max)
            x = np.clip((x + eta * d1) * (1 - a) + (x0 + eta * d2) * a, lo, hi)
            zz = logits_and_vjp(spec, x[None], np.zeros((1, C)))[0][0]
            adv = int(np.argmax(zz)) == int(target[r]) if toward_target else \
                int(np.argmax(zz)) != yr
            if adv:
                if nrm(x - x0) < dist[r]:
                    dist[r], out[r] = nrm(x - x0), x
                x = x0 + (x - x0) * beta
    return out, dist


def ce_and_grad(spec, x, label):
    """(softmax probabilities, input gradient of the cross-entropy at ``label``) of one row."""
    C = _n_classes(spec)
    z = logits_and_vjp(spec, x[None], np.zeros((1, C)))[0][0]
    p = np.exp(z - z.max())
    p /= p.sum()
    V = p.copy()
    V[label] -= 1.0
    return p, logits_and_vjp(spec, x[None], V[None])[1][0]


def ddn(spec, X, y, steps, lo, hi, init_eps=1.0, gamma=0.05, target=None):
    """Decoupled Direction and Norm (Rony et al. 2019), one row at a time in float64: the
    smallest adversarial iterate per row (X where none)."""
    import math
    X = np.asarray(X, np.float64)
    out = X.copy()
    for r in range(X.shape[0]):
        x0 = X[r]
        worst = np.linalg.norm(np.maximum(x0 - lo, hi - x0))
        delta = np.zeros_like(x0)
        eps, best = init_eps, np.inf
        lab = int(y[r] if target is None else target[r])
        for i in range(steps):
            alpha = 0.01 + 0.99 * (1 + math.cos(math.pi * i / steps)) / 2
            p, g = ce_and_grad(spec, x0 + delta, lab)
            pred = int(np.argmax(p))
            adv = pred != int(y[r]) if target is None else pred == lab
            if adv and np.linalg.norm(delta) < best:
                best, out[r] = np.linalg.norm(delta), x0 + delta
            if target is not None:
                g = -g
            gn = np.linalg.norm(g)
            if gn > 0:
                delta = delta + alpha * g / gn
            eps = min(eps * (1 - gamma) if adv else eps * (1 + gamma), worst)
            nd = np.linalg.norm(delta)
            if nd > 0:
                delta = delta * eps / nd
            delta = np.clip(x0 + delta, lo, hi) - x0
    return out


def cw(spec, X, y, steps, binary_search_steps, lo, hi, initial_const=1e-3, confidence=0.0,
       lr=0.01):
    """Carlini-Wagner L2 (2017), untargeted, one row at a time in float64: tanh change of
    variables onto [lo, hi], Adam, the search over c (x10 until found, then bisection), the row's
    own early stop at each tenth of the steps. Returns the smallest adversarial point per row."""
    X = np.asarray(X, np.float64)
    C = _n_classes(spec)
    out = X.copy()
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    every = max(1, -(-steps // 10))
    for r in range(X.shape[0]):
        x0, yr = X[r], int(y[r])
        w0 = np.arctanh((x0 - mid) / half * 0.999999)
        xrec = mid + half * np.tanh(w0)
        c, low, up, best = initial_const, 0.0, np.inf, np.inf
        for _ in range(binary_search_steps):
            w = np.zeros_like(x0)
            m1, m2 = np.zeros_like(x0), np.zeros_like(x0)
            found, prev = False, np.inf
            for k in range(steps):
                th = np.tanh(w0 + w)
                xp = mid + half * th
                z = logits_and_vjp(spec, xp[None], np.zeros((1, C)))[0][0]
                j = max((q for q in range(C) if q != yr), key=lambda q: (z[q], -q))
                hinge = z[yr] - z[j] + confidence
                obj = np.sum((xp - xrec) ** 2) + c * max(hinge, 0.0)
                if hinge < 0:
                    found = True
                    if np.linalg.norm(xp - x0) < best:
                        best, out[r] = np.linalg.norm(xp - x0), xp
                g = 2 * (xp - xrec)
                if hinge > 0:
                    V = np.zeros((1, C))
                    V[0, yr], V[0, j] = c, -c
                    g = g + logits_and_vjp(spec, xp[None], V)[1][0]
                g = g * half * (1 - th * th)
                t = k + 1
                m1 = 0.9 * m1 + 0.1 * g
                m2 = 0.999 * m2 + 0.001 * g * g
                w = w - lr * (m1 / (1 - 0.9 ** t)) / (np.sqrt(m2 / (1 - 0.999 ** t)) + 1e-8)
                if k % every == 0:
                    if not obj <= 0.9999 * prev:
                        break
                    prev = obj
            if found:
                up = min(up, c)
            else:
                low = max(low, c)
            c = c * 10 if np.isinf(up) else (low + up) / 2
    return out


def _eta_rect(a, b):
    out = np.zeros((a, b))
    for i in range(a):
        for j in range(b):
            # rectangle k covers (i, j) when |i - a // 2| <= k and |j - b // 2| <= k
            k0 = max(abs(i - a // 2), abs(j - b // 2))
            out[i, j] = sum(1.0 / (k + 1) ** 2 for k in range(k0, max(a // 2 + 1, b // 2 + 1)))
    n = np.sqrt((out ** 2).sum())
    return out / n if n > 0 else out


def eta_l2(sh, sw, flip):
    """The L2 Square Attack's window content, computed cell by cell."""
    if sh >= 2 or sw == 1:
        out = np.concatenate([_eta_rect(sh // 2, sw), -_eta_rect(sh - sh // 2, sw)], axis=0)
    else:
        out = np.concatenate([_eta_rect(1, sw // 2), -_eta_rect(1, sw - sw // 2)], axis=1)
    out = out / np.sqrt((out ** 2).sum())
    return out.T if flip and sh == sw else out


def square_l2(spec, X, y, eps, n_iters, H, W, C, seed, lo, hi, p_init=0.8):
    """The L2 Square Attack (AutoAttack's version: windows shared by all rows), float64, with
    fastfool's order of random draws (start: signs (N, bh, bw, C), transposition coins (bh, bw);
    then per iteration: 4 corner fractions, one coin, signs (N, C)); row-major H x W x C
    images. Returns (x_best, queries)."""
    import math
    from fastfool.attacks.square import p_schedule
    rng = np.random.default_rng(seed)
    X = np.asarray(X, np.float64)
    N, D = X.shape
    C_out = _n_classes(spec)

    def margin(x, r):
        z = logits_and_vjp(spec, x[None], np.zeros((1, C_out)))[0][0]
        return z[y[r]] - max(z[j] for j in range(C_out) if j != y[r])

    def point(d, x0):
        return np.clip(x0 + d / (np.linalg.norm(d) + 1e-12) * eps, lo, hi)
    s0 = max(min(H, W) // 5, 1)
    bh, bw = H // s0, W // s0
    oh, ow = max((H - s0 * 5) // 2, 0), max((W - s0 * 5) // 2, 0)
    signs0 = rng.choice(np.array([-1.0, 1.0]), size=(N, bh, bw, C))
    flips0 = rng.random((bh, bw)) > 0.5
    best = np.empty_like(X)
    marg = np.empty(N)
    q = np.ones(N, dtype=np.int64)
    for r in range(N):
        d = np.zeros((H, W, C))
        for a in range(bh):
            for b in range(bw):
                h0, w0 = oh + a * s0, ow + b * s0
                if h0 + s0 <= H and w0 + s0 <= W:
                    e = eta_l2(s0, s0, bool(flips0[a, b]))
                    for c in range(C):
                        d[h0:h0 + s0, w0:w0 + s0, c] += signs0[r, a, b, c] * e
        best[r] = point(d.reshape(-1), X[r])
        marg[r] = margin(best[r], r)
    for it in range(n_iters - 1):
        u = rng.random(4)
        flip = rng.random() > 0.5
        sg = rng.choice(np.array([-1.0, 1.0]), size=(N, C))
        if not (marg > 0).any():
            break
        p = p_schedule(p_init, it, n_iters)
        s = max(int(round(math.sqrt(p * D / C))), 3)
        s = min(s + (s % 2 == 0), min(H, W))
        h1, w1 = (int(u[0] * (H - s)) if H > s else 0), (int(u[1] * (W - s)) if W > s else 0)
        h2, w2 = (int(u[2] * (H - s)) if H > s else 0), (int(u[3] * (W - s)) if W > s else 0)
        e = eta_l2(s, s, flip)
        for r in np.flatnonzero(marg > 0):
            d = (best[r] - X[r]).reshape(H, W, C).copy()
            n_img = np.linalg.norm(d)
            for c in range(C):
                win1 = d[h1:h1 + s, w1:w1 + s, c].copy()
                mask = np.zeros((H, W), dtype=bool)
                mask[h1:h1 + s, w1:w1 + s] = True
                mask[h2:h2 + s, w2:w2 + s] = True
                n_win = np.linalg.norm(d[:, :, c][mask])
                new = sg[r, c] * e + win1 / (1e-12 + np.linalg.norm(win1))
                new = new / (1e-12 + np.linalg.norm(new)) * np.sqrt(
                    max(eps ** 2 - n_img ** 2, 0.0) / C + n_win ** 2)
                d[h2:h2 + s, w2:w2 + s, c] = 0.0
                d[h1:h1 + s, w1:w1 + s, c] = new
            cand = point(d.reshape(-1), X[r])
            m = margin(cand, r)
            if m < marg[r] or m <= 0:
                best[r], marg[r] = cand, m
            q[r] += 1
    return best, q


def project_l1_box_bisect(x0, v, eps, lo, hi):
    """One row: the L2 projection of v onto the L1 ball of radius eps around x0 inside [lo, hi],
    by bisection on the soft-threshold level."""
    d = v - x0
    s, a = np.sign(d), np.abs(d)
    room = np.where(s >= 0, hi - x0, x0 - lo)

    def used(lam):
        return np.clip(a - lam, 0, room).sum()
    lam = 0.0
    if used(0.0) > eps:
        lo_l, hi_l = 0.0, a.max()
        for _ in range(200):
            m = (lo_l + hi_l) / 2
            if used(m) > eps:
                lo_l = m
            else:
                hi_l = m
        lam = hi_l
    return x0 + s * np.clip(a - lam, 0, room)


def apgd_l1(spec, X, y, eps, steps, lo, hi):
    """L1-APGD (Croce & Hein 2021), cross-entropy, untargeted, from X, one row at a time: the
    sparse signed step on the top fraction of |gradient| coordinates, the L1-ball-and-box
    projection, the sparsity-adaptive step size and fraction every 4% of the steps."""
    X = np.asarray(X, np.float64)
    C = _n_classes(spec)
    out = np.empty_like(X)
    D = X.shape[1]
    period = max(int(0.04 * steps), 1)

    def f_and_g(x, r):
        L, _ = logits_and_vjp(spec, x[None], np.zeros((1, C)))
        P = np.exp(L - L.max()) / np.exp(L - L.max()).sum()
        V = P.copy()
        V[0, y[r]] -= 1
        _, G = logits_and_vjp(spec, x[None], V)
        return -np.log(P[0, y[r]]), G[0], int(np.argmax(L))

    for r in range(X.shape[0]):
        x0 = X[r]
        x = x0.copy()
        eta, topk, sp_old = eps, 0.2, float(D)
        f, g, c = f_and_g(x, r)
        bf, bx, bg = f, x.copy(), g.copy()
        fooled, adv = c != y[r], x.copy()
        for k in range(steps):
            thr = np.sort(np.abs(g))[min(max(int((1 - topk) * D), 0), D - 1)]
            sp = np.sign(g) * (np.abs(g) >= thr)
            x = project_l1_box_bisect(x0, x + eta * sp / (np.abs(sp).sum() + 1e-10), eps, lo, hi)
            f, g, c = f_and_g(x, r)
            if c != y[r]:
                adv, fooled = x.copy(), True
            if f > bf:
                bf, bx, bg = f, x.copy(), g.copy()
            if (k + 1) % period == 0:
                s_cur = float(np.count_nonzero(bx != x0))
                red = s_cur / sp_old < 0.95
                topk = s_cur / D / 1.5
                eta = min(max(eps if red else eta / 1.5, eps / 10), eps)
                sp_old = s_cur
                if red:
                    x, g = bx.copy(), bg.copy()
        out[r] = adv if fooled else bx
    return out
