"""A/B of two builds of fastfool's `_core` in one process, for changes smaller than the host's
noise: both extension modules are loaded side by side (under different package names), the
workload's calls alternate between them (order flipped every pair), and the per-pair time
ratios old/new are summarised. On a shared host consecutive calls drift by 5-10% and whole runs
by 20-40%; pairs of back-to-back calls see nearly the same machine.

    python bench/ab_inprocess.py OLD_CORE_SO WORKLOAD [PAIRS] [--threads N] [--new NEW_CORE_SO]

OLD_CORE_SO: a `_core*.so` built from the baseline commit (e.g. `git worktree add /tmp/old
<commit>`, then `cmake -S /tmp/old -B /tmp/oldbuild -G Ninja -DCMAKE_BUILD_TYPE=Release
-Dpybind11_DIR=$(python -m pybind11 --cmakedir) && cmake --build /tmp/oldbuild --target _core`).
NEW_CORE_SO: default the `_core` of the installed fastfool. WORKLOAD: one of WORKLOADS below.
Only `_core` functions whose signature both builds share can be compared.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import sys
import time
import types

import numpy as np


def load(path, package):
    sys.modules.setdefault(package, types.ModuleType(package))
    name = package + "._core"
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def mlp(rng, sizes, dt=np.float32):
    Ws = [(rng.standard_normal((a, c)) * (1.5 / np.sqrt(a))).astype(dt) for a, c in zip(sizes, sizes[1:])]
    bs = [(rng.standard_normal(c) * 0.1).astype(dt) for c in sizes[1:]]
    return Ws, bs, [2] * (len(Ws) - 1) + [0]  # tanh hidden layers, identity logits


def aligned(shape, dtype):
    """An empty array whose data starts on a 64-byte boundary (as fastfool.kernels.empty)."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(n + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off:off + n].view(dtype).reshape(shape)


