"""Files written so that a failed save never destroys the previous one, and read so that a
hostile file (a zip bomb, a forged header) is refused from its headers before any data is read."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path, write) -> str:
    """Call ``write(f)`` on a temporary file in ``path``'s folder, flush and fsync it, then
    rename it over ``path`` (``os.replace``). When anything fails on the way - a full disk, a
    file-size limit, Ctrl-C - the previous file at ``path`` is untouched and the temporary file
    is removed."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastfool-", suffix=".tmp", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # the mode a plain open() would give
        with os.fdopen(fd, "wb") as f:
            write(f)
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


def save_npz(path, arrays: dict) -> str:
    """``numpy.savez(path, **arrays)`` (the name gets ``.npz`` when it lacks it, as NumPy does),
    written atomically (:func:`_atomic`). Returns the path written."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    return _atomic(path, lambda f: np.savez(f, **arrays))


def save_bytes(path, data: bytes) -> str:
    """``data`` written to ``path`` atomically (:func:`_atomic`)."""
    return _atomic(os.fspath(path), lambda f: f.write(data))


def sha256_file(path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def writable_file(p, what: str, example: str, store: bool = False) -> str:
    """An output path checked before any work: not a folder (unless ``store``: a folder-shaped
    store such as Zarr's, which may exist), in a folder that exists and can be written
    (``what`` names the option, ``example`` a file name to suggest)."""
    p = os.fspath(p)
    if not p or p.endswith(("/", os.sep)) or (os.path.isdir(p) and not store) or \
            os.path.basename(p) in (".", ".."):
        raise ValueError(f"{what} {p!r}: is a folder; give a file name such as "
                         f"{os.path.join(os.path.dirname(p) or '.', example)}")
    folder = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(folder):
        raise ValueError(f"{what} {p}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {p}: cannot write into {folder} (permission denied)")
    return p


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


# --- hostile files: declared sizes checked before anything is read ---------------------------

#: A compressed member may expand at most this many times (np.savez_compressed of real data:
#: 2-20x; of a constant array: ~1000x). Past it, and over 64 MiB, it is refused as a zip bomb.
MAX_RATIO = 1000
_RATIO_FLOOR = 64 << 20


def _limit() -> int:
    """Bytes a file may make us load: half this process's memory (the arrays, and room for a
    copy), or 1 TiB when that is unknown."""
    from ._runtime import memory_limit
    m = memory_limit()
    return m // 2 if m else 1 << 40


def _npy_header(fp):
    """(shape, dtype, header bytes) of the .npy stream at fp's position (NumPy's own parser)."""
    fmt = np.lib.format
    start = fp.tell() if hasattr(fp, "tell") else 0
    version = fmt.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(fp)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = fmt.read_array_header_2_0(fp)
    else:  # pragma: no cover - read_magic accepts only those
        raise ValueError(f"unsupported .npy version {version}")
    return shape, dtype, fp.tell() - start


def _declared(shape, dtype) -> int:
    import math
    return math.prod(int(s) for s in shape) * dtype.itemsize


def check_npy(fh, path) -> None:
    """Refuse a .npy file whose header claims more data than the file holds, or more than this
    process's memory, before NumPy allocates it (ValueError naming the file). fh: a seekable
    binary handle, left at the start."""
    pos = fh.tell()
    try:
        shape, dtype, hdr = _npy_header(fh)
    except Exception as exc:
        raise ValueError(f"{path}: not a .npy file ({exc})") from exc
    size = os.fstat(fh.fileno()).st_size - pos
    need = _declared(shape, dtype)
    if dtype.hasobject:
        raise ValueError(f"{path}: holds Python objects, which fastfool never unpickles")
    if need > size - hdr:
        raise ValueError(f"{path}: header declares shape {shape} {dtype} ({need} bytes) but the "
                         f"file holds {size - hdr}: truncated or forged")
    fh.seek(pos)


def check_npz(fh, path, limit: int | None = None) -> None:
    """Refuse an .npz whose members declare more than they hold, expand past ``MAX_RATIO``
    (zip bombs), or together exceed ``limit`` bytes (default: this process's memory), reading
    only the zip directory and each member's .npy header (ValueError naming the file and the
    member). fh: a seekable binary handle, left at the start."""
    import zipfile
    limit = _limit() if limit is None else limit
    pos = fh.tell()
    try:
        zf = zipfile.ZipFile(fh)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from exc
    total = 0
    with zf:
        for info in zf.infolist():
            name = info.filename
            if info.file_size > _RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise ValueError(f"{path}: member {name!r} expands {info.compress_size} bytes to "
                                 f"{info.file_size} (more than {MAX_RATIO}x): refused as a zip bomb")
            if not name.endswith(".npy"):
                continue
            try:
                with zf.open(info) as m:
                    shape, dtype, hdr = _npy_header(m)
            except Exception as exc:
                raise ValueError(f"{path}: member {name!r} is not a readable array "
                                 f"({type(exc).__name__}: {exc})") from exc
            need = _declared(shape, dtype) if not dtype.hasobject else 0
            if not dtype.hasobject and need != info.file_size - hdr:
                raise ValueError(f"{path}: member {name!r} declares shape {shape} {dtype} "
                                 f"({need} bytes) but holds {info.file_size - hdr}: forged or "
                                 "truncated")
            total += need
            if total > limit:
                raise ValueError(f"{path}: its arrays need {total / 2**30:.1f} GiB, more than "
                                 f"the {limit / 2**30:.1f} GiB this process may load")
    fh.seek(pos)
