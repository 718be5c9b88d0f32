"""Sound lower bounds on the robust radius of kernel SVMs (binary ``KernelSVM``, one-vs-one
``OvOSVM``, one-vs-rest ``OvRSVM``; rbf, poly, sigmoid and linear kernels, also behind a
pipeline's affine steps), used by :func:`fastfool.certify`.

Every decision is a sign or an order of kernel expansions ``f(x) = sum_s c_s K(x, sv_s) + b``
(the binary score; each one-vs-one pair's score; the one-vs-rest margins ``f_k - f_j``). Over
the ball around a row two bounds on each expansion are computed, both sound, and the tighter
one is kept:

- ``"ibp"``, interval arithmetic on the expansion: an interval for every kernel value over the
  region (rbf: from the exact per-coordinate range of ``|z - sv|^2`` over the box, or
  ``(|z0 - sv| -+ R)^2`` over a ball; poly / sigmoid / linear: from the range of ``z . sv``),
  then ``sum_{c>0} c K_lo + sum_{c<0} c K_hi + b``. Loose far from the row (it forgets that all
  kernel values move together), but it sees that distant support vectors cannot matter.
- ``"taylor"``, first order with a bounded remainder: ``f(x + d) >= f(x) + grad f(x) . d -
  H ||d||_2^2 / 2`` with ``grad f(x) . d`` minimised exactly over the box (or the ball) and
  ``H >= sup ||hess f||_2`` over the region from per-support-vector bounds (rbf: ``gamma e^-v
  max(2, |4 v - 2|)`` at ``v = gamma |z - sv|^2``, its supremum over the region's range of v;
  poly: ``p (p - 1) gamma^2 |t|^(p-2) |sv|^2``; sigmoid: ``(4 / 3 sqrt 3) gamma^2 |sv|^2``;
  linear: 0, so the linear-kernel bound is exact per expansion). Tight near the row.

Decisions: binary, the score's sign (both ways strict); one-vs-one, libsvm's votes: the
predicted class k keeps at least the votes of the pairs certain for it, any other class j gets
at most its certain votes plus every uncertain pair of j, and k is certified while ``min votes
k > max votes j`` (or equal with k < j: the first of equal counts wins) for every j;
one-vs-rest: every margin ``f_k - f_j`` positive. The radius is found by bisection below an
upper bound (an attack's distance), as for the MLPs.

Floating point: everything is computed in float64 and rounded outward: squared distances and
dot products by a ``4 (D + 3) u`` allowance on their magnitudes, kernel values by 4 ulps, the
sums over support vectors by ``2 gamma_n`` of ``sum |c| K_hi``, the value at the row by the
model's own rounding bound (the one :mod:`fastfool.verdict` uses), the gradient by ``1e-8`` of
``sum_s |c_s| |grad K_s|`` (rounding is below 1e-12 of it for any practical size). A pipeline's
affine steps ``z = x A + c`` map the ball to a box (half-widths ``h |A|``) or a ball (radius
``eps ||A||_2``) around the computed ``z``, widened by the map's rounding bound.
"""

from __future__ import annotations

import numpy as np

from . import verdict

U = verdict.U64
_PEAK = 4.0 * np.exp(-1.5)        # sup over v > 1 of (4 v - 2) e^-v, at v = 1.5
_V_STAR = float(np.log(2.0 / _PEAK))  # below it 2 e^-v is the larger
_TANH2 = 4.0 / (3.0 * np.sqrt(3.0))   # sup |tanh''|
_GRAD_REL = 1e-8
METHODS = ("auto", "ibp", "taylor")


def _g(n):
    return verdict.gamma(int(n))


def _phi_sup(v):
    """sup over w >= v of e^-w max(2, |4 w - 2|) (the rbf Hessian's norm over gamma)."""
    v = np.maximum(v, 0.0)
    out = np.where(v < _V_STAR, 2.0 * np.exp(-v), _PEAK)
    return np.where(v > 1.5, (4.0 * v - 2.0) * np.exp(-v), out) * (1 + 1e-12)


