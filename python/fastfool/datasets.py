"""Loading data: NumPy files, CSV, and MNIST's IDX format (for users with real MNIST files)."""

from __future__ import annotations

import gzip
import os

import numpy as np

__all__ = ["load_idx", "load_array"]

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_idx(path) -> np.ndarray:
    """Read an IDX file (MNIST's ``train-images-idx3-ubyte`` etc., optionally ``.gz``).

    Returns the array in native byte order with the file's shape (e.g. (60000, 28, 28) uint8).
    Raises ``ValueError`` for a bad magic number or a size that does not match the header.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dt = np.dtype(_IDX_TYPES[data[2]])
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(data) - header != n * dt.itemsize:
        raise ValueError(f"{path}: {len(data) - header} data bytes, header says {n * dt.itemsize}")
    arr = np.frombuffer(data, dtype=dt, offset=header, count=n).reshape(shape)
    return arr.astype(dt.newbyteorder("="))


def load_array(path, *, name="X") -> np.ndarray:
    """Load ``.npy``, ``.npz`` (the array named ``name``, or its only array), ``.csv`` (comma
    separated numbers, no header) or IDX files; never unpickles."""
    p = str(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p}: no such file")
    low = p.lower()
    if low.endswith(".npy"):
        try:
            return np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{p}: cannot read without pickle ({exc})") from exc
    if low.endswith(".npz"):
        with np.load(p, allow_pickle=False) as f:
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
