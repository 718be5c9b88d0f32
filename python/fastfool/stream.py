"""Out-of-core attacks from the command line (issue 21, item 4): ``fastfool attack --data
big.npy --out adv.npy [--chunk-rows N] [--resume]`` (``.zarr`` stores for either, too).

The data is read ``--chunk-rows`` rows at a time (default: sized so a chunk's working set
stays within ``--memory-mb``) with plain file reads at the rows' offsets, each chunk attacked
as rows ``a:b`` of the whole file (``row_offset=a``: the random draws are the in-memory run's),
and its ``x_adv`` written into ``adv.npy.partial`` and flushed. After every chunk a small
journal (``adv.npy.journal.json``, written atomically) records the rows done, the running
counts and a fingerprint of the run (the model and label files' sha256, the data's size, times
and first and last MiB, attack settings, chunk size). Ctrl-C or a crash leaves the partial
file and the journal; ``--resume`` checks the fingerprint and continues from the last finished
chunk (a chunk cut short is done again, to the same bits), so no row is lost or differs from
an uninterrupted run. At the end the partial file is renamed over ``adv.npy`` (an older
``adv.npy`` stays untouched until then) and the journal removed. Peak memory: a few chunks,
whatever the file's size.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import sys
import time

import numpy as np

from ._files import check_npy, save_bytes, sha256_file, writable_file

__all__ = ["stream_attack", "check_out"]


def check_out(path) -> str:
    """--out for streaming: an .npy file (or a .zarr store) in a folder that exists and can be
    written."""
    p = os.fspath(path)
    if _is_zarr(p):
        p = p.rstrip("/")
        if os.path.isfile(p):
            raise ValueError(f"--out {p}: a file, not a Zarr store")
        return writable_file(p, "--out", "adv.zarr", store=True)
    return writable_file(p, "--out", "adv.npy")


class _Rows:
    """Row blocks of a C-order .npy file, read with plain file reads at their offsets (not a
    memory map: mapped pages would stay in the process's resident set), or written so."""

    def __init__(self, path, mode="rb"):
        self.f = open(path, mode)
        version = np.lib.format.read_magic(self.f)
        read = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}.get(tuple(version))
        if read is None:  # (3, 0): the 2.0 header with a UTF-8 dtype description
            read = np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(self.f)
        if fortran and len(shape) > 1:
            self.f.close()
            raise ValueError(f"{path}: Fortran-order data; streaming reads rows of C-order .npy "
                             "files (np.save(np.ascontiguousarray(X)))")
        if dtype.hasobject:
            self.f.close()
            raise ValueError(f"{path}: object arrays cannot be streamed")
        self.offset = self.f.tell()
        self.N = int(shape[0]) if shape else 1
        self.D = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        self.dtype = dtype

    def read(self, a, b):
        self.f.seek(self.offset + a * self.D * self.dtype.itemsize)
        out = np.fromfile(self.f, dtype=self.dtype, count=(b - a) * self.D)
        if out.size != (b - a) * self.D:
            raise ValueError(f"{self.f.name}: the file ends before row {b}")
        return out.reshape(b - a, self.D)

    def write(self, a, block):
        self.f.seek(self.offset + a * self.D * self.dtype.itemsize)
        self.f.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())

    def flush(self):
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self):
        self.f.close()


class _ZarrRows:
    """Row blocks of a Zarr array (reads and writes touch only the chunks involved)."""

    def __init__(self, z):
        self.z = z
        self.N = int(z.shape[0]) if z.ndim else 1
        self.D = int(np.prod(z.shape[1:])) if z.ndim > 1 else 1
        self.dtype = np.dtype(z.dtype)

    def read(self, a, b):
        return np.asarray(self.z[a:b]).reshape(b - a, self.D)

    def write(self, a, block):
        self.z[a:a + block.shape[0]] = np.asarray(block, dtype=self.dtype)

    def flush(self):
        pass  # every assignment is stored when it returns

    def close(self):
        pass


def _zarr():
    try:
        import zarr
    except ImportError:
        raise ValueError("a .zarr --data / --out needs zarr (pip install zarr)") from None
    return zarr


def _is_zarr(path) -> bool:
    return str(path).rstrip("/").lower().endswith(".zarr")


def _open_data(path):
    """The data's row reader: an .npy file or a .zarr array."""
    if _is_zarr(path):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{path}: no such Zarr store")
        z = _zarr().open_array(store=str(path), mode="r")
        if z.dtype.kind not in "fiub":
            raise ValueError(f"{path}: expected numbers, got dtype {z.dtype}")
        return _ZarrRows(z)
    if not str(path).lower().endswith(".npy"):
        raise ValueError(f"{path}: streaming reads an .npy or .zarr --data; convert the file "
                         "first (np.save)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as fh:
        check_npy(fh, path)
    return _Rows(path)


def _data_fingerprint(path) -> str:
    """A cheap identity of the data (its size, modification times and the first and last MiB of
    its bytes; for a Zarr store every file's name, size and time): hashing a file larger than
    memory at every start would cost minutes."""
    h = hashlib.sha256()
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.relpath(f, path)} {st.st_size} {st.st_mtime_ns}".encode())
    if os.path.isfile(path):
        with open(path, "rb") as f:
            h.update(f.read(1 << 20))
            f.seek(max(os.path.getsize(path) - (1 << 20), 0))
            h.update(f.read(1 << 20))
    return h.hexdigest()


def stream_attack(args, model, kw, out) -> int:
    """The streaming branch of ``fastfool attack`` (see the module docstring)."""
    X = _open_data(args.data)
    try:
        return _run(args, model, kw, out, X)
    finally:
        X.close()