class Expansions:
    """The decision functions of one kernel SVM as kernel expansions, and their bounds."""

    def __init__(self, model):
        from .models.svm import KernelSVM, OvOSVM, OvRSVM
        if isinstance(model, KernelSVM):
            k = model._reference()
            self.kind = "binary"
            self.C = np.asarray(k._a64, np.float64)[:, None]
            self.b = np.array([k.intercept_], np.float64)
            self.pairs = None
        elif isinstance(model, OvOSVM):
            model._sync()
            k = model._kern
            self.kind = "ovr" if isinstance(model, OvRSVM) or model._pairs is None else "ovo"
            self.C = np.asarray(model._A, np.float64)
            self.b = np.asarray(model._b, np.float64)
            self.pairs = model._pairs
        else:
            raise TypeError(f"not a kernel SVM: {type(model).__name__}")
        self.n_classes = model.n_classes
        self.k = k
        self.kernel, self.gam, self.c0, self.deg = k.kernel, float(k.gamma), float(k.coef0), int(k.degree)
        self.inmap = k._in
        self.S = k._S64
        self.Sc = k._Sc  # centred on the support vectors' mean (rbf)
        self.Sc_sq = k._Sc_sq
        self.S_abs = np.abs(self.S)
        self.S_l2 = np.sqrt(np.einsum("ij,ij->i", self.S, self.S))
        self.Sc_abs = np.abs(self.Sc)
        if self.inmap is None:
            self.A_abs, self.A_l2 = None, 1.0
        elif self.inmap.diag:
            self.A_abs = np.abs(self.inmap.A)
            self.A_l2 = float(self.A_abs.max()) if self.A_abs.size else 0.0
        else:
            self.A_abs = np.abs(self.inmap.A)
            self.A_l2 = float(np.linalg.norm(self.inmap.A, 2)) * (1 + 1e-9)

    # -- the row itself ----------------------------------------------------------------------
    def at(self, X64, threads):
        """(F (N, M) the expansions at X, err (N, M) their rounding bound, grads: a list of M
        (N, D) input gradients, gmag (N, M) the gradients' magnitude bound)."""
        k = self.k
        K, Kb, Z = k._kernel_terms(X64, threads, want_bound=True)
        _, dK, _ = k._kernel_terms(X64, threads)
        aC = np.abs(self.C)
        F = K @ self.C + self.b
        err = Kb @ aC + _g(self.C.shape[0]) * (np.abs(K) @ aC + np.abs(self.b))
        grads = []
        if self.kernel == "rbf":  # grad K_s = -2 gamma K_s (z - sv_s); Z is centred
            dist = np.sqrt(np.maximum(np.einsum("ij,ij->i", Z, Z)[:, None] + self.Sc_sq[None]
                                      - 2 * Z @ self.Sc.T, 0))
            per = 2 * self.gam * np.abs(K) * dist
        elif self.kernel == "linear":  # grad (z . sv) = sv
            per = np.broadcast_to(self.S_l2[None], K.shape)
        else:  # grad K_s = k'(z . sv) gamma sv (dK holds the factor)
            per = np.abs(dK) * self.S_l2[None]
        gmag = (per @ aC) * self.A_l2
        for q in range(self.C.shape[1]):
            if self.kernel == "linear":
                G = np.broadcast_to(self.S.T @ self.C[:, q], Z.shape).copy()
            elif self.kernel == "rbf":
                w = dK * self.C[:, q]
                G = -2 * self.gam * (w.sum(axis=1)[:, None] * Z - w @ self.Sc)
            else:
                G = (dK * self.C[:, q]) @ self.S
            if self.inmap is not None:
                G = self.inmap.back(G)
            grads.append(G)
        # the computed z is off the exact one by r (a pipeline's steps): gradients move by at
        # most ||A|| sup||hess|| r (added in bounds())
        r = np.zeros(X64.shape[0]) if self.inmap is None else self.inmap.radius(X64)
        return F, err, grads, gmag, r

    # -- a region around each row --------------------------------------------------------------
    def _z_region(self, X64, eps, p, lo, hi):
        """The region in the kernel's input space: ("box", centre m (N, Dz), half-widths h)
        or ("ball", centre (N, Dz), radius (N,)); and, in x space, the box (a, b) the
        first-order term is minimised over (None for a ball) and sup ||d||_2^2."""
        e = eps[:, None]
        if p == "inf":
            a, b = X64 - e, X64 + e
            if lo is not None:
                a = np.maximum(a, lo)
            if hi is not None:
                b = np.minimum(b, hi)
            a, b = np.minimum(a, X64), np.maximum(b, X64)
            d2 = np.einsum("ij,ij->i", np.maximum(X64 - a, b - X64), np.maximum(X64 - a, b - X64))
            m, h = (a + b) / 2, (b - a) / 2
            if self.inmap is not None:
                r = self.inmap.radius(X64)[:, None]
                if self.inmap.diag:
                    m = self.inmap.apply(m)
                    h = h * self.A_abs + r
                else:
                    m = self.inmap.apply(m)
                    h = h @ self.A_abs + r
            return ("box", m, h), (a, b), d2 * (1 + 4 * U)
        # L2 (and L1, inside the L2 ball of the same radius): a ball, the box ignored (sound)
        z0, R = X64, eps.copy()
        if self.inmap is not None:
            z0 = self.inmap.apply(X64)
            R = eps * self.A_l2 + self.inmap.radius(X64)
        return ("ball", z0, R * (1 + 4 * U)), None, (eps * eps) * (1 + 4 * U)

    def _intervals(self, reg):
        """(K_lo, K_hi, H): kernel values' range over the region and a bound on each kernel
        term's Hessian norm (N, n_sv), in the kernel's input space."""
        kind, z, w = reg
        Dz = z.shape[1]
        if self.kernel == "rbf":
            zc = z - self.k._center
            if kind == "box":
                lo2 = np.empty((z.shape[0], self.Sc.shape[0]))
                hi2 = np.empty_like(lo2)
                step = max(1, (1 << 22) // max(self.Sc.size, 1))
                for i in range(0, z.shape[0], step):
                    t = np.abs(zc[i:i + step, None, :] - self.Sc[None])
                    hh = w[i:i + step, None, :]
                    lo2[i:i + step] = np.square(np.maximum(t - hh, 0)).sum(axis=2)
                    hi2[i:i + step] = np.square(t + hh).sum(axis=2)
                mag = np.abs(zc) + w
                Q = (np.einsum("ij,ij->i", mag, mag)[:, None] + 2 * mag @ self.Sc_abs.T
                     + self.Sc_sq[None])
                e2 = 4 * (Dz + 3) * U * Q
                lo2 = np.maximum(lo2 - e2, 0)
                hi2 = hi2 + e2
            else:
                zz = np.einsum("ij,ij->i", zc, zc)
                d2 = np.maximum(zz[:, None] + self.Sc_sq[None] - 2 * zc @ self.Sc.T, 0)
                e2 = 2 * _g(Dz) * (np.sqrt(zz)[:, None] + np.sqrt(self.Sc_sq)[None]) ** 2
                d_lo = np.sqrt(np.maximum(d2 - e2, 0)) * (1 - 4 * U)
                d_hi = np.sqrt(d2 + e2) * (1 + 4 * U)
                R = w[:, None]
                lo2 = np.square(np.maximum(d_lo - R, 0)) * (1 - 4 * U)
                hi2 = np.square(d_hi + R) * (1 + 4 * U)
            g = self.gam
            K_lo = np.exp(-g * hi2) * (1 - 4 * U)
            K_hi = np.minimum(np.exp(-g * lo2) * (1 + 4 * U), 1.0)
            H = g * _phi_sup(g * lo2 * (1 - 4 * U))
            return K_lo, K_hi, H
        # poly / sigmoid / linear: the range of t = gamma z . sv + c0
        if kind == "box":
            mid = z @ self.S.T
            rad = w @ self.S_abs.T
            err = _g(Dz) * ((np.abs(z) + w) @ self.S_abs.T)
        else:
            mid = z @ self.S.T
            rad = w[:, None] * self.S_l2[None]
            err = _g(Dz) * np.sqrt(np.einsum("ij,ij->i", z, z))[:, None] * self.S_l2[None]
        d_lo, d_hi = mid - rad - err, mid + rad + err
        if self.kernel == "linear":
            return d_lo, d_hi, np.zeros_like(d_lo)
        g, c0 = self.gam, self.c0
        t1, t2 = g * d_lo + c0, g * d_hi + c0
        t_lo, t_hi = np.minimum(t1, t2), np.maximum(t1, t2)
        slack = 4 * U * (np.abs(t_lo) + np.abs(t_hi) + abs(c0))
        t_lo, t_hi = t_lo - slack, t_hi + slack
        tmax = np.maximum(np.abs(t_lo), np.abs(t_hi))
        if self.kernel == "sigmoid":
            K_lo = np.tanh(t_lo) - 4 * U
            K_hi = np.tanh(t_hi) + 4 * U
            H = _TANH2 * g * g * np.square(self.S_l2)[None] * np.ones_like(t_lo)
            return K_lo, K_hi, H * (1 + 1e-12)
        p = self.deg
        if p == 0:
            one = np.ones_like(t_lo)
            return one, one, np.zeros_like(t_lo)
        a, b = t_lo ** p, t_hi ** p
        K_lo, K_hi = np.minimum(a, b), np.maximum(a, b)
        if p % 2 == 0:
            K_lo = np.where((t_lo <= 0) & (t_hi >= 0), 0.0, K_lo)
        rel = 4 * (p + 1) * U
        K_lo = K_lo - rel * np.abs(K_lo)
        K_hi = K_hi + rel * np.abs(K_hi)
        H = (p * (p - 1) * g * g) * tmax ** max(p - 2, 0) * np.square(self.S_l2)[None] \
            if p >= 2 else np.zeros_like(t_lo)
        return K_lo, K_hi, H * (1 + 1e-12)

    def bounds(self, X64, eps, p, lo, hi, center, method):
        """(lower, upper) (N, M) of every expansion over the region of radius eps (N,)."""
        F, err, grads, gmag, rz = center
        reg, box, d2 = self._z_region(X64, eps, p, lo, hi)
        K_lo, K_hi, H = self._intervals(reg)
        aC = np.abs(self.C)
        Cp, Cn = np.maximum(self.C, 0), np.minimum(self.C, 0)
        n_sv = self.C.shape[0]
        lower = np.full(F.shape, -np.inf)
        upper = np.full(F.shape, np.inf)
        if method in ("auto", "ibp"):
            mag = np.maximum(np.abs(K_lo), np.abs(K_hi)) @ aC + np.abs(self.b)
            s = 2 * _g(n_sv + 1) * mag
            lower = K_lo @ Cp + K_hi @ Cn + self.b - s
            upper = K_hi @ Cp + K_lo @ Cn + self.b + s
        if method in ("auto", "taylor"):
            Hz = H @ aC
            Hx = Hz * self.A_l2 ** 2 * (1 + 1e-12)
            dn = np.sqrt(d2)
            quad = 0.5 * Hx * d2[:, None]
            for q, G in enumerate(grads):
                if box is not None:
                    a, b = box
                    down = np.maximum(G * (X64 - a), G * (X64 - b)).sum(axis=1)
                    up = np.maximum(G * (a - X64), G * (b - X64)).sum(axis=1)
                elif p == "1":
                    n = np.abs(G).max(axis=1) if G.shape[1] else np.zeros(G.shape[0])
                    down = up = eps * n
                else:
                    down = up = eps * np.sqrt(np.einsum("ij,ij->i", G, G))
                ge = (_GRAD_REL * gmag[:, q] + Hz[:, q] * self.A_l2 * rz) * dn
                lt = F[:, q] - err[:, q] - down * (1 + 4 * U) - ge - quad[:, q]
                ut = F[:, q] + err[:, q] + up * (1 + 4 * U) + ge + quad[:, q]
                lower[:, q] = np.maximum(lower[:, q], lt)
                upper[:, q] = np.minimum(upper[:, q], ut)
        return lower, upper

    # -- the decision ------------------------------------------------------------------------
    def holds(self, lower, upper, pred):
        """(ok (N,), rival (N,)): whether the bounds prove the decision ``pred`` over the
        region, and the class that threatens it most."""
        N = lower.shape[0]
        r = np.arange(N)
        if self.kind == "binary":
            ok = np.where(pred == 1, lower[:, 0] > 0, upper[:, 0] < 0)
            return ok, 1 - pred
        if self.kind == "ovr":
            C = self.n_classes
            # margins f_k - f_j from the scores' bounds would lose their correlation: the
            # caller passes the margins' bounds (see margins()) in lower, one column per class
            m = lower.copy()
            m[r, pred] = np.inf
            return np.all(m > 0, axis=1), np.argmin(m, axis=1)
        C = self.n_classes
        sure = np.zeros((N, C), dtype=np.int64)
        maybe = np.zeros((N, C), dtype=np.int64)
        for q, (i, j) in enumerate(self.pairs):
            wi, wj = lower[:, q] > 0, upper[:, q] < 0
            unsure = ~wi & ~wj
            sure[:, i] += wi
            sure[:, j] += wj
            maybe[:, i] += unsure
            maybe[:, j] += unsure
        mink = sure[r, pred]
        most = sure + maybe
        cls = np.arange(C)[None, :]
        beats = (mink[:, None] > most) | ((mink[:, None] == most) & (pred[:, None] < cls))
        beats[r, pred] = True
        return beats.all(axis=1), np.argmin(np.where(beats, 1 << 40, -most), axis=1)


def margins_ovr(ex: Expansions, pred):
    """For one-vs-rest: an Expansions over the margins f_k - f_j for each row's class k
    (rows grouped by class); returns a list of (rows, Expansions-like view)."""
    out = []
    for k in np.unique(pred):
        C = ex.C[:, [k]] - ex.C
        b = ex.b[k] - ex.b
        view = object.__new__(Expansions)
        view.__dict__.update(ex.__dict__)
        view.C, view.b = C, b
        out.append((np.flatnonzero(pred == k), view))
    return out


def certify_svm(model, X64, pred, clear, p, lo, hi, upper, steps, method, threads):
    """(radius (N,), rival (N,)) for a kernel SVM: the largest eps (bisection below ``upper``)
    at which the bounds prove each row's decision ``pred``; 0 for rows not ``clear``."""
    ex = Expansions(model)
    N = X64.shape[0]
    radius = np.zeros(N)
    rival = np.zeros(N, dtype=np.int64)
    groups = margins_ovr(ex, pred) if ex.kind == "ovr" else [(np.arange(N), ex)]
    per = max(1, (1 << 20) // max(ex.C.shape[0] * max(ex.C.shape[1], 1), 1))
    for rows, e in groups:
        for i in range(0, rows.size, per):
            sel = rows[i:i + per]
            x0, k = X64[sel], pred[sel]
            center = e.at(x0, threads)
            lo_e = np.zeros(sel.size)
            hi_e = np.minimum(upper[sel], np.finfo(np.float64).max / 4)
            first = np.full(sel.size, -1, dtype=np.int64)
            for _ in range(steps):
                mid = (lo_e + hi_e) / 2
                ok, riv = e.holds(*e.bounds(x0, mid, p, lo, hi, center, method), k)
                lo_e = np.where(ok, mid, lo_e)
                hi_e = np.where(ok, hi_e, mid)
                first = np.where(ok | (first >= 0), first, riv)
            ok, riv = e.holds(*e.bounds(x0, hi_e, p, lo, hi, center, method), k)
            radius[sel] = np.where(ok, hi_e, lo_e)
            rival[sel] = np.where(first >= 0, first, riv)
    radius[~clear] = 0.0
    return radius, rival
