"""The CUDA backend: fastfool's kernels for CuPy arrays.

You rarely call this module directly: :mod:`fastfool.kernels` (whose public functions check the
arguments, once, for either device) runs :class:`CudaBackend` when its first array argument is
a CuPy array, and ``model.to("cuda")`` moves a model's weights to the GPU so that its methods
and the attacks run there. Everything runs on
CuPy's current stream and device; results are CuPy arrays; no data goes back to the host inside
an attack loop.

The compiled module ``fastfool._cuda`` exists when the package was built with a CUDA compiler
(``-Ccmake.define.FASTFOOL_CUDA=ON|OFF|AUTO``); it links the CUDA runtime statically, so it
imports on machines without a driver. :func:`available` says whether a GPU can be used now, and
:func:`require` raises a clear error naming what is missing (the build, CuPy, a driver, a device).

Kernels: a tiled shared-memory product with fused epilogues (bias + activation, activation
derivative, the L-inf attack step), warp-per-row softmax / cross-entropy, the inverse activation
of back-projection, and the L-inf / L2 update (one block per row).
"""

from __future__ import annotations


from typing import Any

import numpy as np

from ._backend import Backend
from ._checks import Trusted

try:
    from . import _cuda
except ImportError:  # built without CUDA
    _cuda = None

__all__ = ["built", "device_count", "available", "require", "info", "is_device_array", "trusted",
           "CudaBackend"]

_BIAS_ACT, _DERIV_ACT, _LINF_STEP = 0, 1, 2


def built() -> bool:
    """True when this fastfool was built with its CUDA module."""
    return _cuda is not None


def device_count() -> int:
    """Visible CUDA devices (0 without the CUDA module, a driver or a device)."""
    return _cuda.device_count() if _cuda is not None else 0


def _cupy_or_none():
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def available() -> bool:
    """True when the GPU path can run: CUDA module built, CuPy importable, a device visible."""
    return built() and device_count() > 0 and _cupy_or_none() is not None


def info() -> str:
    """One line: build, runtime/driver, devices, CuPy."""
    if not built():
        return "not built (no CUDA compiler when fastfool was installed)"
    cp = _cupy_or_none()
    return f"{_cuda.describe()}; CuPy {'not installed' if cp is None else cp.__version__}"


def require() -> Any:
    """The cupy module, or a RuntimeError / ImportError saying why the GPU cannot be used."""
    if not built():
        raise RuntimeError("CUDA: this fastfool was built without its CUDA module (reinstall "
                           "with a CUDA toolkit on PATH, -Ccmake.define.FASTFOOL_CUDA=ON)")
    cp = _cupy_or_none()
    if cp is None:
        raise ImportError("CUDA: CuPy is not installed (pip install 'fastfool[cuda]')")
    if device_count() == 0:
        raise RuntimeError(f"CUDA: no usable GPU ({_cuda.describe()})")
    return cp


def is_device_array(a: object) -> bool:
    """True for a CuPy array (checked without importing CuPy)."""
    return type(a).__module__.split(".")[0] == "cupy"


def trusted(yi: Any) -> Trusted:
    """Wraps device int64 class indices that were checked once, so that attack loops skip the
    host-side range check (a device-to-host copy) on every step."""
    return Trusted(yi)


# ---- launches (arrays checked by the caller: fastfool.kernels / fastfool._checks) ---------------
def _stream():
    """CuPy's current stream (the object: the binding reads its .ptr)."""
    return require().cuda.get_current_stream()


def _gemm(A, B, C, trans_b, *, mode=_BIAS_ACT, act=0, bias=None, H=None, X=None, X0=None,
          lo=None, hi=None, alpha=0.0, eps=0.0, quantum=0.0):
    _cuda.gemm(A, B, C, trans_b=bool(trans_b), mode=mode, act=act, bias=bias, H=H, X=X, X0=X0,
               lo=lo, hi=hi, alpha=float(alpha), eps=float(eps), quantum=float(quantum),
               device=A.device.id, stream=_stream())
    return C


