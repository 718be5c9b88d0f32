"""Counter-based random draws keyed by (seed, stream, row): a row's draws never depend on the
other rows of its batch, its position in it or the chunking, so any split of the rows (row
chunks, ``row_offset=``, Dask blocks) gives bit-identical results.

Each value is SplitMix64's finaliser (Steele, Lea & Flood 2014) applied to a 64-bit counter
built from the key (the seed and the stream hashed together), the global row index and the
column: ``mix(key ^ mix(row * A + B) + col * C)``. Uniforms take the top 53 bits (float64) or
24 bits (float32), so they are exactly representable in ``[0, 1)``; normals are Box-Muller
pairs of uniforms. Written with array operations only, so the same code runs on NumPy and on
CuPy arrays (``xp``) and gives the same bits on both.
"""

from __future__ import annotations

import hashlib

import numpy as np

_M64 = (1 << 64) - 1
_A = 0x9E3779B97F4A7C15  # the golden-ratio increment of SplitMix64
_B = 0xD1B54A32D192ED03
_C = 0xBF58476D1CE4E5B9
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB


def resolve(seed) -> int:
    """The seed as an integer: None draws fresh entropy (once per call: every row and chunk of
    that call then shares it)."""
    if seed is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an integer or None, got {seed!r}")
    return int(seed)


def key(seed, *stream) -> int:
    """The 64-bit key of (seed, stream...): seed None draws fresh entropy (a different key per
    call, the same for every row of that call); the stream parts (strings or integers: the
    attack, the restart, the step) are hashed in."""
    seed = resolve(seed)
    h = hashlib.blake2b(digest_size=8)
    h.update(repr((int(seed),) + tuple(s if isinstance(s, str) else int(s)
                                       for s in stream)).encode())
    return int.from_bytes(h.digest(), "little")


def _mix(x, xp):
    x = x ^ (x >> xp.uint64(30))
    x = x * xp.uint64(_MUL1)
    x = x ^ (x >> xp.uint64(27))
    x = x * xp.uint64(_MUL2)
    return x ^ (x >> xp.uint64(31))


_BLOCK = 1 << 15  # elements per block of the NumPy path: its passes stay in cache


def _mix_np(x, t):
    """_mix in place on a NumPy uint64 array (t: scratch of x's size)."""
    for shift, mul in ((30, _MUL1), (27, _MUL2), (31, None)):
        np.right_shift(x, np.uint64(shift), out=t)
        np.bitwise_xor(x, t, out=x)
        if mul is not None:
            np.multiply(x, np.uint64(mul), out=x)


def _row_keys(k, rows, xp):
    rows = xp.asarray(rows, dtype=xp.int64).astype(xp.uint64)
    return _mix(rows * xp.uint64(_A) + xp.uint64(_B), xp) ^ xp.uint64(k & _M64)


def bits(k: int, rows, cols: int, xp=np):
    """(len(rows), cols) uint64: the draws of the given global rows (int64 array) under key k."""
    with np.errstate(over="ignore"):
        r = _row_keys(k, rows, xp)
        c = xp.arange(cols, dtype=xp.uint64) * xp.uint64(_C)
        return _mix(r[:, None] + c[None, :], xp)


def uniform(k: int, rows, cols: int, dtype=np.float64, xp=np):
    """Uniform draws in [0, 1) of dtype (float64: 53 bits, float32: 24 bits)."""
    f32 = np.dtype(dtype) == np.float32
    if xp is np:  # the same bits, computed block by block in place (~3x faster than below)
        with np.errstate(over="ignore"):
            r = _row_keys(k, rows, np)
            n = r.shape[0]
            out = np.empty((n, cols), np.float32 if f32 else np.float64)
            c = np.arange(cols, dtype=np.uint64) * np.uint64(_C)
            step = max(1, _BLOCK // max(cols, 1))
            x = np.empty((min(step, n), cols), np.uint64)
            t = np.empty_like(x)
            for i in range(0, n, step):
                m = min(step, n - i)
                xs, ts = x[:m], t[:m]
                np.add(r[i:i + m, None], c[None, :], out=xs)
                _mix_np(xs, ts)
                np.right_shift(xs, np.uint64(40 if f32 else 11), out=xs)
                np.multiply(xs, (2.0 ** -24) if f32 else (2.0 ** -53), out=out[i:i + m],
                            casting="unsafe")
            return out
    b = bits(k, rows, cols, xp)
    if f32:
        return (b >> xp.uint64(40)).astype(xp.float32) * xp.float32(2.0 ** -24)
    return (b >> xp.uint64(11)).astype(xp.float64) * (2.0 ** -53)


def normal(k: int, rows, cols: int, dtype=np.float64, xp=np):
    """Standard normal draws (Box-Muller on two uniform streams of the key), of dtype."""
    u1 = 1.0 - uniform(k, rows, cols, np.float64, xp)  # (0, 1]
    u2 = uniform(k ^ _B, rows, cols, np.float64, xp)
    z = xp.sqrt(-2.0 * xp.log(u1)) * xp.cos(2.0 * np.pi * u2)
    return z.astype(dtype, copy=False)


def integers(k: int, rows, high: int, xp=np):
    """One integer in [0, high) per row (int64; high >= 1)."""
    b = bits(k, rows, 1, xp)[:, 0]
    return (b % xp.uint64(high)).astype(xp.int64)


def global_rows(row_offset: int, start: int, n: int, xp=np):
    """The global indices of n rows starting at ``start`` within a call that begins at row
    ``row_offset`` of the whole array."""
    return xp.arange(row_offset + start, row_offset + start + n, dtype=xp.int64)


def check_offset(row_offset) -> int:
    """``row_offset=``: a non-negative integer (the first row's index in the whole array)."""
    if isinstance(row_offset, (bool, np.bool_)) or not isinstance(row_offset, (int, np.integer)):
        raise TypeError(f"row_offset: expected a non-negative integer, got {row_offset!r}")
    if row_offset < 0:
        raise ValueError(f"row_offset: must be >= 0, got {row_offset}")
    return int(row_offset)
