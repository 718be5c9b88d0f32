"""An emulated GPU for testing fastfool's CUDA host-side logic on machines without one.

``install(monkeypatch)`` replaces ``cupy`` by a NumPy-backed stand-in (arrays are an ndarray
subclass whose ``data.ptr`` is the host address) and ``fastfool._cuda`` by NumPy versions of its
launch functions that read and write through those addresses. What runs is then everything in
``fastfool.cuda``, ``Model.to("cuda")`` and the GPU attack loops (argument checks, layer order,
transposes, epilogue modes, workspaces, label handling) - only the CUDA kernels themselves are
replaced. It says nothing about the kernels; the GPU tests (tests/test_cuda.py) do, on a GPU.
"""

from __future__ import annotations

import ctypes
import sys
import types

import numpy as np


class FakeArray(np.ndarray):
    """A host array posing as a CuPy array on device 0."""

    @property
    def device(self):
        return types.SimpleNamespace(id=0)

    @property
    def data(self):  # noqa: D401 - CuPy's MemoryPointer stand-in
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])

    def get(self):
        TRANSFERS["to_host"] += 1
        return np.array(self)


FakeArray.__module__ = "cupy._fake"

#: host <-> device copies made through the emulated CuPy (attack loops must make none per step)
TRANSFERS = {"to_host": 0, "to_device": 0}


def _to_device(a, dtype=None):
    if not isinstance(a, FakeArray):
        TRANSFERS["to_device"] += 1
    return np.ascontiguousarray(a, dtype=dtype)


def _to_host(a):
    TRANSFERS["to_host"] += 1
    return np.array(a)


def _wrap(a):
    if isinstance(a, np.ndarray):
        return np.asarray(a).view(FakeArray)
    return a


def _fn(f):
    return lambda *a, **k: _wrap(f(*[np.asarray(x) if isinstance(x, FakeArray) else x for x in a], **k))


def _make_cupy():
    cp = types.ModuleType("cupy")
    cp.__version__ = "fake"
    for name in ("ascontiguousarray", "empty", "zeros", "ones", "empty_like",
                 "zeros_like", "where", "clip", "abs", "sqrt", "isfinite", "arange", "maximum",
                 "minimum"):
        setattr(cp, name, _fn(getattr(np, name)))
    # host -> device copies are dense, as CuPy's are
    cp.asarray = lambda a, dtype=None: _wrap(_to_device(a, dtype))
    cp.int64, cp.uint64, cp.inf, cp.float32, cp.float64 = np.int64, np.uint64, np.inf, np.float32, np.float64
    cp.asnumpy = _to_host
    cp.ndarray = FakeArray

    class Device:
        def __init__(self, i=0):
            self.id = i

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class _Rng:
        def __init__(self, seed):
            self.r = np.random.default_rng(seed)

        def __getattr__(self, name):
            return _fn(getattr(self.r, name))

    cp.cuda = types.SimpleNamespace(Device=Device,
                                    get_current_stream=lambda: types.SimpleNamespace(ptr=0))
    cp.random = types.SimpleNamespace(default_rng=_Rng)
    cp.linalg = types.SimpleNamespace(norm=_fn(np.linalg.norm))
    return cp


def _view(ptr, shape, f64):
    dt = np.float64 if f64 else np.float32
    n = int(np.prod(shape))
    if ptr == 0:
        return None
    if n == 0:
        return np.zeros(shape, dt)
    buf = (ctypes.c_char * (n * np.dtype(dt).itemsize)).from_address(ptr)
    return np.frombuffer(buf, dtype=dt).reshape(shape)


def _act(a, v):
    return [v, np.maximum(v, 0), np.tanh(v), 1 / (1 + np.exp(-v))][a]


