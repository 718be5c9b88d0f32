"""Argument checks shared by the kernels and the models, for NumPy and CuPy arrays alike (the
``be`` argument: the backend the call runs on, ``fastfool._backend``; default the CPU): every
message names the argument, and the same mistake gets the same exception on either device."""

from __future__ import annotations

import numpy as np

from ._backend import CPU, Backend

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_dtype(dtype, name: str = "dtype") -> np.dtype:
    """Normalise a user dtype to float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name}: not a dtype: {dtype!r}") from exc
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name}: fastfool computes in float32 or float64, got {dt}")
    return dt


def _device_array(a, name: str, be: Backend):
    """A GPU call's array argument: an array of that backend on its device."""
    if not be.owns(a):
        raise TypeError(f"{name}: expected a CuPy array like the other inputs, got "
                        f"{type(a).__name__} (mixing NumPy and CuPy inputs is not supported; "
                        f"move them all to one device, e.g. model.to('cuda') / cupy.asarray)")
    if a.device.id != be.device:
        raise ValueError(f"{name}: lives on GPU {a.device.id}, the other inputs on GPU {be.device}")
    if np.dtype(a.dtype).kind not in "fiub":
        raise TypeError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    return a


def as_array(a, name: str, be: Backend = CPU):
    """``a`` as an array of the backend, refusing what cannot hold numbers (objects, strings,
    complex) and arrays of the other device."""
    if be is not CPU:
        return _device_array(a, name, be)
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(f"{name}: masked arrays are not supported (the mask would be ignored); "
                        f"fill the masked values ({name}.filled(...)) or drop those rows")
    if isinstance(a, np.ndarray):
        arr = a
    else:
        if type(a).__module__.startswith("torch") and hasattr(a, "detach"):  # a torch tensor
            if getattr(getattr(a, "device", None), "type", "cpu") != "cpu":
                raise TypeError(f"{name}: a {a.device} tensor; fastfool's CPU models take CPU "
                                f"tensors or arrays ({name}.cpu())")
            a = a.detach().numpy()  # a view: never modified
        if hasattr(a, "__cuda_array_interface__"):
            raise TypeError(
                f"{name}: a GPU array where the other inputs (or the model) are on the CPU; "
                "keep everything on one device (model.to('cuda') with CuPy inputs, or "
                "cupy.asnumpy(...) for the CPU)"
            )
        try:
            arr = np.asarray(a)
        except Exception as exc:  # ragged lists and other non-arrays
            raise TypeError(f"{name}: cannot be read as an array ({exc})") from exc
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    return arr


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)  # NumPy's canonical (native) instances


def float_array(a, name: str, dtype: np.dtype | None = None, *, cast: bool = False,
                be: Backend = CPU):
    """A float32/float64 array; with ``dtype`` the array must have it (or is cast when ``cast``).

    Integer, bool and float16 arrays are refused: fastfool never guesses a precision.
    The returned array may be a view of the input; it is never modified. On the GPU it is
    C-contiguous (the CUDA kernels read dense rows).
    """
    if type(a) is np.ndarray and be is CPU:  # the common case, decided in a few attribute reads
        dt = a.dtype
        if (dt is _F32 or dt is _F64) and (dtype is None or dt == dtype):
            fl = a.flags  # aligned, with element strides: what the kernels read in place
            if fl.aligned and (fl.c_contiguous or not any(s % dt.itemsize for s in a.strides)):
                return a
    arr = as_array(a, name, be)
    if be is not CPU:
        if arr.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name}: expected float32 or float64 values, got {arr.dtype}; "
                            f"convert explicitly, e.g. {name}.astype(cupy.float32)")
        if dtype is not None and arr.dtype != dtype:
            if not cast:
                raise TypeError(f"{name}: dtype {arr.dtype} does not match {np.dtype(dtype)}")
            arr = arr.astype(dtype)
        return be.xp.ascontiguousarray(arr)
    if arr.dtype.kind == "f" and not arr.dtype.isnative:  # e.g. big-endian data from a file
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name}: expected float32 or float64 values, got {arr.dtype}; "
            f"convert explicitly, e.g. {name}.astype(np.float32)"
        )
    if dtype is not None and arr.dtype != dtype:
        if not cast:
            raise TypeError(f"{name}: dtype {arr.dtype} does not match {dtype}")
        arr = arr.astype(dtype)
    if arr.ndim and any(s % arr.itemsize for s in arr.strides):
        arr = np.ascontiguousarray(arr)  # byte-misaligned strides: the kernels need element strides
    if not arr.flags.aligned:
        arr = arr.copy()  # a misaligned buffer (e.g. frombuffer at an odd offset): C++ needs alignment
    return arr


def matrix(a, name: str, dtype=None, *, cols: int | None = None, cast: bool = False,
           cols_what: str = "", be: Backend = CPU):
    arr = float_array(a, name, dtype, cast=cast, be=be)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (rows, features), got shape {arr.shape}")
    if cols is not None and arr.shape[1] != cols:
        hint = " - transpose?" if arr.shape[0] == cols else ""
        raise ValueError(
            f"{name}: expected shape ({arr.shape[0]}, {cols}) ({cols} columns{cols_what}), "
            f"got {arr.shape}{hint}"
        )
    return arr


