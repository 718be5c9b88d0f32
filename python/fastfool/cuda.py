"""The CUDA backend: fastfool's kernels for CuPy arrays.

You rarely call this module directly: :mod:`fastfool.kernels` dispatches here when its first
array argument is a CuPy array, and ``model.to("cuda")`` moves a model's weights to the GPU so
that its methods and :func:`fastfool.fgsm` / :func:`fastfool.pgd` run there. Everything runs on
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

from typing import Sequence

import numpy as np

from ._checks import act_codes, epilogue_code, norm_is_l2, step_scalars, with_biases

try:
    from . import _cuda
except ImportError:  # built without CUDA
    _cuda = None

__all__ = ["built", "device_count", "available", "require", "info", "is_device_array",
           "scores", "ce_grad_linear", "mlp_forward", "ce_grad_mlp", "backproject",
           "fused_update", "ce_step_linear", "ce_step_mlp", "diff_norms", "all_finite"]

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


def require():
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


def is_device_array(a) -> bool:
    """True for a CuPy array (checked without importing CuPy)."""
    return type(a).__module__.split(".")[0] == "cupy"


# ---- argument checks -----------------------------------------------------------------------
def _float(a, name, dtype=None, device=None):
    cp = require()
    if not is_device_array(a):
        raise TypeError(f"{name}: expected a CuPy array like the other inputs, got "
                        f"{type(a).__name__} (mixing NumPy and CuPy inputs is not supported; "
                        f"move them all to one device, e.g. model.to('cuda') / cupy.asarray)")
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: expected float32 or float64 values, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name}: dtype {a.dtype} does not match {np.dtype(dtype)}")
    if device is not None and a.device.id != device:
        raise ValueError(f"{name}: lives on GPU {a.device.id}, the other inputs on GPU {device}")
    return cp.ascontiguousarray(a)


def _matrix(a, name, dtype=None, device=None, cols=None):
    a = _float(a, name, dtype, device)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {a.shape}")
    if cols is not None and a.shape[1] != cols:
        raise ValueError(f"{name}: expected {cols} columns, got shape {a.shape}")
    return a


def _vector(a, name, n, dtype, device):
    if a is None:
        return None
    a = _float(a, name, dtype, device)
    if a.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {a.shape}")
    return a


class _Trusted:
    """Device class indices an attack has already checked (see :func:`trusted`)."""

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array


def trusted(yi):
    """Wraps device int64 class indices that were checked once, so that attack loops skip the
    host-side range check (a device-to-host copy) on every step."""
    return _Trusted(yi)


def _labels(y, n, C, device):
    """Class indices 0..C-1 as a device int64 vector (range checked once, on the host)."""
    if isinstance(y, _Trusted):
        return y.array
    cp = require()
    yh = y.get() if is_device_array(y) else np.asarray(y)
    if yh.ndim != 1 or yh.shape[0] != n:
        raise ValueError(f"y: expected {n} class indices, got shape {yh.shape}")
    if yh.dtype.kind not in "iu":
        raise TypeError(f"y: expected integer class indices, got {yh.dtype}")
    if n and (yh.min() < 0 or yh.max() >= C):
        raise ValueError(f"y: class indices must lie in [0, {C}), got range [{yh.min()}, {yh.max()}]")
    with cp.cuda.Device(device):
        return cp.asarray(yh, dtype=cp.int64)


def _out(out, name, shape, dtype, device):
    cp = require()
    if out is None:
        with cp.cuda.Device(device):
            return cp.empty(shape, dtype=dtype)
    if not is_device_array(out) or out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"{name}: expected a CuPy array of shape {tuple(shape)} and dtype "
                         f"{np.dtype(dtype)}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous")
    if out.device.id != device:
        raise ValueError(f"{name}: lives on GPU {out.device.id}, the inputs on GPU {device}")
    return out


def _layers(X, weights, biases, activations):
    weights, biases = with_biases(weights, biases, "weights")
    dev, width, Ws, bs = X.device.id, X.shape[1], [], []
    for i, (w, b) in enumerate(zip(weights, biases)):
        w = _matrix(w, f"weights[{i}]", X.dtype, dev)
        if w.shape[0] != width:
            raise ValueError(f"weights[{i}]: expected {width} input rows, got shape {w.shape}")
        Ws.append(w)
        bs.append(_vector(b, f"biases[{i}]", w.shape[1], X.dtype, dev))
        width = w.shape[1]
    return Ws, bs, act_codes(activations, len(Ws))


def _bounds(clip, D, dtype, device):
    """Per-feature device vectors (lo, hi) from clip=(lo, hi) (scalars or length-D arrays)."""
    if clip is None:
        return None, None
    cp = require()
    if isinstance(clip, tuple) and len(clip) == 2 and all(
            v is None or (is_device_array(v) and v.shape == (D,) and v.dtype == dtype
                          and v.device.id == device and v.flags.c_contiguous) for v in clip):
        return clip  # device bounds already made (attack loops: no host round-trip per step)
    from ._checks import clip_bounds
    host = tuple(None if v is None else (v.get() if is_device_array(v) else v) for v in clip) \
        if isinstance(clip, (tuple, list)) else clip
    lo, hi = clip_bounds(host, D, dtype)
    with cp.cuda.Device(device):
        return (None if lo is None else cp.asarray(np.broadcast_to(lo, (D,)), dtype=dtype),
                None if hi is None else cp.asarray(np.broadcast_to(hi, (D,)), dtype=dtype))


# ---- launches ----------------------------------------------------------------------------------
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


# ---- public kernels (same contracts as fastfool.kernels) --------------------------------------
def scores(X, W, b=None, *, epilogue=None, out=None, threads=None):
    """``X @ W.T + b`` (+ softmax / log-softmax) on the GPU; see :func:`fastfool.kernels.scores`."""
    X = _matrix(X, "X")
    W = _matrix(W, "W", X.dtype, X.device.id, cols=X.shape[1])
    b = _vector(b, "b", W.shape[0], X.dtype, X.device.id)
    ep = epilogue_code(epilogue)
    S = _out(out, "out", (X.shape[0], W.shape[0]), X.dtype, X.device.id)
    _gemm(X, W, S, True, bias=b)
    if ep:
        _cuda.row_softmax(S, mode=ep, device=X.device.id, stream=_stream())
    return S


def _ce_linear(X, W, b, yi, return_prob, G=None, step=None):
    """Unchecked: logits, CE rows, then (P - Y) @ W with the L-inf step fused when given."""
    N, C = X.shape[0], W.shape[0]
    S = _new((N, C), X)
    _gemm(X, W, S, True, bias=b)
    loss = _new((N,), X)
    prob = _new((N, C), X) if return_prob else None
    _cuda.ce_rows(S, yi, loss=loss, prob=prob, device=X.device.id, stream=_stream())
    return _backward_last(S, W, False, X, G, step), loss, prob


def _backward_last(delta, W, trans_b, X, G, step):
    """delta @ W (or W.T) into G, or straight into the step's output (L-inf: fused)."""
    if step is None:
        return _gemm(delta, W, G if G is not None else _new(X.shape, X), trans_b)
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