def _new(shape, like):
    cp = require()
    with cp.cuda.Device(like.device.id):
        return cp.empty(shape, dtype=like.dtype)


def _softmax(S, ep):
    if ep:
        _cuda.row_softmax(S, mode=ep, device=S.device.id, stream=_stream())


def _ce_rows(S, yi, loss, prob):
    _cuda.ce_rows(S, yi, loss=loss, prob=prob, device=S.device.id, stream=_stream())


def _backward_last(delta, W, trans_b, X, G, step):
    """delta @ W (or W.T) into G, or straight into the step's output (L-inf: fused)."""
    if step is None:
        return _gemm(delta, W, G, trans_b)
    if not step["l2"]:
        return _gemm(delta, W, step["out"], trans_b, mode=_LINF_STEP, X=X, X0=step["x0"],
                     lo=step["lo"], hi=step["hi"], alpha=step["alpha"], eps=step["eps"],
                     quantum=step["quantum"])
    g = _gemm(delta, W, _new(X.shape, X), trans_b)
    _update(X, g, step)
    return step["out"]


def _update(X, g, step):
    _cuda.fused_update(X, g, step["x0"], step["out"], l2=step["l2"], alpha=step["alpha"],
                       eps=step["eps"], lo=step["lo"], hi=step["hi"], quantum=step["quantum"],
                       device=X.device.id, stream=_stream())


def _ce_linear(X, W, b, yi, G, loss, prob, step=None):
    """Logits, CE rows, then (P - Y) @ W into G, or with the step fused (L-inf)."""
    S = _new((X.shape[0], W.shape[0]), X)
    _gemm(X, W, S, True, bias=b)
    _ce_rows(S, yi, loss, prob)
    return _backward_last(S, W, False, X, G, step)


def _forward(X, Ws, bs, acts, keep, out=None):
    """Layer outputs (all of them with keep); the last one goes to `out` when given."""
    hs, h = [X], X
    for i, (W, b, a) in enumerate(zip(Ws, bs, acts)):
        dst = out if out is not None and i == len(Ws) - 1 else _new((h.shape[0], W.shape[1]), h)
        h = _gemm(h, W, dst, False, act=a, bias=b)
        if keep:
            hs.append(h)
    return hs if keep else h


def _ce_mlp(X, Ws, bs, acts, yi, G, loss, prob, step=None):
    hs = _forward(X, Ws, bs, acts, keep=True)
    S = hs[-1]
    _ce_rows(S, yi, loss, prob)
    return _backward_last(_to_first_layer(S, Ws, acts, hs, X), Ws[0], True, X, G, step)


def _to_first_layer(delta, Ws, acts, hs, X):
    """The cotangent of the logits back-propagated to the first layer's pre-activation."""
    for layer in range(len(Ws) - 1, 0, -1):  # delta of layer l-1's pre-activation
        delta = _gemm(delta, Ws[layer], _new(hs[layer].shape, X), True, mode=_DERIV_ACT,
                      act=acts[layer - 1], H=hs[layer])
    return delta


def _vjp_mlp(X, Ws, bs, acts, V, G, logits):
    """G = V @ d(logits)/dX by back-propagation from the cotangent V (the logits to `logits`
    when given): _ce_mlp's backward pass started from V instead of P - Y."""
    hs = _forward(X, Ws, bs, acts, keep=True)
    if logits is not None:
        logits[...] = hs[-1]
    return _gemm(_to_first_layer(V, Ws, acts, hs, X), Ws[0], G, True)


def _step(x0, l2, alpha, eps, lo, hi, quantum, out):
    return dict(x0=x0, l2=l2, alpha=alpha, eps=eps, lo=lo, hi=hi, quantum=quantum, out=out)


