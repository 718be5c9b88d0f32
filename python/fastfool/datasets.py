"""Loading data: NumPy files, CSV, and MNIST's IDX format (for users with real MNIST files)."""

from __future__ import annotations

import gzip
import math
import os
import sys

import numpy as np

from ._files import check_npy, check_npz

__all__ = ["load_idx", "load_array"]

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_idx(path) -> np.ndarray:
    """Read an IDX file (MNIST's ``train-images-idx3-ubyte`` etc., optionally ``.gz``).

    Returns the array in native byte order with the file's shape (e.g. (60000, 28, 28) uint8).
    Raises ``ValueError`` for a bad magic number, a file that is not gzip while named ``.gz``,
    a size that does not match the header, or a header declaring more than this process's
    memory (checked before the data is read: a small ``.gz`` cannot expand without limit).
    """
    from ._files import _limit
    gz = str(path).lower().endswith(".gz")
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
                raise ValueError(f"{path}: not an IDX file (bad magic number)")
            ndim = head[3]
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise ValueError(f"{path}: truncated IDX header")
            shape = tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
            dt = np.dtype(_IDX_TYPES[head[2]])
            n = math.prod(shape)
            need = n * dt.itemsize
            if need > _limit():
                raise ValueError(f"{path}: header declares shape {shape} ({need / 2**30:.1f} GiB), "
                                 "more than this process's memory")
            data = f.read(need + 1)  # one byte more: a longer file does not match its header
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        if isinstance(exc, (FileNotFoundError, IsADirectoryError)):
            raise
        raise ValueError(f"{path}: not a readable {'gzip ' if gz else ''}IDX file "
                         f"({type(exc).__name__}: {exc})") from exc
    if len(data) != need:
        raise ValueError(f"{path}: {len(data)}{'+' if len(data) > need else ''} data bytes, "
                         f"header says {need}")
    arr = np.frombuffer(data, dtype=dt, count=n).reshape(shape)
    return arr.astype(dt.newbyteorder("="))


def load_array(path, *, name="X") -> np.ndarray:
    """Load ``.npy``, ``.npz`` (the array named ``name``, or its only array), ``.csv`` (comma
    separated numbers, no header) or IDX files; never unpickles."""
    p = str(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p}: no such file")
    if os.path.isdir(p):
        raise ValueError(f"{p}: is a directory, not a data file")
    low = p.lower()
    if low.endswith(".npy"):
        with open(p, "rb") as fh:
            check_npy(fh, p)
            try:
                return np.load(fh, allow_pickle=False)
            except ValueError as exc:
                raise ValueError(f"{p}: cannot read without pickle ({exc})") from exc
    if low.endswith(".npz"):
        with open(p, "rb") as fh:
            check_npz(fh, p)
            with np.load(fh, allow_pickle=False) as f:
                if name in f.files:
                    return f[name]
                if len(f.files) == 1:
                    return f[f.files[0]]
                raise ValueError(f"{p}: holds {f.files}; expected an array named {name!r}")
    if low.endswith(".csv"):
        try:
            return np.loadtxt(p, delimiter=",", ndmin=2)
        except ValueError as exc:
            raise ValueError(f"{p}: not a numeric CSV ({exc})") from exc
    if "idx" in os.path.basename(low) or low.endswith(".gz"):
        return load_idx(p)
    raise ValueError(f"{p}: unknown data format (use .npy, .npz, .csv or IDX)")


def as_float(X, path, dtype):
    """The CLI's data as the model's float dtype. The API refuses non-float arrays so that no
    precision is guessed; files from disk (IDX images are uint8) are converted here, with a
    note on stderr; complex values are refused."""
    if X.dtype.kind == "c":
        raise ValueError(f"{path}: complex values ({X.dtype}); fastfool attacks real inputs")
    if X.dtype.kind not in "fiub":
        raise ValueError(f"{path}: expected numbers, got dtype {X.dtype}")
    if X.dtype != dtype:
        print(f"fastfool: note: {path}: {X.dtype} data converted to {np.dtype(dtype)}",
              file=sys.stderr)
    return X.astype(dtype, copy=False)
