"""Global run-time settings: SIMD path and thread count."""

from __future__ import annotations

import os

from . import _core

_SIMD_CHOICES = ("auto", "generic", "avx2", "avx512")


#: More threads than this is refused outright (a typo, not a machine).
MAX_THREADS = 1024


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _cgroup_cpus() -> int | None:
    """The CPU quota of this process's cgroup (v2 ``cpu.max``, v1 ``cfs_quota_us``), rounded up;
    None when there is none."""
    import math
    try:
        quota, period = _read("/sys/fs/cgroup/cpu.max").split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int(_read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"))
        period = int(_read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
        return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


_CACHE_SECONDS = 1.0
_cache: dict = {}


def _cached(fn):
    """fn() re-read at most once a second: every attack and kernel call asks (the cgroup and
    /proc files cost ~40 us an open: 20 opens were 8% of a 10 ms FGSM), while affinity, quotas
    and memory change rarely."""
    import functools
    import time

    @functools.wraps(fn)
    def wrapper():
        now = time.monotonic()
        hit = _cache.get(fn.__name__)
        if hit is not None and now - hit[0] < _CACHE_SECONDS:
            return hit[1]
        value = fn()
        _cache[fn.__name__] = (now, value)
        return value
    return wrapper


@_cached
def cpus_available() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota."""
    try:
        n = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        n = max(1, os.cpu_count() or 1)
    q = _cgroup_cpus()
    return min(n, q) if q else n


@_cached
def memory_limit() -> int | None:
    """Bytes this process can hold at most: RAM plus swap, capped by a cgroup memory limit (v2
    ``memory.max``, v1 ``limit_in_bytes``); None when unknown. Used to refuse, before any pass
    over the inputs, an output that cannot fit (a broadcast view can have 2**31 rows)."""
    total = None
    try:
        with open("/proc/meminfo") as f:
            info = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f if ln.split()[1:2]}
        total = info["MemTotal"] + info.get("SwapTotal", 0)
    except (OSError, KeyError, ValueError, IndexError):
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
            total = None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            v = _read(path).strip()
        except OSError:
            continue
        if v.isdigit() and int(v) < 2**62:
            total = int(v) if total is None else min(total, int(v))
        break
    return total


def check_fits(shape, itemsize: int, name: str, what: str) -> None:
    """MemoryError naming ``name`` when an array of ``shape`` cannot fit in this process's
    memory (see :func:`memory_limit`), before anything is allocated or read."""
    import math
    need = math.prod(int(s) for s in shape) * int(itemsize)
    limit = memory_limit()
    if limit is not None and need > limit:
        raise MemoryError(f"{name}: {what} of shape {tuple(int(s) for s in shape)} needs "
                          f"{need / 2**30:.1f} GiB, more than the {limit / 2**30:.1f} GiB of "
                          "memory this process can use")


def _forced() -> bool:
    return os.environ.get("FASTFOOL_FORCE_THREADS", "") not in ("", "0")


def _count(threads, name: str) -> int:
    if isinstance(threads, bool) or not isinstance(threads, (int,)) and not hasattr(threads, "__index__"):
        raise TypeError(f"{name}: expected an int >= 1, got {threads!r}")
    n = int(threads.__index__()) if not isinstance(threads, int) else threads
    if n < 1:
        raise ValueError(f"{name}: must be >= 1, got {n}")
    if n > MAX_THREADS:
        raise ValueError(f"{name}: at most {MAX_THREADS} threads, got {n}")
    return n


def _capped(n: int) -> int:
    """More threads than CPUs only slow the kernels down: capped unless FASTFOOL_FORCE_THREADS=1."""
    return n if _forced() else min(n, cpus_available())


def _default_threads() -> int:
    import warnings
    for var in ("FASTFOOL_NUM_THREADS", "OMP_NUM_THREADS"):
        env = os.environ.get(var)
        if not env:
            continue
        try:
            return _capped(_count(int(env.split(",")[0]), var))
        except (TypeError, ValueError) as exc:
            if var == "FASTFOOL_NUM_THREADS":  # ours: say so; OMP_NUM_THREADS belongs to others too
                warnings.warn(f"fastfool: ignoring {var}={env!r} ({exc}); using the CPUs available",
                              RuntimeWarning, stacklevel=2)
    return cpus_available()


_threads = _default_threads()


def get_threads() -> int:
    """Threads the kernels use when a call does not pass ``threads=``."""
    return _threads


def set_threads(n: int) -> int:
    """Set the default number of kernel threads; returns the previous value.

    The default is ``FASTFOOL_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the CPUs this
    process may run on (its affinity mask and cgroup quota). Counts above the CPUs available are
    capped to them (more threads only slow the kernels down) unless the environment sets
    ``FASTFOOL_FORCE_THREADS=1``. Raises ``ValueError`` for ``n < 1`` or ``n > MAX_THREADS``.
    """
    global _threads
    n = resolve_threads(n)
    prev, _threads = _threads, n
    return prev


def resolve_threads(threads: int | None) -> int:
    """The thread count for one call: ``threads`` if given (checked, capped at the CPUs
    available unless FASTFOOL_FORCE_THREADS=1), else the global default."""
    if threads is None:
        return _threads
    return _capped(_count(threads, "threads"))


def set_simd(name: str) -> str:
    """Choose the CPU kernel path: ``"auto"`` (best available), ``"generic"`` (portable C++,
    auto-vectorised for the baseline ISA), ``"avx2"`` (AVX2/FMA micro-kernels) or ``"avx512"``
    (AVX-512 F/VL/DQ/BW: the AVX2 tiles in zmm registers, bit-identical results to ``"avx2"``).

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
    """The CPU kernel path in use: ``"avx512"``, ``"avx2"`` or ``"generic"``."""
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
    try:
        set_simd(_env_simd.strip().lower())
    except (ValueError, RuntimeError) as _exc:  # a bad setting must not break `import fastfool`
        import warnings
        warnings.warn(f"fastfool: ignoring FASTFOOL_SIMD={_env_simd!r} ({_exc}); using 'auto'",
                      RuntimeWarning, stacklevel=2)