class CudaBackend(Backend):
    """CuPy arrays on one GPU and the CUDA kernels (``fastfool._cuda``), on CuPy's current
    stream; ``threads`` is ignored. Methods take checked arrays (see fastfool._backend)."""

    name = "cuda"

    def __init__(self, device: int):
        self.device = int(device)

    @property
    def xp(self):
        return require()

    def owns(self, a) -> bool:
        return is_device_array(a)

    def empty(self, shape, dtype):
        cp = require()
        with cp.cuda.Device(self.device):
            return cp.empty(shape, dtype=dtype)

    def asarray(self, a, dtype=None):
        cp = require()
        with cp.cuda.Device(self.device):
            return cp.asarray(a, dtype=dtype)

    def to_host(self, a) -> np.ndarray:
        return require().asnumpy(a)

    def scores(self, X, W, b, ep, S, threads):
        _gemm(X, W, S, True, bias=b)
        _softmax(S, ep)

    def ce_grad_linear(self, X, W, b, yi, G, loss, prob, threads):
        _ce_linear(X, W, b, yi, G, loss, prob)

    def mlp_forward(self, X, Ws, bs, acts, ep, O, threads):
        _softmax(_forward(X, Ws, bs, acts, keep=False, out=O), ep)

    def ce_grad_mlp(self, X, Ws, bs, acts, yi, G, loss, prob, threads):
        _ce_mlp(X, Ws, bs, acts, yi, G, loss, prob)

    def mlp_vjp(self, X, Ws, bs, acts, V, G, logits, threads):
        _vjp_mlp(X, Ws, bs, acts, V, G, logits)

    def backproject(self, H, Ps, bs, acts, margin, base, O, threads) -> int:
        cp = require()
        with cp.cuda.Device(self.device):
            counter = cp.zeros(1, dtype=cp.uint64)
        h = H
        for P, b, a in zip(Ps, bs, acts):
            z = _new(h.shape, h)
            _cuda.inverse_act(h, z, bias=b, act=a, margin=margin, counter=counter,
                              device=self.device, stream=_stream())
            h = _gemm(z, P, _new((h.shape[0], P.shape[1]), h), False)
        if base is not None:
            h += base
        O[...] = h
        return int(counter.get()[0])

    def fused_update(self, x, g, x0, l2, step, eps, lo, hi, quantum, O, threads):
        _update(x, g, _step(x0, l2, step, eps, lo, hi, quantum, O))

    def ce_step_linear(self, X, W, b, yi, x0, l2, step, eps, lo, hi, quantum, O, loss, prob,
                       threads, steps):
        for k in range(steps):  # the later steps in place on the first one's output
            last = k == steps - 1
            _ce_linear(X, W, b, yi, None, loss if last else None, prob if last else None,
                       step=_step(x0, l2, step, eps, lo, hi, quantum, O))
            X = O

    def ce_step_mlp(self, X, Ws, bs, acts, yi, x0, l2, step, eps, lo, hi, quantum, O, loss, prob,
                    threads, steps, final):
        for k in range(steps):
            last = k == steps - 1
            _ce_mlp(X, Ws, bs, acts, yi, None, loss if last else None, prob if last else None,
                    step=_step(x0, l2, step, eps, lo, hi, quantum, O))
            X = O
        if final is not None:
            _softmax(_forward(O, Ws, bs, acts, keep=False, out=final), 1)

    def diff_norms(self, A, B, l2, linf, threads, amax=None):
        _cuda.diff_norms(A, B, l2, linf, device=self.device, stream=_stream())
        if amax is not None:
            self.max_abs_rows(A, amax, threads)

    def argmax_rows(self, P, idx, val, threads):  # CuPy's argmax: numpy.argmax's order
        idx[...] = P.argmax(axis=1)
        val[...] = P[require().arange(P.shape[0]), idx]

    def all_finite(self, X, threads) -> bool:
        return bool(require().isfinite(X).all())