def ce_grad_linear(X, W, b, y, *, out=None, return_prob=False, threads=None):
    """Softmax cross-entropy input gradient of a linear model; see
    :func:`fastfool.kernels.ce_grad_linear`."""
    X = _matrix(X, "X")
    W = _matrix(W, "W", X.dtype, X.device.id, cols=X.shape[1])
    b = _vector(b, "b", W.shape[0], X.dtype, X.device.id)
    yi = _labels(y, X.shape[0], W.shape[0], X.device.id)
    G = _out(out, "out", X.shape, X.dtype, X.device.id)
    G, loss, prob = _ce_linear(X, W, b, yi, return_prob, G=G)
    return (G, loss, prob) if return_prob else (G, loss)


def _forward(X, Ws, bs, acts, keep, out=None):
    """Layer outputs (all of them with keep); the last one goes to `out` when given."""
    hs, h = [X], X
    for i, (W, b, a) in enumerate(zip(Ws, bs, acts)):
        dst = out if out is not None and i == len(Ws) - 1 else _new((h.shape[0], W.shape[1]), h)
        h = _gemm(h, W, dst, False, act=a, bias=b)
        if keep:
            hs.append(h)
    return hs if keep else h


def mlp_forward(X, weights, biases, activations, *, epilogue=None, out=None, threads=None):
    """Forward pass of a dense stack on the GPU; see :func:`fastfool.kernels.mlp_forward`."""
    X = _matrix(X, "X")
    Ws, bs, acts = _layers(X, weights, biases, activations)
    ep = epilogue_code(epilogue)
    if out is not None:
        out = _out(out, "out", (X.shape[0], Ws[-1].shape[1]), X.dtype, X.device.id)
    O = _forward(X, Ws, bs, acts, keep=False, out=out)
    if ep:
        _cuda.row_softmax(O, mode=ep, device=X.device.id, stream=_stream())
    return O


