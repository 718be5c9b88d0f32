"""Binary kernel SVMs (scikit-learn ``SVC``/``NuSVC`` with linear, rbf, poly or sigmoid kernels)
as fastfool models: scores and input gradients from ``support_vectors_`` and ``dual_coef_``.

``s(x) = sum_i a_i K(x, sv_i) + b``; every product ``x . sv_i`` goes through the batched scoring
kernel (for rbf, ``||x - sv||^2 = ||x||^2 + ||sv||^2 - 2 x . sv``), and the gradient
``grad s(x) = sum_i a_i grad K(x, sv_i)`` is one more product with the support vectors. The
probabilities are the 2-class softmax over ``[0, s]`` (``sigmoid(s)``), which is what the
gradient attacks ascend (scikit-learn's Platt-scaled ``predict_proba`` differs).
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .models import Model, _model_dtype, _weight

__all__ = ["KernelSVM"]

_KERNELS = ("linear", "rbf", "poly", "sigmoid")


class KernelSVM(Model):
    """Binary kernel SVM: ``support_vectors (n_sv, D)``, ``dual_coef (n_sv,)``, ``intercept``.

    Parameters
    ----------
    kernel : "linear", "rbf", "poly" or "sigmoid"; gamma, coef0, degree as in scikit-learn
        (gamma must be the resolved number, e.g. ``est._gamma``).
    classes : the two labels (default [0, 1]); s > 0 predicts ``classes[1]``.
    """

    def __init__(self, support_vectors, dual_coef, intercept=0.0, *, kernel="rbf", gamma=1.0,
                 coef0=0.0, degree=3, classes=None, dtype=None):
        dt = _model_dtype(dtype, support_vectors)
        S = _weight(support_vectors, "support_vectors", dt)
        if S.ndim != 2 or 0 in S.shape:
            raise ValueError(f"support_vectors: expected a non-empty (n_sv, D) array, got {S.shape}")
        a = _weight(dual_coef, "dual_coef", dt).reshape(-1)
        if a.shape != (S.shape[0],):
            raise ValueError(f"dual_coef: expected {S.shape[0]} values (one per support vector), "
                             f"got shape {np.shape(dual_coef)}")
        if kernel not in _KERNELS:
            raise ValueError(f"kernel: expected one of {_KERNELS}, got {kernel!r}")
        super().__init__(classes, 1, dt)
        self.support_vectors_, self.dual_coef_ = S, a
        self.intercept_ = float(np.asarray(intercept).reshape(-1)[0])
        self.kernel, self.gamma, self.coef0, self.degree = kernel, float(gamma), float(coef0), int(degree)
        self._sv_sq = np.einsum("ij,ij->i", S, S)
        # A linear kernel is a linear model: keep its weights for the exact attacks.
        self._Ws = [np.ascontiguousarray((a @ S)[:, None])] if kernel == "linear" else [np.zeros((S.shape[1], 1), dt)]
        self._bs = [np.array([self.intercept_], dt)]
        self._acts = ["identity"]
        self._set_output(self._Ws[0], self._bs[0])

    def __repr__(self):
        return (f"KernelSVM({self.kernel}, {self.support_vectors_.shape[0]} support vectors, "
                f"{self.n_features_in_} features, {self.dtype})")

    @property
    def n_features_in_(self) -> int:
        return self.support_vectors_.shape[1]

    # K(x, sv) and dK/d(x.sv)-style factors, from the dot products D = X @ S.T
    def _kernel_terms(self, X, threads):
        dots = kernels.scores(X, self.support_vectors_, threads=threads)
        g, c0 = self.gamma, self.coef0
        if self.kernel == "linear":
            return dots, None
        if self.kernel == "rbf":
            xx = np.einsum("ij,ij->i", X, X)
            d2 = np.maximum(xx[:, None] + self._sv_sq[None, :] - 2 * dots, 0)
            K = np.exp(-g * d2)
            return K, K
        if self.kernel == "poly":
            base = g * dots + c0
            return base ** self.degree, self.degree * g * base ** (self.degree - 1)
        t = np.tanh(g * dots + c0)
        return t, g * (1 - t * t)

    def _score(self, X, threads):
        K, _ = self._kernel_terms(X, threads)
        return K @ self.dual_coef_ + self.intercept_

    def _score_grad(self, X, threads):
        """(s (N,), grad s (N, D))."""
        K, dK = self._kernel_terms(X, threads)
        a = self.dual_coef_
        s = K @ a + self.intercept_
        if self.kernel == "linear":
            G = np.broadcast_to(self._Ws[0][:, 0], X.shape).copy()
        elif self.kernel == "rbf":  # sum a_i K_i (-2 gamma)(x - sv_i)
            w = dK * a
            G = -2 * self.gamma * (w.sum(axis=1)[:, None] * X -
                                   kernels.scores(w, self.support_vectors_.T, threads=threads))
        else:  # poly / sigmoid: sum a_i k'(x.sv_i) sv_i
            G = kernels.scores(dK * a, self.support_vectors_.T, threads=threads)
        return s.astype(self.dtype), np.ascontiguousarray(G, dtype=self.dtype)

    def _forward(self, X, threads):
        return self._score(X, threads).astype(self.dtype)[:, None]

    def _forward_soft(self, X, epilogue, threads):
        s = self._score(X, threads).astype(self.dtype)
        L = np.column_stack([np.zeros_like(s), s])
        if epilogue is None:
            return L
        return kernels.scores(L, np.eye(2, dtype=self.dtype), epilogue=epilogue, threads=threads)

    def _ce_grad(self, X, yi, threads, return_prob=False, out=None):
        s, G = self._score_grad(X, threads)
        L = np.column_stack([np.zeros_like(s), s])
        P = kernels.scores(L, np.eye(2, dtype=self.dtype), epilogue="softmax", threads=threads)
        d = P[:, 1] - (yi == 1)
        r = np.arange(len(yi))
        loss = -np.log(np.maximum(P[r, yi], np.finfo(self.dtype).tiny))
        G *= d[:, None].astype(self.dtype)
        if out is not None:
            out[...] = G
            G = out
        return (G, loss, P) if return_prob else (G, loss)

    _steps_final_prob = False

    def _ce_step(self, X, yi, x0, threads, out, steps=1, **step):
        for _ in range(steps):  # no fused multi-step kernel for kernel SVMs: one call per step
            G, _ = self._ce_grad(X, yi, threads)
            X = out = kernels.fused_update(X, G, x0, out=out, threads=threads, **step)
        return out

    def _logit_vjp(self, X, V, threads, return_logits=False):
        s, G = self._score_grad(X, threads)
        G *= np.asarray(V[:, 1], dtype=self.dtype)[:, None]
        if return_logits:
            return G, np.column_stack([np.zeros_like(s), s])
        return G

    def affine_map(self):
        if self.kernel != "linear":
            raise ValueError(f"this model is not affine (a {self.kernel} kernel SVM)")
        return super().affine_map()

    def hidden(self, X, layer=-1, **kw):
        raise ValueError("hidden: a kernel SVM has no hidden layers")

    def backproject(self, *a, **kw):
        raise ValueError("backproject: a kernel SVM cannot be run backwards")


def svm_from_sklearn(est, dtype=None) -> KernelSVM:
    if len(est.classes_) != 2:
        raise ValueError(
            f"from_sklearn: only binary {type(est).__name__} models are supported "
            f"(this one has {len(est.classes_)} classes); fit one-vs-rest binary SVCs instead")
    kernel = est.kernel
    if callable(kernel) or kernel not in _KERNELS:
        raise ValueError(f"from_sklearn: unsupported SVC kernel {kernel!r}")
    gamma = getattr(est, "_gamma", est.gamma)
    return KernelSVM(est.support_vectors_, est.dual_coef_, est.intercept_, kernel=kernel,
                     gamma=gamma, coef0=est.coef0, degree=est.degree, classes=est.classes_,
                     dtype=dtype)