def vector(a, name: str, n: int, dtype=None, *, cast: bool = False, be: Backend = CPU):
    arr = float_array(a, name, dtype, cast=cast, be=be)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},), got {arr.shape}")
    return arr


def check_finite(arr, name: str, threads: int, be: Backend = CPU) -> None:
    a = arr if arr.ndim == 2 else arr.reshape(1, -1) if arr.ndim == 1 else arr.reshape(arr.shape[0], -1)
    if not be.all_finite(a, threads):
        raise ValueError(
            f"{name}: contains NaN or infinity; fastfool refuses non-finite inputs "
            "(clean them, or pass check_finite=False to propagate them)"
        )


def empty_aligned(shape, dtype=np.float32, align: int = 64) -> np.ndarray:
    """``np.empty(shape, dtype)`` with the data aligned to ``align`` bytes (a cache line by
    default; NumPy's own large arrays are 16-byte aligned). The kernels write large outputs
    whose rows are whole cache lines with streaming stores, which need that alignment."""
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape: negative dimensions are not allowed, got {shape}")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + align, dtype=np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + nbytes].view(dtype).reshape(shape)


def out_array(out, name: str, shape: tuple, dtype: np.dtype, inputs=(), be: Backend = CPU):
    """Allocate an output (on the CPU cache-line aligned), or check a user's ``out=`` (exact
    shape and dtype, writable, contiguous columns - on the GPU C-contiguous -, no overlap with
    the inputs on the CPU)."""
    if out is None:
        if be is not CPU:
            return be.empty(shape, dtype)
        dt = np.dtype(dtype)
        n = 1
        for d in shape:
            n *= int(d)
        # small outputs (never streamed: see detail/blocks.hpp streams()) as NumPy allocates them
        return np.empty(shape, dt) if n * dt.itemsize < (1 << 18) else empty_aligned(shape, dt)
    if not be.owns(out):
        raise TypeError(f"{name}: expected a {'NumPy' if be is CPU else 'CuPy'} array, got "
                        f"{type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {out.shape}")
    if out.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)}, got {out.dtype}")
    if be is not CPU:
        if not out.flags.c_contiguous:
            raise ValueError(f"{name}: must be C-contiguous")
        if out.device.id != be.device:
            raise ValueError(f"{name}: lives on GPU {out.device.id}, the inputs on GPU {be.device}")
        return out
    if not out.flags.writeable:
        raise ValueError(f"{name}: array is read-only")
    if out.size == 0:
        return out
    if out.ndim == 2 and out.shape[1] > 1 and out.strides[1] != out.itemsize:
        raise ValueError(f"{name}: columns must be contiguous")
    if out.ndim == 1 and out.shape[0] > 1 and out.strides[0] != out.itemsize:
        raise ValueError(f"{name}: must be contiguous")
    for arr, arr_name in inputs:
        if arr is not None and np.may_share_memory(out, arr):
            raise ValueError(f"{name}: must not share memory with {arr_name}")
    return out


class Trusted:
    """Class indices (int64, on the call's device) that an attack has checked once: the kernels
    take them without the range check, which on the GPU is a device-to-host copy per step."""

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array


def labels_to_index(y, n: int, n_classes: int, name: str = "y", be: Backend = CPU):
    """Class indices 0..n_classes-1 as contiguous int64 on the backend (already mapped through
    classes_); checked on the host (once: attack loops pass :class:`Trusted` indices)."""
    if isinstance(y, Trusted):
        return y.array
    if be is not CPU:
        host = labels_to_index(be.to_host(y) if be.owns(y) else y, n, n_classes, name)
        return be.asarray(host)
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class indices, got dtype {arr.dtype}")
    if n and (arr.min() < 0 or arr.max() >= n_classes):
        bad = arr[(arr < 0) | (arr >= n_classes)][0]
        raise ValueError(f"{name}: class index {bad} is outside [0, {n_classes})")
    return np.ascontiguousarray(arr, dtype=np.int64)


class CheckedBounds:
    """Clip bounds that :func:`clip_bounds` has already checked for (D, dtype, backend): an
    attack makes them once, and its step calls take them without the checks (on the GPU,
    without the host round-trip)."""

    __slots__ = ("lo", "hi", "D", "dtype", "be")

    def __init__(self, lo, hi, D: int, dtype, be: Backend = CPU):
        self.lo, self.hi, self.D, self.dtype, self.be = lo, hi, int(D), np.dtype(dtype), be