def _run(args, model, kw, out, X):
    import fastfool as ff

    from .datasets import as_float as _data_arg, load_array
    N, D = X.N, X.D
    if D != model.n_features_in_:
        raise ValueError(f"{args.data}: {D} features per row, but the model expects "
                         f"{model.n_features_in_}")
    y = None if args.labels is None else load_array(args.labels, name="y").reshape(-1)
    if y is not None and y.shape[0] != N:
        raise ValueError(f"{args.labels}: {y.shape[0]} labels for {N} rows")
    mdt = np.dtype(model.dtype)
    if args.chunk_rows is not None:
        if args.chunk_rows < 1:
            raise ValueError(f"--chunk-rows: must be at least 1, got {args.chunk_rows}")
        chunk = int(args.chunk_rows)
    else:
        if not args.memory_mb > 0:
            raise ValueError(f"--memory-mb: must be > 0, got {args.memory_mb}")
        # a chunk's working set: the rows read, converted, attacked (a few copies of the
        # float64 row block and of the model's intermediates): ~16 float64 values per feature
        chunk = max(1, int(args.memory_mb * 2 ** 20 // (16 * 8 * max(D, 1))))
    fn = getattr(ff, args.attack)
    takes_offset = "row_offset" in inspect.signature(fn).parameters
    zarr_out = _is_zarr(out)
    out = out.rstrip("/") if zarr_out else out
    part, journal = out + ".partial", out + ".journal.json"
    settings = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
                for k, v in sorted(kw.items()) if k != "threads"}
    fingerprint = {
        "attack": args.attack, "settings": settings, "scale": args.scale, "chunk_rows": chunk,
        "rows": N, "features": D, "dtype": mdt.str,
        "model_sha256": sha256_file(args.model), "data": _data_fingerprint(args.data),
        "labels_sha256": None if args.labels is None else sha256_file(args.labels),
    }
    if args.resume:
        if not os.path.isfile(journal) or not os.path.exists(part):
            raise ValueError(f"--resume: no interrupted run to continue ({journal} or {part} "
                             "is missing)")
        with open(journal) as f:
            state = json.load(f)
        if state.get("fingerprint") != fingerprint:
            diff = sorted(k for k in fingerprint
                          if state.get("fingerprint", {}).get(k) != fingerprint[k])
            raise ValueError(f"--resume: {journal} belongs to a different run (differs in "
                             f"{', '.join(diff)}); rerun it with the same settings, or delete "
                             "it to start afresh")
        O = _ZarrRows(_zarr().open_array(store=part, mode="r+")) if zarr_out else \
            _Rows(part, "r+b")
        if (O.N, O.D) != (N, D) or O.dtype != mdt:
            O.close()
            raise ValueError(f"--resume: {part} holds {(O.N, O.D)} {O.dtype}, expected "
                             f"{(N, D)} {mdt}")
    else:
        if os.path.exists(journal):
            raise ValueError(f"{journal}: an interrupted run is waiting; add --resume to "
                             "continue it, or delete the journal to start afresh")
        if zarr_out:
            if os.path.exists(part):
                shutil.rmtree(part)
            O = _ZarrRows(_zarr().open_array(store=part, mode="w", shape=(N, D),
                                             chunks=(max(1, min(chunk, N)), D), dtype=mdt))
        else:
            with open(part, "wb") as f:  # the header, then the rows' space (sparse till written)
                np.lib.format.write_array_header_2_0(
                    f, {"descr": np.lib.format.dtype_to_descr(mdt), "fortran_order": False,
                        "shape": (N, D)})
                f.truncate(f.tell() + N * D * mdt.itemsize)
            O = _Rows(part, "r+b")
        state = {"fingerprint": fingerprint, "done": 0, "success": 0, "seconds": 0.0}
        save_bytes(journal, json.dumps(state).encode())
    start = int(state["done"])
    t0 = time.perf_counter()
    quiet = args.format == "json"
    try:
        for a in range(start, N, chunk):
            b = min(N, a + chunk)
            Xc = _data_arg(X.read(a, b), args.data, mdt) * mdt.type(args.scale)
            yc = None if y is None else y[a:b]
            extra = {"row_offset": a} if takes_offset else {}
            res = fn(model, Xc, yc, **kw, **extra)
            O.write(a, res.x_adv)
            O.flush()
            state["done"] = b
            state["success"] = int(state["success"]) + int(np.sum(res.success))
            state["seconds"] = float(state.get("seconds", 0.0)) + res.elapsed
            save_bytes(journal, json.dumps(state).encode())
            if not quiet:
                print(f"\rfastfool: {b}/{N} rows ({100 * b / max(N, 1):.0f}%)", end="",
                      file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(f"\nfastfool: interrupted after row {state['done']} of {N}; rerun with --resume "
              "to continue", file=sys.stderr)
        raise
    finally:
        O.close()
    if not quiet:
        print(file=sys.stderr)
    if zarr_out and os.path.exists(out):  # a store is a folder: the old one moved aside first
        old = out + ".old"
        if os.path.exists(old):
            shutil.rmtree(old)
        os.replace(out, old)
        os.replace(part, out)
        shutil.rmtree(old)
    else:
        os.replace(part, out)
    os.remove(journal)
    summary = {"attack": args.attack, "rows": N, "chunk_rows": chunk,
               "chunks": -(-N // chunk) if N else 0, "resumed_at": start,
               "success_rate": state["success"] / N if N else float("nan"),
               "seconds": time.perf_counter() - t0, "out": out}
    if quiet:
        print(json.dumps(summary))
    else:
        print(f"{args.attack}: {N} rows in {summary['chunks']} chunks of {chunk}, success "
              f"{100 * summary['success_rate']:.1f}%; x_adv written to {out}")
    return 0
