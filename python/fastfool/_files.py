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