def workload(name, threads):
    """Returns f(core) -> zero-argument callable running the workload on that module."""
    rng = np.random.default_rng(1)
    if name in ("scoring-f32", "scoring-f64"):
        dt = np.float32 if name.endswith("32") else np.float64
        N = 4096 if dt == np.float32 else 2048
        X = rng.standard_normal((N, 12288), dtype=np.float32).astype(dt)
        W = rng.standard_normal((1000, 12288), dtype=np.float32).astype(dt)
        b, S = np.zeros(1000, dt), np.empty((N, 1000), dt)
        return lambda m: (lambda: m.scores(X, W, b, 0, S, threads))
    if name in ("mlp-steps", "mlp-steps-l2", "mlp-forward", "mlp-grad"):
        Ws, bs, acts = mlp(rng, [64, 50, 20, 10])
        N = 20000
        X = rng.uniform(0, 1, (N, 64)).astype(np.float32)
        y = rng.integers(0, 10, N).astype(np.int64)
        O, P, G = np.empty_like(X), np.empty((N, 10), np.float32), np.empty_like(X)
        loss = np.empty(N, np.float32)
        lo, hi = np.zeros(64, np.float32), np.ones(64, np.float32)
        if name.startswith("mlp-steps"):  # PGD-10's fused call (L-inf, or L2 with eps 1)
            l2 = name.endswith("l2")
            return lambda m: (lambda: m.ce_step_mlp(X, Ws, bs, acts, y, X, l2, 0.025, 1.0 if l2 else 0.1,
                                                    lo, hi, 0.0, O, None, None, threads, 10))
        if name == "mlp-forward":
            return lambda m: (lambda: m.mlp_forward(X, Ws, bs, acts, 1, P, threads))
        return lambda m: (lambda: m.ce_grad_mlp(X, Ws, bs, acts, y, G, loss, None, threads))
    if name == "mlp784-steps":  # PGD-10's fused call on a 784-50-20-2-4 tanh MLP, 20k rows
        Ws, bs, acts = mlp(rng, [784, 50, 20, 2, 4])
        X = rng.uniform(0, 1, (20000, 784)).astype(np.float32)
        y = rng.integers(0, 4, 20000).astype(np.int64)
        O = aligned(X.shape, np.float32)
        lo, hi = np.zeros(784, np.float32), np.ones(784, np.float32)
        return lambda m: (lambda: m.ce_step_mlp(X, Ws, bs, acts, y, X, False, 0.025, 0.1, lo, hi,
                                                0.0, O, None, None, threads, 10))
    if name == "ce-steps-l2":  # 10 fused L2 steps of a linear model, 50k x 784 x 10
        N, D, C = 50000, 784, 10
        X = rng.uniform(0, 1, (N, D)).astype(np.float32)
        W = (rng.standard_normal((C, D), dtype=np.float32) / np.sqrt(D)).astype(np.float32)
        y = rng.integers(0, C, N).astype(np.int64)
        O = aligned((N, D), np.float32)
        lo, hi = np.zeros(D, np.float32), np.ones(D, np.float32)
        return lambda m: (lambda: m.ce_step_linear(X, W, None, y, X, True, 0.01, 1.0, lo, hi, 0.0,
                                                   O, None, None, threads, 10))
    if name in ("ce-linear", "ce-digits"):
        N, D, C = (200000, 784, 10) if name == "ce-linear" else (17970, 64, 10)
        X = rng.standard_normal((N, D), dtype=np.float32)
        W = (rng.standard_normal((C, D), dtype=np.float32) / np.sqrt(D)).astype(np.float32)
        y = rng.integers(0, C, N).astype(np.int64)
        G = np.empty_like(X)
        return lambda m: (lambda: m.ce_grad_linear(X, W, None, y, G, None, None, threads))
    if name == "backproject":
        sizes = [784, 50, 20, 2]
        Ps = [(rng.standard_normal((c, a)) / np.sqrt(c)).astype(np.float32)
              for a, c in zip(sizes, sizes[1:])][::-1]
        H = rng.standard_normal((100000, 2)).astype(np.float32)
        O = aligned((100000, 784), np.float32)  # as fastfool allocates its outputs
        return lambda m: (lambda: m.backproject(H, Ps, [None] * 3, [0] * 3, 1e-6, None, O, threads))
    raise SystemExit(f"workload: expected one of {', '.join(WORKLOADS)}, got {name!r}")


WORKLOADS = ["scoring-f32", "scoring-f64", "mlp-steps", "mlp-steps-l2", "mlp784-steps", "mlp-forward",
             "mlp-grad", "ce-linear", "ce-digits", "ce-steps-l2", "backproject"]


def paired(fns, pairs):
    """{"old": [...], "new": [...]} wall times of `pairs` back-to-back pairs of calls after one
    warm-up call each (pools, packed-weight caches), the order flipped every pair."""
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for i in range(pairs):
        for k in (("old", "new") if i % 2 else ("new", "old")):
            t = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t)
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", help="the baseline build's _core*.so")
    ap.add_argument("workload", choices=WORKLOADS)
    ap.add_argument("pairs", type=int, nargs="?", default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new", default=None, help="the new build's _core*.so (default: installed)")
    args = ap.parse_args(argv)
    if args.new is None:
        import fastfool._core
        args.new = fastfool._core.__file__
    mods = {"old": load(args.old, "ff_ab_old"), "new": load(args.new, "ff_ab_new")}
    make = workload(args.workload, args.threads)
    fns = {k: make(m) for k, m in mods.items()}
    times = paired(fns, args.pairs)
    for k, v in times.items():
        v = np.array(v) * 1e3
        print(f"{k}: min {v.min():.2f} ms, median {np.median(v):.2f} ms")
    r = np.array(times["old"]) / np.array(times["new"])
    print(f"old/new per pair: median {np.median(r):.3f} "
          f"[quartiles {np.percentile(r, 25):.3f}, {np.percentile(r, 75):.3f}] over {args.pairs} pairs")


if __name__ == "__main__":
    main()
