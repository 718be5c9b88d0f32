"""An emulated GPU for testing fastfool's CUDA host-side logic on machines without one.

``install(monkeypatch)`` replaces ``cupy`` by a NumPy-backed stand-in (arrays are an ndarray
subclass whose ``data.ptr`` is the host address) and ``fastfool._cuda`` by NumPy versions of its
launch functions that read and write through those addresses. What runs is then everything in
``fastfool.cuda``, ``Model.to("cuda")`` and the GPU attack loops (argument checks, layer order,
transposes, epilogue modes, workspaces, label handling) - only the CUDA kernels themselves are
replaced. It says nothing about the kernels; the GPU tests (tests/test_cuda.py) do, on a GPU.

Two of real CuPy's refusals are emulated, so that host/device mix-ups fail here and not first on
a GPU: arithmetic (ufuncs) between a device array and a host array (not a scalar) raises
TypeError, and fastfool's modules see a numpy whose ``asarray`` / ``array`` of a device array
raises (``_strict_numpy``). Indexing a device array with host indices is not refused.
"""

from __future__ import annotations

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

    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        """Arithmetic as CuPy's: a host array (not a scalar) among the operands raises."""
        for v in inputs:
            if isinstance(v, np.ndarray) and not isinstance(v, FakeArray) and v.ndim:
                raise TypeError(f"Unsupported type {type(v)} (emulated CuPy: {ufunc.__name__} "
                                "of a device and a host array)")
        base = [v.view(np.ndarray) if isinstance(v, FakeArray) else v for v in inputs]
        if "out" in kw:
            kw["out"] = tuple(o.view(np.ndarray) if isinstance(o, FakeArray) else o
                              for o in kw["out"])
        out = getattr(ufunc, method)(*base, **kw)
        if isinstance(out, tuple):
            return tuple(_wrap(o) for o in out)
        return _wrap(out) if isinstance(out, np.ndarray) else out

    @property
    def __cuda_array_interface__(self):  # what the real fastfool._cuda reads (host memory here)
        ai = self.__array_interface__
        return {"shape": self.shape, "typestr": ai["typestr"], "data": ai["data"],
                "strides": ai["strides"], "version": 3}


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


def _base(x):
    return x.view(np.ndarray) if isinstance(x, FakeArray) else x


def _fn(f):
    """An emulated CuPy function: f on the arrays' host memory (``out=`` included)."""
    return lambda *a, **k: _wrap(f(*[_base(x) for x in a], **{n: _base(v) for n, v in k.items()}))


def _make_cupy():
    cp = types.ModuleType("cupy")
    cp.__version__ = "fake"
    for name in ("ascontiguousarray", "empty", "zeros", "ones", "empty_like",
                 "zeros_like", "where", "clip", "abs", "sqrt", "isfinite", "arange", "maximum",
                 "minimum", "log", "cos", "array", "full", "sign", "einsum", "argmax", "argsort",
                 "broadcast_to", "count_nonzero", "tanh", "arctanh", "isinf", "exp", "sort", "cumsum", "floor", "stack", "tile", "eye",
                 "repeat", "argmin", "take_along_axis", "any", "all", "diff", "concatenate", "ones_like",
                 "ceil"):
        setattr(cp, name, _fn(getattr(np, name)))
    # CuPy's sorts are stable (and take no other kind)
    cp.argsort = lambda a, axis=-1, kind=None: _wrap(np.argsort(np.asarray(a), axis=axis,
                                                                kind="stable"))
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

        def synchronize(self):
            pass

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


def _arr(a):
    """The emulated device array as a plain ndarray view (None stays None)."""
    return None if a is None else np.asarray(a)


def _stream_ok(stream):
    assert hasattr(stream, "ptr") and not isinstance(stream, int), "stream: expected a stream object"


def _act(a, v):
    return [lambda: v, lambda: np.maximum(v, 0), lambda: np.tanh(v),
            lambda: 1 / (1 + np.exp(-v))][a]()  # only the one asked for (exp overflows)