def _ce_mlp(X, Ws, bs, acts, yi, return_prob, G=None, step=None):
    hs = _forward(X, Ws, bs, acts, keep=True)
    S = hs[-1]
    N, C = S.shape
    loss = _new((N,), X)
    prob = _new((N, C), X) if return_prob else None
    _cuda.ce_rows(S, yi, loss=loss, prob=prob, device=X.device.id, stream=_stream())
    delta = S
    for layer in range(len(Ws) - 1, 0, -1):  # delta of layer l-1's pre-activation
        delta = _gemm(delta, Ws[layer], _new(hs[layer].shape, X), True, mode=_DERIV_ACT,
                      act=acts[layer - 1], H=hs[layer])
    return _backward_last(delta, Ws[0], True, X, G, step), loss, prob


def _identity_last(acts):
    if acts[-1] != 0:
        raise ValueError("activations: the last layer must be 'identity' (it produces the logits)")


def ce_grad_mlp(X, weights, biases, activations, y, *, out=None, return_prob=False, threads=None):
    """Softmax cross-entropy input gradient of a dense stack; see
    :func:`fastfool.kernels.ce_grad_mlp`."""
    X = _matrix(X, "X")
    Ws, bs, acts = _layers(X, weights, biases, activations)
    _identity_last(acts)
    yi = _labels(y, X.shape[0], Ws[-1].shape[1], X.device.id)
    G = _out(out, "out", X.shape, X.dtype, X.device.id)
    G, loss, prob = _ce_mlp(X, Ws, bs, acts, yi, return_prob, G=G)
    return (G, loss, prob) if return_prob else (G, loss)


def _step_spec(X, x0, step, eps, norm, clip, quantum, out):
    x0 = _matrix(x0, "x0", X.dtype, X.device.id)
    if x0.shape != X.shape:
        raise ValueError(f"x0: expected shape {X.shape}, got {x0.shape}")
    step, eps, quantum = step_scalars(step, eps, quantum)
    lo, hi = _bounds(clip, X.shape[1], X.dtype, X.device.id)
    o = _out(out, "out", X.shape, X.dtype, X.device.id)
    return dict(x0=x0, l2=norm_is_l2(norm), alpha=step, eps=eps, lo=lo, hi=hi, quantum=quantum, out=o)


def fused_update(x, grad, x0, *, step, eps=np.inf, norm="inf", clip=None, quantum=0.0, out=None,
                 threads=None):
    """One fused attack step on the GPU; see :func:`fastfool.kernels.fused_update`."""
    x = _matrix(x, "x")
    grad = _matrix(grad, "grad", x.dtype, x.device.id)
    if grad.shape != x.shape:
        raise ValueError(f"grad: expected shape {x.shape}, got {grad.shape}")
    spec = _step_spec(x, x0, step, eps, norm, clip, quantum, out)
    _update(x, grad, spec)
    return spec["out"]


def ce_step_linear(X, W, b, y, x0, *, step, eps=np.inf, norm="inf", clip=None, quantum=0.0,
                   out=None, return_loss=False, return_prob=False, threads=None):
    """Gradient and update in one go (L-inf: the update is the product's epilogue); see
    :func:`fastfool.kernels.ce_step_linear`."""
    X = _matrix(X, "X")
    W = _matrix(W, "W", X.dtype, X.device.id, cols=X.shape[1])
    b = _vector(b, "b", W.shape[0], X.dtype, X.device.id)
    yi = _labels(y, X.shape[0], W.shape[0], X.device.id)
    spec = _step_spec(X, x0, step, eps, norm, clip, quantum, out)
    O, loss, prob = _ce_linear(X, W, b, yi, return_prob, step=spec)
    return _result(O, loss if return_loss else None, prob)


