"""FAB's projection kernel (kernels.project_plane: the least-norm move onto a hyperplane inside
the box, L-inf / L2 / L1) against a vectorised NumPy version of the same projection (argsort of
the breakpoints and cumulative sums), in one run: microseconds per row at 1 thread, and the
largest difference between the two (issue 19: the step FAB-T spends half its time in).

    python bench/projection.py [--rows 900] [--repeat 7] [--json bench/results/projection.json]

Rows: digits scaled to [0, 1] (64 features), box [0, 1]; w Gaussian times a uniform scale per
feature; b placed so that the plane lies a random 1-99% of the box's reach away.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from fastfool import kernels as K

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import header, median_time as timed, write_json  # noqa: E402


def numpy_projection(X, W, b, lo, hi, p):
    """The same projection by sorting the breakpoints (L-inf / L2)."""
    r = b - np.einsum("ij,ij->i", W, X)
    sg = np.where(r[:, None] * W > 0, 1.0, -1.0)
    v = np.abs(W)
    cap = np.maximum(np.where(sg > 0, hi - X, X - lo), 0.0)
    key = cap if p == "inf" else np.where(v > 0, cap / np.where(v > 0, v, 1.0), np.inf)
    slope = v if p == "inf" else v * v
    order = np.argsort(key, axis=1)
    ks = np.take_along_axis(key, order, 1)
    fs = np.take_along_axis(v * cap, order, 1)
    ss = np.take_along_axis(slope, order, 1)
    # S at each breakpoint k: full rooms of those below, the slopes of the rest times k
    full_below = np.cumsum(fs, axis=1) - fs
    slope_from = np.cumsum(ss[:, ::-1], axis=1)[:, ::-1]
    S = full_below + ks * slope_from
    ra = np.abs(r)[:, None]
    i = np.clip((S < ra).sum(axis=1) - 1, 0, X.shape[1] - 1)  # the last breakpoint below r
    rows = np.arange(len(X))
    A = full_below[rows, i] + fs[rows, i]
    B = slope_from[rows, i] - ss[rows, i]
    first = (S[:, 0] >= ra[:, 0])
    s = np.where(first, ra[:, 0] / np.maximum(slope_from[:, 0], 1e-300),
                 np.where(B > 0, (ra[:, 0] - A) / np.where(B > 0, B, 1.0), np.inf))
    m = s[:, None] if p == "inf" else s[:, None] * v
    return np.where(v > 0, sg * np.minimum(m, cap), 0.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=900)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    meta = header(rows=args.rows, repeat=args.repeat)
    print(f"# {meta['date']} {meta['machine']} {meta['cpus']} CPUs, commit {meta['commit']}")
    rng = np.random.default_rng(0)
    D = load_digits().data / 16.0
    X = D[rng.integers(0, len(D), args.rows)]
    W = rng.standard_normal(X.shape) * rng.random(X.shape)
    reach = np.abs(W).sum(axis=1)  # |w| . 1: at most this far in w . x over the box
    b = np.einsum("ij,ij->i", W, X) + rng.choice([-1, 1], args.rows) * reach * rng.uniform(
        0.01, 0.99, args.rows) * 0.5
    lo, hi = np.zeros(64), np.ones(64)
    rows = []
    print("| norm | kernel us/row | NumPy us/row | speed-up | max abs difference |")
    print("|---|---:|---:|---:|---:|")
    for p in ("inf", "2", "1"):
        norm = {"inf": "inf", "2": 2, "1": 1}[p]
        tk, dk = timed(lambda: K.project_plane(X, W, b, lo, hi, norm=norm, threads=1), args.repeat)
        if p == "1":
            rows.append(dict(norm=p, kernel_us=tk / args.rows * 1e6))
            print(f"| L{p} | {tk / args.rows * 1e6:.2f} | | | |")
            continue
        tn, dn = timed(lambda: numpy_projection(X, W, b, lo, hi, p), args.repeat)
        diff = float(np.abs(dk - dn).max())
        rows.append(dict(norm=p, kernel_us=tk / args.rows * 1e6, numpy_us=tn / args.rows * 1e6,
                         speedup=tn / tk, max_diff=diff))
        print(f"| L{p} | {tk / args.rows * 1e6:.2f} | {tn / args.rows * 1e6:.2f} | "
              f"{tn / tk:.1f}x | {diff:.1e} |")
    if args.json:
        write_json(args.json, dict(meta, results=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