def _make_cuda_module():
    from fastfool import kernels as K
    m = types.ModuleType("fastfool._cuda")
    m.calls = []
    m.device_count = lambda: 1
    m.describe = lambda: "emulated device (tests/fake_gpu.py)"

    def gemm(f64, A, B, C, M, N, K_, trans_b, mode, act, bias, H, X, X0, lo, hi, alpha, eps, q,
             device, stream):
        m.calls.append(("gemm", mode, bool(trans_b)))
        a = _view(A, (M, K_), f64)
        b = _view(B, (N, K_) if trans_b else (K_, N), f64)
        c = _view(C, (M, N), f64)
        v = a.astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
        if mode == 0:
            if bias:
                v = v + _view(bias, (N,), f64)
            c[...] = _act(act, v)
        elif mode == 1:
            h = _view(H, (M, N), f64).astype(np.float64)
            d = [np.ones_like(h), (h > 0) * 1.0, (1 - h) * (1 + h), h * (1 - h)][act]
            c[...] = v * d
        else:
            lo_, hi_ = _view(lo, (N,), f64), _view(hi, (N,), f64)
            clip = None if lo_ is None and hi_ is None else (lo_, hi_)
            x = _view(X, (M, N), f64).copy()
            c[...] = K.fused_update(x, v.astype(c.dtype), _view(X0, (M, N), f64), step=alpha,
                                    eps=eps, clip=clip, quantum=q)

    def row_softmax(f64, S, N, C, mode, device, stream):
        m.calls.append(("softmax", mode))
        s = _view(S, (N, C), f64)
        z = s.astype(np.float64)
        lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) + z.max(1, keepdims=True)
        s[...] = np.exp(z - lse) if mode == 1 else z - lse

    def ce_rows(f64, S, N, C, y, loss, prob, device, stream):
        m.calls.append(("ce",))
        s = _view(S, (N, C), f64)
        yy = np.frombuffer((ctypes.c_char * (8 * N)).from_address(y), np.int64) if N else np.zeros(0, np.int64)
        z = s.astype(np.float64)
        mx = z.max(1, keepdims=True)
        lse = np.log(np.exp(z - mx).sum(1, keepdims=True)) + mx
        P = np.exp(z - lse)
        if loss:
            _view(loss, (N,), f64)[...] = lse[:, 0] - z[np.arange(N), yy]
        if prob:
            _view(prob, (N, C), f64)[...] = P
        P[np.arange(N), yy] -= 1
        s[...] = P

    def inverse_act(f64, H, Z, bias, N, K_, act, margin, counter, device, stream):
        m.calls.append(("inverse", act))
        h = _view(H, (N, K_), f64).astype(np.float64)
        lo, hi = {0: (-np.inf, np.inf), 2: (-1 + margin, 1 - margin), 3: (margin, 1 - margin)}[act]
        n = int(((h < lo) | (h > hi)).sum())
        h = np.clip(h, lo, hi)
        v = h if act == 0 else np.arctanh(h) if act == 2 else np.log(h) - np.log1p(-h)
        if bias:
            v = v - _view(bias, (K_,), f64)
        _view(Z, (N, K_), f64)[...] = v
        cnt = np.frombuffer((ctypes.c_char * 8).from_address(counter), np.uint64)
        cnt[0] += n

    def fused_update(f64, X, G, X0, out, N, D, l2, alpha, eps, lo, hi, q, device, stream):
        m.calls.append(("update", bool(l2)))
        lo_, hi_ = _view(lo, (D,), f64), _view(hi, (D,), f64)
        clip = None if lo_ is None and hi_ is None else (lo_, hi_)
        x = _view(X, (N, D), f64).copy()
        _view(out, (N, D), f64)[...] = K.fused_update(
            x, _view(G, (N, D), f64).copy(), _view(X0, (N, D), f64).copy(), step=alpha, eps=eps,
            norm=2 if l2 else "inf", clip=clip, quantum=q)

    def diff_norms(f64, A, B, N, D, l2, linf, device, stream):
        m.calls.append(("diff_norms",))
        a, b = _view(A, (N, D), f64).copy(), _view(B, (N, D), f64).copy()
        r2, ri = K.diff_norms(a, b)
        _view(l2, (N,), f64)[...] = r2
        _view(linf, (N,), f64)[...] = ri

    for f in (gemm, row_softmax, ce_rows, inverse_act, fused_update, diff_norms):
        setattr(m, f.__name__, f)
    return m


def install(monkeypatch):
    """Emulated cupy + fastfool._cuda for the duration of a test; returns (cupy, _cuda)."""
    import fastfool.cuda as fc
    cp = _make_cupy()
    fake = _make_cuda_module()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setattr(fc, "_cuda", fake)
    return cp, fake
