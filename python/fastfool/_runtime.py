"""Global run-time settings: SIMD path and thread count."""

from __future__ import annotations

import os

from . import _core

_SIMD_CHOICES = ("auto", "generic", "avx2")


def _default_threads() -> int:
    env = os.environ.get("FASTFOOL_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    if env:
        try:
            n = int(env.split(",")[0])
            if n >= 1:
                return n
        except ValueError:
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_threads = _default_threads()


def get_threads() -> int:
    """Threads the kernels use when a call does not pass ``threads=``."""
    return _threads


def set_threads(n: int) -> int:
    """Set the default number of kernel threads; returns the previous value.

    The default is ``FASTFOOL_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the CPUs this
    process may run on. Raises ``ValueError`` for ``n < 1``.
    """
    global _threads
    n = resolve_threads(n)
    prev, _threads = _threads, n
    return prev


def resolve_threads(threads: int | None) -> int:
    """The thread count for one call: ``threads`` if given, else the global default."""
    if threads is None:
        return _threads
    if isinstance(threads, bool) or not isinstance(threads, (int,)) and not hasattr(threads, "__index__"):
        raise TypeError(f"threads: expected an int >= 1, got {threads!r}")
    n = int(threads)
    if n < 1:
        raise ValueError(f"threads: must be >= 1, got {n}")
    return n


def set_simd(name: str) -> str:
    """Choose the CPU kernel path: ``"auto"`` (best available), ``"generic"`` (portable C++,
    auto-vectorised for the baseline ISA) or ``"avx2"`` (AVX2/FMA micro-kernels).

    The environment variable ``FASTFOOL_SIMD`` sets the initial choice. Returns the path now
    active. Raises ``ValueError`` for an unknown name and ``RuntimeError`` if the CPU lacks it.
    """
    if name not in _SIMD_CHOICES:
        raise ValueError(f"simd: expected one of {_SIMD_CHOICES}, got {name!r}")
    target = _core.detected_simd() if name == "auto" else name
    if not _core.set_simd(target):
        raise RuntimeError(
            f"simd: this CPU does not support {name!r} (best available: {_core.detected_simd()!r})"
        )
    return _core.active_simd()


def get_simd() -> str:
    """The CPU kernel path in use: ``"avx2"`` or ``"generic"``."""
    return _core.active_simd()


def simd_info() -> dict:
    """What the kernels run on: detected and active SIMD path, default threads, tiles."""
    return {
        "detected": _core.detected_simd(),
        "active": _core.active_simd(),
        "threads": _threads,
        "tile_float32": _core.tile("float32"),
        "tile_float64": _core.tile("float64"),
    }


_env_simd = os.environ.get("FASTFOOL_SIMD")
if _env_simd:
    set_simd(_env_simd.strip().lower())
