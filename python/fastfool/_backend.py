"""One array backend for NumPy (the C++ kernels) and CuPy (the CUDA kernels).

Everything above this module - the argument checks (``_checks``), the raw kernels
(``kernels``), the models and the attacks - is written once against :class:`Backend`;
``fastfool.kernels.backend_of`` picks the implementation from where the arrays live (the CPU
one here, the CUDA one in ``fastfool.cuda``). Array code uses ``be.xp``, the NumPy or the CuPy
module, through the subset of functions the two share (the Array API standard's names plus
``ascontiguousarray``), so one function serves both. The kernel methods take arrays that the
public functions have already checked (dtype, shapes, layout, labels in range): they are the
trusted internal entry points, and check nothing again.

(array-api-compat's namespaces are not used: CuPy's own module already is the NumPy-compatible
namespace for CuPy arrays, and the compat layer would add a dependency without covering the
kernels, which are the part that differs.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from . import _core


class Backend(ABC):
    """Where arrays live and how the kernels run there. Subclasses: :class:`CPUBackend`,
    ``fastfool.cuda.CudaBackend``."""

    #: "cpu" or "cuda"
    name = "cpu"
    #: the GPU's index, None on the CPU
    device: int | None = None

    @property
    @abstractmethod
    def xp(self):
        """The array module (numpy or cupy)."""

    @abstractmethod
    def owns(self, a) -> bool:
        """True when ``a`` is an array of this backend."""

    @abstractmethod
    def empty(self, shape, dtype):
        """A new uninitialised output array on this backend."""

    @abstractmethod
    def asarray(self, a, dtype=None):
        """A host array's copy on this backend (on the CPU: the array itself when it can be)."""

    def to_host(self, a) -> np.ndarray:
        return np.asarray(a)

    # Row reductions of the verdicts, in array code for any backend (the CPU overrides them
    # with its kernels); the reference semantics of fastfool.kernels' functions of that name.
    def max_abs_rows(self, X, out, threads):
        out[...] = self.xp.abs(X).max(axis=1) if X.shape[1] else 0

    def dlr_rows(self, S, y, t, loss, V, threads):
        xp = self.xp
        L = S.astype(np.float64)
        n, C = L.shape
        r = xp.arange(n)
        order = xp.argsort(-L, axis=1, kind="stable")
        i1, i3, i4 = order[:, 0], order[:, min(2, C - 1)], order[:, min(3, C - 1)]
        z1, z3, z4 = L[r, i1], L[r, i3], L[r, i4]
        if t is None:
            u = xp.where(i1 == y, order[:, min(1, C - 1)], i1)
            den = z1 - z3 + 1e-12
            w3, w4 = 1.0, 0.0
        else:
            u = t
            den = z1 - 0.5 * (z3 + z4) + 1e-12
            w3, w4 = 0.5, 0.5
        num = L[r, y] - L[r, u]
        G = xp.zeros_like(L)
        G[r, y] -= 1.0 / den  # one entry per row in each update: no duplicate indices
        G[r, u] += 1.0 / den
        G[r, i1] += num / den ** 2
        G[r, i3] += -w3 * num / den ** 2
        if w4:
            G[r, i4] += -w4 * num / den ** 2
        loss[...] = -num / den
        V[...] = G

    def top2_rows(self, S, dup, idx, top, second, threads):
        xp = self.xp
        N = S.shape[0]
        idx[...] = xp.argmax(S, axis=1) if N else 0
        r = xp.arange(N)
        top[...] = S[r, idx]
        other = S.astype(np.float64, copy=True)
        if dup is not None:
            other[dup[None, :] == dup[idx][:, None]] = -np.inf
        other[r, idx] = -np.inf
        second[...] = other.max(axis=1) if N else 0

    def softmax_at(self, S, idx, out, threads):
        xp = self.xp
        S = S.astype(np.float64)
        m = S.max(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", over="ignore"):
            e = xp.exp(S - m)
            p = e[xp.arange(S.shape[0]), idx] / e.sum(axis=1)
        out[...] = xp.where(xp.isfinite(m[:, 0]), p, np.nan)

    def refuse(self, what: str):
        """The one message for an operation this backend does not have yet."""
        raise NotImplementedError(
            f"{what}: not available for {self.name} arrays yet; move the model and the data to "
            f"the CPU (model.to('cpu'), numpy arrays)")

    def __repr__(self):
        return f"<fastfool backend {self.name}{'' if self.device is None else f':{self.device}'}>"


class CPUBackend(Backend):
    """NumPy arrays and the C++ kernels (``fastfool._core``), GIL released, ``threads`` threads."""

    name = "cpu"

    @property
    def xp(self):
        return np

    def owns(self, a) -> bool:
        return isinstance(a, np.ndarray)

    def empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def asarray(self, a, dtype=None):
        return np.asarray(a, dtype)

    # ---- kernels on checked arrays (see fastfool.kernels for the contracts) ----
    def scores(self, X, W, b, ep, S, threads):
        _core.scores(X, W, b, ep, S, threads)

    def ce_grad_linear(self, X, W, b, yi, G, loss, prob, threads):
        _core.ce_grad_linear(X, W, b, yi, G, loss, prob, threads)

    def mlp_forward(self, X, Ws, bs, acts, ep, O, threads):
        _core.mlp_forward(X, Ws, bs, acts, ep, O, threads)

    def ce_grad_mlp(self, X, Ws, bs, acts, yi, G, loss, prob, threads):
        _core.ce_grad_mlp(X, Ws, bs, acts, yi, G, loss, prob, threads)

    def mlp_vjp(self, X, Ws, bs, acts, V, G, logits, threads):
        _core.mlp_vjp(X, Ws, bs, acts, V, G, logits, threads)

    def backproject(self, H, Ps, bs, acts, margin, base, O, threads) -> int:
        return int(_core.backproject(H, Ps, bs, acts, margin, base, O, threads))

    def fused_update(self, x, g, x0, l2, step, eps, lo, hi, quantum, O, threads):
        _core.fused_update(x, g, x0, l2, step, eps, lo, hi, quantum, O, threads)

    def ce_step_linear(self, X, W, b, yi, x0, l2, step, eps, lo, hi, quantum, O, loss, prob,
                       threads, steps):
        _core.ce_step_linear(X, W, b, yi, x0, l2, step, eps, lo, hi, quantum, O, loss, prob,
                             threads, steps)

    def ce_step_mlp(self, X, Ws, bs, acts, yi, x0, l2, step, eps, lo, hi, quantum, O, loss, prob,
                    threads, steps, final):
        _core.ce_step_mlp(X, Ws, bs, acts, yi, x0, l2, step, eps, lo, hi, quantum, O, loss, prob,
                          threads, steps, final)

    def diff_norms(self, A, B, l2, linf, threads, amax=None):
        _core.diff_norms(A, B, l2, linf, threads, amax)

    def dlr_rows(self, S, y, t, loss, V, threads):
        _core.dlr_rows(S, y, t, loss, V, threads)

    def argmax_rows(self, P, idx, val, threads):
        _core.argmax_rows(P, idx, val, threads)

    def max_abs_rows(self, X, out, threads):
        _core.max_abs_rows(X, out, threads)

    def top2_rows(self, S, dup, idx, top, second, threads):
        _core.top2_rows(S, dup, idx, top, second, threads)

    def softmax_at(self, S, idx, out, threads):
        _core.softmax_at(S, idx, out, threads)

    def all_finite(self, X, threads) -> bool:
        return bool(_core.all_finite(X, threads))


CPU = CPUBackend()