def _make_cuda_module():
    from fastfool import kernels as K
    m = types.ModuleType("fastfool._cuda")
    m.calls = []
    m.device_count = lambda: 1
    m.describe = lambda: "emulated device (tests/fake_gpu.py)"

    def gemm(A, B, C, *, trans_b, mode=0, act=0, bias=None, H=None, X=None, X0=None, lo=None,
             hi=None, alpha=0.0, eps=0.0, quantum=0.0, device, stream):
        _stream_ok(stream)
        m.calls.append(("gemm", mode, bool(trans_b)))
        a, b, c = _arr(A), _arr(B), _arr(C)
        v = a.astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
        assert c.shape == v.shape, (c.shape, v.shape)
        if mode == 0:
            if bias is not None:
                v = v + _arr(bias)
            c[...] = _act(act, v)
        elif mode == 1:
            h = _arr(H).astype(np.float64)
            d = [np.ones_like(h), (h > 0) * 1.0, (1 - h) * (1 + h), h * (1 - h)][act]
            c[...] = v * d
        else:
            lo_, hi_ = _arr(lo), _arr(hi)
            clip = None if lo_ is None and hi_ is None else (lo_, hi_)
            x = _arr(X).copy()
            c[...] = K.fused_update(x, v.astype(c.dtype), _arr(X0), step=alpha, eps=eps, clip=clip,
                                    quantum=quantum)

    def row_softmax(S, *, mode, device, stream):
        _stream_ok(stream)
        m.calls.append(("softmax", mode))
        s = _arr(S)
        z = s.astype(np.float64)
        lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) + z.max(1, keepdims=True)
        s[...] = np.exp(z - lse) if mode == 1 else z - lse

    def ce_rows(S, y, *, loss=None, prob=None, device, stream):
        _stream_ok(stream)
        m.calls.append(("ce",))
        s, yy = _arr(S), _arr(y)
        assert yy.dtype == np.int64
        N = s.shape[0]
        z = s.astype(np.float64)
        mx = z.max(1, keepdims=True) if N else z
        lse = np.log(np.exp(z - mx).sum(1, keepdims=True)) + mx
        P = np.exp(z - lse)
        if loss is not None:
            _arr(loss)[...] = lse[:, 0] - z[np.arange(N), yy]
        if prob is not None:
            _arr(prob)[...] = P
        P[np.arange(N), yy] -= 1
        s[...] = P

    def inverse_act(H, Z, *, bias=None, act, margin, counter, device, stream):
        _stream_ok(stream)
        m.calls.append(("inverse", act))
        h = _arr(H).astype(np.float64)
        lo, hi = {0: (-np.inf, np.inf), 2: (-1 + margin, 1 - margin), 3: (margin, 1 - margin)}[act]
        n = int(((h < lo) | (h > hi)).sum())
        h = np.clip(h, lo, hi)
        v = h if act == 0 else np.arctanh(h) if act == 2 else np.log(h) - np.log1p(-h)
        if bias is not None:
            v = v - _arr(bias)
        _arr(Z)[...] = v
        _arr(counter)[0] += n

    def fused_update(X, G, X0, out, *, l2, alpha, eps, lo=None, hi=None, quantum=0.0, device, stream):
        _stream_ok(stream)
        m.calls.append(("update", bool(l2)))
        lo_, hi_ = _arr(lo), _arr(hi)
        clip = None if lo_ is None and hi_ is None else (lo_, hi_)
        _arr(out)[...] = K.fused_update(
            _arr(X).copy(), _arr(G).copy(), _arr(X0).copy(), step=alpha, eps=eps,
            norm=2 if l2 else "inf", clip=clip, quantum=quantum)

    def diff_norms(A, B, l2, linf, *, device, stream):
        _stream_ok(stream)
        m.calls.append(("diff_norms",))
        r2, ri = K.diff_norms(_arr(A).copy(), _arr(B).copy())
        _arr(l2)[...] = r2
        _arr(linf)[...] = ri

    for f in (gemm, row_softmax, ce_rows, inverse_act, fused_update, diff_norms):
        setattr(m, f.__name__, f)
    return m


def _strict_numpy():
    """numpy as fastfool's modules see it on the emulated device: ``asarray`` / ``array`` /
    ``ascontiguousarray`` of an emulated device array raise TypeError, as real CuPy's refusal
    of implicit host conversion does (the emulated arrays are host memory, so without this a
    missing ``.get()`` / ``to_host`` would pass here and fail on a GPU)."""
    strict = types.ModuleType("numpy")
    strict.__dict__.update(np.__dict__)

    def guard(f):
        def g(a, *args, **kw):
            if isinstance(a, FakeArray) or (isinstance(a, (list, tuple)) and any(
                    isinstance(v, FakeArray) for v in a)):
                raise TypeError("Implicit conversion to a NumPy array is not allowed (emulated "
                                f"CuPy: np.{f.__name__} of a device array)")
            return f(a, *args, **kw)
        g.__name__ = f.__name__
        return g
    for name in ("asarray", "array", "ascontiguousarray", "asfortranarray"):
        setattr(strict, name, guard(getattr(np, name)))
    return strict


def install(monkeypatch, strict=True):
    """Emulated cupy + fastfool._cuda for the duration of a test; returns (cupy, _cuda). With
    ``strict`` (default), fastfool's modules get :func:`_strict_numpy` as ``np``."""
    import fastfool.cuda as fc
    cp = _make_cupy()
    fake = _make_cuda_module()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setattr(fc, "_cuda", fake)
    if strict:
        sn = _strict_numpy()
        for name, mod in list(sys.modules.items()):
            if (name == "fastfool" or name.startswith("fastfool.")) and \
                    getattr(mod, "np", None) is np:
                monkeypatch.setattr(mod, "np", sn)
    return cp, fake