def clip_bounds(clip, D: int, dtype, be: Backend = CPU):
    """``clip=(lo, hi)`` as scalars or (D,) arrays of dtype (either may be None), or
    ``(None, None)`` for no clipping. Refuses NaN bounds and lo > hi. On the GPU both are (D,)
    device vectors (device bounds a user passes are checked on the host)."""
    if clip is None:
        return None, None
    if isinstance(clip, CheckedBounds):
        if (clip.D == D and clip.dtype == dtype and clip.be.name == be.name
                and clip.be.device == be.device):
            return clip.lo, clip.hi
        clip = (clip.lo, clip.hi)
    if be is not CPU:
        host = tuple(None if v is None else (be.to_host(v) if be.owns(v) else v) for v in clip) \
            if isinstance(clip, (tuple, list)) else clip
        lo, hi = clip_bounds(host, D, dtype)
        return (None if lo is None else be.asarray(np.broadcast_to(lo, (D,)), dtype),
                None if hi is None else be.asarray(np.broadcast_to(hi, (D,)), dtype))
    try:
        lo, hi = clip
    except (TypeError, ValueError) as exc:
        raise ValueError("clip: expected a pair (lo, hi)") from exc

    def bound(v, name):
        if v is None:
            return None
        a = np.asarray(v, dtype=dtype)
        if a.ndim not in (0, 1) or (a.ndim == 1 and a.shape[0] != D):
            raise ValueError(f"clip {name}: expected a scalar or shape ({D},), got {a.shape}")
        if np.isnan(a).any():
            raise ValueError(f"clip {name}: contains NaN")
        return a

    lo, hi = bound(lo, "lo"), bound(hi, "hi")
    if lo is not None and hi is not None and np.any(lo > hi):
        raise ValueError("clip: lo must be <= hi")
    return lo, hi


# ---- shared by the CPU kernels (kernels.py) and the CUDA ones (cuda.py) ----------------------
ACTIVATIONS = {"identity": 0, "relu": 1, "tanh": 2, "logistic": 3}
EPILOGUES = {None: 0, "none": 0, "softmax": 1, "log_softmax": 2}


def epilogue_code(name) -> int:
    if name not in EPILOGUES:
        raise ValueError(f"epilogue: expected None, 'softmax' or 'log_softmax', got {name!r}")
    return EPILOGUES[name]


def act_codes(activations, n: int) -> list:
    """Activation codes for n layers from one name or a name per layer."""
    if isinstance(activations, str):
        activations = [activations] * n
    activations = list(activations)
    if len(activations) != n:
        raise ValueError(f"activations: expected {n} names, got {len(activations)}")
    codes = []
    for i, a in enumerate(activations):
        if a not in ACTIVATIONS:
            raise ValueError(
                f"activations[{i}]: unknown activation {a!r}; expected one of {sorted(ACTIVATIONS)}"
            )
        codes.append(ACTIVATIONS[a])
    return codes


def with_biases(items, biases, what: str):
    """(items, biases) as lists of equal length (biases None: no bias anywhere)."""
    items = list(items)
    if not items:
        raise ValueError(f"{what}: need at least one {'layer' if what == 'weights' else 'step'}")
    biases = [None] * len(items) if biases is None else list(biases)
    if len(biases) != len(items):
        raise ValueError(f"biases: expected {len(items)} entries, got {len(biases)}")
    return items, biases


def norm_name(norm, l1: bool = False, what: str = "", l0: bool = False) -> str:
    """The one norm parser: ``"inf"`` or ``"2"`` (and ``"1"`` when ``l1``: the attacks and
    bounds that take L1; ``"0"`` when ``l0``: FMN's L0) from the spellings users write.
    ``what`` names the caller in the error."""
    if isinstance(norm, str):
        key = norm.lower()
        if l0 and key in ("0", "l0", "l_0"):
            return "0"
        if key in ("inf", "linf", "l_inf", "l-inf"):
            return "inf"
        if key in ("2", "l2", "l_2"):
            return "2"
        if l1 and key in ("1", "l1", "l_1"):
            return "1"
    elif not isinstance(norm, bool):
        try:
            v = float(norm)
        except (TypeError, ValueError):
            v = None
        if v == np.inf:
            return "inf"
        if v == 2.0:
            return "2"
        if l1 and v == 1.0:
            return "1"
        if l0 and v == 0.0:
            return "0"
    who = f"{what} supports " if what else "expected "
    rest = ", 2, 1 and 0" if l0 else (", 2 and 1" if l1 else " or 2")
    raise ValueError(f"norm: {who}'inf'{rest}, got {norm!r}")


def norm_is_l2(norm) -> bool:
    return norm_name(norm) == "2"


def step_scalars(step, eps, quantum):
    """(step, eps, quantum) of the fused attack step as checked floats."""
    step, eps, quantum = float(step), float(eps), float(quantum)
    if not np.isfinite(step):
        raise ValueError(f"step: must be finite, got {step}")
    if not eps >= 0:
        raise ValueError(f"eps: must be >= 0, got {eps}")
    if not (np.isfinite(quantum) and quantum >= 0):
        raise ValueError(f"quantum: must be a finite value >= 0, got {quantum}")
    return step, eps, quantum


def is_dask(a) -> bool:
    """Whether ``a`` is a Dask array (checked without importing Dask)."""
    return type(a).__module__.split(".")[0] == "dask" and hasattr(a, "chunks") \
        and hasattr(a, "to_delayed")