def ce_step_mlp(X, weights, biases, activations, y, x0, *, step, eps=np.inf, norm="inf",
                clip=None, quantum=0.0, out=None, return_loss=False, return_prob=False,
                threads=None):
    """See :func:`fastfool.kernels.ce_step_mlp`."""
    X = _matrix(X, "X")
    Ws, bs, acts = _layers(X, weights, biases, activations)
    _identity_last(acts)
    yi = _labels(y, X.shape[0], Ws[-1].shape[1], X.device.id)
    spec = _step_spec(X, x0, step, eps, norm, clip, quantum, out)
    O, loss, prob = _ce_mlp(X, Ws, bs, acts, yi, return_prob, step=spec)
    return _result(O, loss if return_loss else None, prob)


def _result(O, loss, prob):
    extra = tuple(a for a in (loss, prob) if a is not None)
    return (O,) + extra if extra else O


def backproject(H, pinvs: Sequence, biases, activations, *, margin=1e-6, base=None, out=None,
                threads=None, return_clamped=False):
    """Pseudo-inverse back-projection on the GPU; see :func:`fastfool.kernels.backproject`."""
    cp = require()
    H = _matrix(H, "H")
    dev = H.device.id
    pinvs, biases = with_biases(pinvs, biases, "pinvs")
    acts = act_codes(activations, len(pinvs))
    if 1 in acts:
        raise ValueError(f"activations[{acts.index(1)}]: relu is not invertible (it maps all "
                         "negatives to 0)")
    margin = float(margin)
    if not 0.0 < margin < 0.5:
        raise ValueError(f"margin: must be in (0, 0.5), got {margin}")
    with cp.cuda.Device(dev):
        counter = cp.zeros(1, dtype=cp.uint64)
    h = H
    for i, (P, b, a) in enumerate(zip(pinvs, biases, acts)):
        P = _matrix(P, f"pinvs[{i}]", H.dtype, dev)
        if P.shape[0] != h.shape[1]:
            raise ValueError(f"pinvs[{i}]: expected {h.shape[1]} rows, got shape {P.shape}")
        b = _vector(b, f"biases[{i}]", h.shape[1], H.dtype, dev)
        z = _new(h.shape, h)
        _cuda.inverse_act(h, z, bias=b, act=a, margin=margin, counter=counter, device=dev,
                          stream=_stream())
        h = _gemm(z, P, _new((h.shape[0], P.shape[1]), h), False)
    if base is not None:
        base = _matrix(base, "base", H.dtype, dev)
        if base.shape != h.shape:
            raise ValueError(f"base: expected shape {h.shape}, got {base.shape}")
        h += base
    if out is not None:
        o = _out(out, "out", h.shape, H.dtype, dev)
        o[...] = h
        h = o
    return (h, int(counter.get()[0])) if return_clamped else h


def diff_norms(A, B, *, threads=None):
    """Per-row L2 and L-inf norms of ``A - B``: one CUDA kernel, a warp per row, with the CPU's
    semantics (float rows summed in double, double rows scaled when huge or tiny, NaN rows NaN).
    """
    cp = require()
    A = _matrix(A, "A")
    B = _matrix(B, "B", A.dtype, A.device.id)
    if B.shape != A.shape:
        raise ValueError(f"B: expected shape {A.shape}, got {B.shape}")
    N, D = A.shape
    l2, linf = cp.empty(N, A.dtype), cp.empty(N, A.dtype)
    _cuda.diff_norms(A, B, l2, linf, device=A.device.id, stream=_stream())
    return l2, linf


def all_finite(X, *, threads=None) -> bool:
    """True when the CuPy array holds no NaN or infinity (one reduction, one host sync)."""
    cp = require()
    return bool(cp.isfinite(_float(X, "X")).all())
