"""Square L-inf (shared windows, AutoAttack's version) on the digits MLPs: the dense stack's C++
loop (kernels.square_linf_mlp) against square's NumPy loop, which stays the path of every other
model and the reference, in one run (issue 19).

    python bench/square_loop.py [--json bench/results/square-loop.json] [--repeat 3]

Models: MLPClassifier 64-50-20-10 tanh and 64-64-10 relu on digits (every third row held out:
599 rows), float32 and float64, 2 threads; eps 0.05, clip [0, 1], 5000 queries, seed 0. Median
of --repeat runs after a warm-up; the share of rows with the same x_adv and queries in both, and
the fooled counts, each judged by the estimator's own predict.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np

import fastfool as ff

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import header, median_time as timed, write_json  # noqa: E402
from apgd_peers import models  # noqa: E402

SQ = importlib.import_module("fastfool.attacks.square")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--queries", type=int, default=5000)
    args = ap.parse_args(argv)
    meta = header(repeat=args.repeat, queries=args.queries)
    print(f"# {meta['date']} {meta['machine']} {meta['cpus']} CPUs, commit {meta['commit']}")
    ms, X, y = models()
    kernel_layers = SQ._kernel_layers
    rows = []
    print("| model | dtype | C++ loop s | NumPy loop s | speed-up | same rows | fooled C++ / NumPy |")
    print("|---|---|---:|---:|---:|---:|---|")
    for name, est in ms:
        for dt in (np.float32, np.float64):
            m = ff.from_sklearn(est, dtype=dt)
            Xd = X.astype(dt)

            def run():
                return ff.square(m, Xd, y, eps=0.05, max_queries=args.queries, clip=(0, 1),
                                 seed=0, threads=2)

            t_fast, fast = timed(run, args.repeat)
            SQ._kernel_layers = lambda model: None
            try:
                t_ref, ref = timed(run, args.repeat)
            finally:
                SQ._kernel_layers = kernel_layers
            same = float(np.mean(np.all(fast.x_adv == ref.x_adv, 1) & (fast.queries == ref.queries)))
            f_fast = int((est.predict(fast.x_adv) != y).sum())
            f_ref = int((est.predict(ref.x_adv) != y).sum())
            rows.append(dict(model=name, dtype=np.dtype(dt).name, kernel_s=t_fast, numpy_s=t_ref,
                             speedup=t_ref / t_fast, same_rows=same, fooled_kernel=f_fast,
                             fooled_numpy=f_ref, rows=len(y)))
            print(f"| {name} | {np.dtype(dt).name} | {t_fast:.3f} | {t_ref:.3f} | "
                  f"{t_ref / t_fast:.1f}x | {same:.4f} | {f_fast} / {f_ref} |", flush=True)
    if args.json:
        write_json(args.json, dict(meta, rows=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
