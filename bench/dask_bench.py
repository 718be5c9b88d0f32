"""PGD over Dask arrays against the in-memory call on the same cores (issue 21): rows/s for
the threads scheduler at 10k / 50k / 200k-row chunks and for a LocalCluster of 1 and 2
single-threaded worker processes, each as a ratio to the in-memory run in the same process,
median of repeats after a warm-up; every Dask result checked equal to the in-memory one.

    python bench/dask_bench.py [--rows 200000] [--repeat 3] [--json bench/results/dask.json]

Model: MLPClassifier 64-50-20-10 tanh on digits, float32; PGD L-inf eps 0.05, 10 steps, random
start, clip [0, 1]; rows: digits resampled with a little noise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import fastfool as ff

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import digits_tanh_mlp, header, resampled_rows, write_json  # noqa: E402


def _read_rows(path, a, b):
    """Rows a:b of a .npy file, read where the task runs (memory-mapped, then copied)."""
    return np.array(np.load(path, mmap_mode="r")[a:b])


def _stored(path, n, chunk, da, dask):
    """The rows of the .npy at path as a Dask array whose blocks the workers read."""
    blocks = [da.from_delayed(dask.delayed(_read_rows)(path, a, min(n, a + chunk)),
                              shape=(min(n, a + chunk) - a, 64), dtype=np.float32)
              for a in range(0, n, chunk)]
    return da.concatenate(blocks)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import dask
    import dask.array as da
    import distributed
    meta = header()
    print(f"# {meta['date']} {meta['machine']} {meta['cpus']} CPUs, commit {meta['commit']}")
    X0, y0, est = digits_tanh_mlp()
    m = ff.from_sklearn(est, dtype=np.float32)
    X, y = resampled_rows(X0, y0, args.rows, np.random.default_rng(0))
    X = X.astype(np.float32)

    def attack(A):
        return ff.pgd(m, A, y, eps=0.05, steps=10, seed=0, clip=(0, 1))

    def once(fn):
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out

    def timed(fn):
        """(median seconds, last output, median ratio to the in-memory run timed just before
        each repeat: the machine's load drifts between modes, not within a pair)"""
        fn()
        ts, ratios, out = [], [], None
        for _ in range(args.repeat):
            b, _ = once(lambda: attack(X))
            t, out = once(fn)
            ts.append(t)
            ratios.append(t / b)
        return float(np.median(ts)), out, float(np.median(ratios))

    base_s, ref, _ = timed(lambda: attack(X))
    rows = [dict(mode="in-memory (2 kernel threads)", seconds=base_s, ratio=1.0)]
    print(f"{'mode':56s}{'s':>8s}{'rows/s':>12s}{'x in-memory':>13s}")
    print(f"{rows[0]['mode']:56s}{base_s:8.2f}{args.rows / base_s:12,.0f}{1.0:13.2f}")

    def report(mode, s, ratio):
        rows.append(dict(mode=mode, seconds=s, ratio=ratio))
        print(f"{mode:56s}{s:8.2f}{args.rows / s:12,.0f}{ratio:13.2f}", flush=True)

    def check(res):
        assert np.array_equal(res.x_adv, ref.x_adv) and np.array_equal(res.success, ref.success)

    # per-chunk overhead: blocks one after the other, each with the in-memory run's 2 threads
    for chunk in (10_000, 50_000, 200_000):
        if chunk > args.rows:
            continue
        Xd = da.from_array(X, chunks=(chunk, 64))
        with dask.config.set(scheduler="synchronous"):
            s, res, ratio = timed(lambda: ff.pgd(m, Xd, y, eps=0.05, steps=10, seed=0,
                                                 clip=(0, 1), threads=2).compute())
        check(res)
        report(f"dask synchronous, 2 kernel threads, {chunk}-row chunks", s, ratio)
    # parallel blocks: 2 Dask threads, one kernel thread each (the default)
    for chunk in (10_000, 50_000, 200_000):
        if chunk > args.rows:
            continue
        Xd = da.from_array(X, chunks=(chunk, 64))
        with dask.config.set(scheduler="threads", num_workers=2):
            s, res, ratio = timed(lambda: attack(Xd).compute())
        check(res)
        report(f"dask threads (2), {chunk}-row chunks", s, ratio)
    # a cluster as it is used: the rows read by the workers from storage (a memory-mapped
    # .npy here), only the verdicts sent back; and, for comparison, a client-side array
    # shipped to the workers with every result field shipped back
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "X.npy")
    np.save(path, X)
    n_fooled = int(ref.success.sum())
    for workers in (1, 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                          processes=True, host="127.0.0.1",
                                          dashboard_address=None) as cluster, \
                    distributed.Client(cluster):
                Xd = da.from_array(X, chunks=(50_000, 64))
                s, res, ratio = timed(lambda: attack(Xd).compute())
                check(res)
                report(f"LocalCluster {workers} x 1 thread, 50k, shipped", s, ratio)
                for chunk in (10_000, 50_000):
                    Xs = _stored(path, args.rows, chunk, da, dask)
                    s, got, ratio = timed(lambda: int(attack(Xs).success.sum().compute()))
                    assert got == n_fooled
                    report(f"LocalCluster {workers} x 1 thread, {chunk // 1000}k, read on "
                           "workers", s, ratio)
    shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        write_json(args.json, {**meta, "rows": args.rows, "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
