"""Files written so that a failed save never destroys the previous one."""

from __future__ import annotations

import contextlib
import os
import tempfile

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_npz(path, arrays: dict) -> str:
    """``numpy.savez(path, **arrays)`` (the name gets ``.npz`` when it lacks it, as NumPy does),
    written atomically: into a temporary file in the same directory, flushed and fsynced, then
    renamed over ``path`` (``os.replace``). When anything fails on the way - a full disk, a
    file-size limit, Ctrl-C - the previous file at ``path`` is untouched and the temporary file
    is removed. Returns the path written."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastfool-", suffix=".tmp", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # the mode a plain open() would give
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a crash (POSIX)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return path


def _is_bool(v) -> bool:
    return isinstance(v, (bool, np.bool_))


def encode_labels(a, name: str) -> tuple[np.ndarray, bool]:
    """Labels (a model's ``classes_``, a result's ``y`` / ``pred`` / ``target``) as an array a
    ``.npz`` holds without pickle, and whether they were an object array. Object arrays whose
    values are all ints (within int64), all bools, all floats or all strings become int64, bool,
    float64 or unicode arrays; ``decode_labels`` turns them back into object arrays of the same
    Python values. Anything else (mixed kinds, huge ints, other objects) is refused here, before
    a file is written."""
    a = np.asarray(a)
    if a.dtype != object:
        if a.dtype.kind not in "biufU":
            raise TypeError(f"{name}: labels of dtype {a.dtype} cannot be saved")
        return a, False
    vals = a.tolist() if a.ndim else [a.item()]
    for test, dtype in ((_is_bool, np.bool_),
                        (lambda v: isinstance(v, (int, np.integer)) and not _is_bool(v), np.int64),
                        (lambda v: isinstance(v, (float, np.floating)), np.float64),
                        (lambda v: isinstance(v, (str, np.str_)), str)):
        if all(test(v) for v in vals):  # one kind for all: each value comes back as it was
            try:
                return np.asarray(vals, dtype=dtype).reshape(a.shape), True
            except OverflowError:
                break  # ints beyond int64
    kinds = sorted({type(v).__name__ for v in vals})
    raise TypeError(f"{name}: labels of types {kinds} cannot be saved without pickle "
                    "(use ints, floats, bools or strings)")


def decode_labels(a: np.ndarray, was_object: bool) -> np.ndarray:
    """The inverse of :func:`encode_labels`."""
    if not was_object:
        return a
    out = np.empty(a.shape, dtype=object)
    out[...] = a.tolist() if a.ndim else a.item()
    return out
