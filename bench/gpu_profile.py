"""Run each GPU benchmark workload once, for a kernel profiler (Nsight Compute) to time kernel by
kernel. Markers on stdout name the workload that follows; under ncu, read the per-kernel rows in
the same order:

    ncu --clock-control none --metrics gpu__time_duration.sum,\
dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed \
        --csv python bench/gpu_profile.py --once

Without a profiler it prints CUDA-event times per workload (median of 5 after a warm-up).
"""

from __future__ import annotations

import sys



def main() -> int:
    import fastfool as ff
    from fastfool import cuda
    if not cuda.available():
        print(f"no usable GPU: {cuda.info()}")
        return 0
    import cupy as cp
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from gpu import cupy_pgd, mlp_workload, timeit

    rng = cp.random.default_rng(0)
    work = {}
    N, D, C = 200_000, 784, 10
    X = rng.random((N, D), dtype=cp.float32)
    W = (rng.standard_normal((C, D), dtype=cp.float32) / 28).astype(cp.float32)
    y = rng.integers(0, C, N)
    out = cp.empty_like(X)
    work["ce_step_linear 200k x 784 x 10"] = lambda: ff.kernels.ce_step_linear(
        X, W, None, y, X, step=0.01, eps=0.03, out=out)
    work["scores 200k x 784 x 10"] = lambda: ff.kernels.scores(X, W)
    Xs = rng.standard_normal((4096, 12288), dtype=cp.float32)
    Ws = rng.standard_normal((1000, 12288), dtype=cp.float32)
    work["scores 4096 x 12288 x 1000"] = lambda: ff.kernels.scores(Xs, Ws)
    work["cupy.matmul 4096 x 12288 x 1000"] = lambda: cp.matmul(Xs, Ws.T)
    m, Wm, bm, Xm, ym = mlp_workload(cp, rng, 100_000)
    xm = Xm.copy()
    work["mlp ce_step 100k x 784-50-20-10"] = lambda: m.fused_step(
        xm, cuda.trusted(ym), Xm, None, xm, step=0.01, eps=0.1, norm="inf", clip=None, quantum=0.0)
    work["ff.pgd steps=1 100k"] = lambda: ff.pgd(m, Xm, ym, eps=0.1, steps=1, random_start=False)
    work["cupy_pgd steps=1 100k"] = lambda: cupy_pgd(cp, Wm, bm, Xm, ym, 0.1, 0.025, 1)
    only = [a for a in sys.argv[1:] if a != "--once"]
    once = "--once" in sys.argv[1:]
    for name, fn in work.items():
        if only and not any(o in name for o in only):
            continue
        fn()  # compile / warm
        cp.cuda.Device().synchronize()
        print(f"### {name}", flush=True)
        if once:  # under a profiler: one more call, its kernels follow the marker
            fn()
            cp.cuda.Device().synchronize()
            continue
        t = timeit(cp, fn, repeats=5, warmup=1)
        print(f"    {t * 1e3:.3f} ms (median of 5; profiled runs are slower)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
