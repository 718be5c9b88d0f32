"""GPU benchmarks of the CUDA backend (needs CuPy and a CUDA device; exits 0 with a message
otherwise). Ratios against baselines measured in the same run, medians of repeats after warm-up,
timed with CUDA events on the current stream:

- copy: device-to-device copy bandwidth (the ceiling of the memory-bound rows);
- fused L-inf step, linear model, small C (N=200k, D=784, C=10): bytes moved (X read twice,
  X0 read, x_adv written, W) / time, as a fraction of the copy bandwidth (target >= 0.70);
- scoring, N=4096, D=12288, C=1000 float32: fastfool.kernels.scores vs cupy.matmul
  (target >= 0.7x);
- PGD-10 L-inf on a 784-50-20-10 tanh MLP, N=100k: ff.pgd on model.to("cuda") vs the same
  attack written in CuPy only (target >= 2x);
- APGD, FAB-T, Square, FMN and AutoAttack on that MLP, N=4000: the GPU model against its CPU
  copy, one timed run each (wall clock), with both success rates (no target yet: first
  measurement).

Usage: python bench/gpu.py [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def timeit(cp, fn, repeats=10, warmup=2):
    for _ in range(warmup):
        fn()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return float(np.median(times))


def cupy_pgd(cp, Ws, bs, X, y, eps, alpha, steps):
    """PGD-10 L-inf with hand-written CuPy back-propagation (the baseline)."""
    x = X.copy()
    for _ in range(steps):
        hs = [x]
        for W, b in zip(Ws[:-1], bs[:-1]):
            hs.append(cp.tanh(hs[-1] @ W + b))
        S = hs[-1] @ Ws[-1] + bs[-1]
        S -= S.max(axis=1, keepdims=True)
        P = cp.exp(S)
        P /= P.sum(axis=1, keepdims=True)
        P[cp.arange(len(y)), y] -= 1
        d = P @ Ws[-1].T
        for i in range(len(Ws) - 2, -1, -1):
            d *= 1 - hs[i + 1] ** 2
            d = d @ Ws[i].T
        x = cp.clip(x + alpha * cp.sign(d), X - eps, X + eps)
    return x


def mlp_workload(cp, rng, N):
    """The 784-50-20-10 tanh MLP on the GPU (model, its CuPy weights and biases) and N rows."""
    import fastfool as ff
    sizes = [784, 50, 20, 10]
    Ws = [(rng.standard_normal((p, q), dtype=cp.float32) / np.sqrt(p)).astype(cp.float32)
          for p, q in zip(sizes, sizes[1:])]
    bs = [cp.zeros(q, cp.float32) for q in sizes[1:]]
    m = ff.MLP([cp.asnumpy(w) for w in Ws], [cp.asnumpy(v) for v in bs], activation="tanh",
               dtype=np.float32).to("cuda")
    return m, Ws, bs, rng.random((N, 784), dtype=cp.float32), rng.integers(0, 10, N)


def report(rows, dev, path, quiet=False):
    """Print the rows (unless quiet) and write all of them to ``path`` (JSON) when given."""
    if not quiet:
        for r in rows:
            print(f"{r['name']:<40} {r['time'] * 1e3:9.3f} ms  {r['value']:8.3f} {r['unit']}",
                  flush=True)
    if path:
        with open(path, "w") as f:
            json.dump(dict(device=dev, rows=rows), f, indent=1)


def device_attacks(cp, rng, N):
    """The attacks written once for both devices on the 784-50-20-10 MLP: the GPU model against
    its CPU copy (all the machine's cores) on the same N rows, one timed run each after a
    warm-up on 64 rows; yields one row per attack."""
    import time
    import fastfool as ff
    m, _, _, X, y = mlp_workload(cp, rng, N)
    mc, Xh = m.to("cpu"), cp.asnumpy(X)
    for name, fn in [
            ("APGD-CE L-inf 100 steps", lambda mm, xx: ff.apgd(mm, xx, eps=0.03, clip=(0, 1))),
            ("FAB-T L-inf 9 targets x 20 steps", lambda mm, xx: ff.fab(
                mm, xx, steps=20, n_targets=9, eps=0.03, clip=(0, 1))),
            ("Square L-inf 500 queries", lambda mm, xx: ff.square(
                mm, xx, eps=0.03, max_queries=500, clip=(0, 1))),
            ("FMN L2 100 steps", lambda mm, xx: ff.fmn(mm, xx, clip=(0, 1))),
            ("AutoAttack 20 steps, Square 500", lambda mm, xx: ff.autoattack(
                mm, xx, eps=0.03, steps=20, square_queries=500, clip=(0, 1)))]:
        fn(m, X[:64])
        fn(mc, Xh[:64])
        cp.cuda.Device().synchronize()
        t = time.perf_counter()
        rg = fn(m, X)
        cp.cuda.Device().synchronize()
        t_gpu = time.perf_counter() - t
        t = time.perf_counter()
        rc = fn(mc, Xh)
        t_cpu = time.perf_counter() - t
        yield dict(name=f"{name} N={N}", time=t_gpu, baseline=t_cpu, value=t_cpu / t_gpu,
                   unit="x the CPU (one run)", success_gpu=float(rg.success.mean()),
                   success_cpu=float(rc.success.mean()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    import fastfool as ff
    from fastfool import cuda
    if not cuda.available():
        print(f"no usable GPU: {cuda.info()}")
        return 0
    import cupy as cp
    rows = []
    s = 0.1 if args.quick else 1.0
    rng = cp.random.default_rng(0)

    n = int(256e6 * s) // 4
    a, b = cp.empty(n, cp.float32), cp.ones(n, cp.float32)
    t = timeit(cp, lambda: a.__setitem__(Ellipsis, b))
    copy_bw = 2 * a.nbytes / t
    rows.append(dict(name="copy", time=t, value=copy_bw / 1e9, unit="GB/s"))

    N, D, C = int(200_000 * s), 784, 10
    X = rng.random((N, D), dtype=cp.float32)
    W = (rng.standard_normal((C, D), dtype=cp.float32) / 28).astype(cp.float32)
    y = rng.integers(0, C, N)
    out = cp.empty_like(X)
    t = timeit(cp, lambda: ff.kernels.ce_step_linear(X, W, None, y, X, step=0.01, eps=0.03,
                                                      out=out))
    moved = 4 * X.nbytes + W.nbytes
    rows.append(dict(name="fused L-inf step 200k x 784 x 10", time=t, value=moved / t / copy_bw,
                     unit="x copy bandwidth (target 0.70)"))

    N, D, C = 4096, 12288, 1000
    X = rng.standard_normal((N, D), dtype=cp.float32)
    W = rng.standard_normal((C, D), dtype=cp.float32)
    t_ff = timeit(cp, lambda: ff.kernels.scores(X, W))
    t_cp = timeit(cp, lambda: cp.matmul(X, W.T))
    rows.append(dict(name="scoring 4096 x 12288 x 1000", time=t_ff, baseline=t_cp,
                     value=t_cp / t_ff, unit="x cupy.matmul (target 0.7)",
                     gflops=2 * N * D * C / t_ff / 1e9))

    N = int(100_000 * s)
    m, Ws, bs, X, y = mlp_workload(cp, rng, N)
    t_ff = timeit(cp, lambda: ff.pgd(m, X, y, eps=0.1, steps=10, random_start=False), repeats=5)
    t_cp = timeit(cp, lambda: cupy_pgd(cp, Ws, bs, X, y, 0.1, 0.025, 10), repeats=5)
    rows.append(dict(name=f"PGD-10 784-50-20-10 tanh N={N}", time=t_ff, baseline=t_cp,
                     value=t_cp / t_ff, unit="x CuPy-only PGD (target 2)", rows_per_s=N / t_ff))

    dev = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"]
    dev = dev.decode() if isinstance(dev, bytes) else str(dev)
    print(f"device: {dev}")
    report(rows, dev, args.json)
    # the attacks last, reported as they finish (a timeout there keeps the rows above)
    for r in device_attacks(cp, rng, int(4000 * s)):
        rows.append(r)
        report([r], dev, None)
        report(rows, dev, args.json, quiet=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
