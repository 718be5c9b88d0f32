"""Certified radii against network size (issue 20): for relu MLPs the median CROWN (and IBP)
bound over the exact MILP radius, for tanh MLPs over the best attack's distance (FMN, FAB,
DeepFool), with the time per method, in one run.

    python bench/certify_sizes.py [--json bench/results/certify-sizes.json] [--exact-rows 30]

Models: MLPClassifier on digits scaled to [0, 1] (every third row held out), float64, L-inf,
clip [0, 1], 2 threads.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier

import fastfool as ff

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import header, write_json  # noqa: E402

RELU = [(16,), (32,), (64,), (32, 16)]
TANH = [(20,), (50, 20), (100, 50)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--exact-rows", type=int, default=30)
    ap.add_argument("--time-limit", type=float, default=30.0)
    args = ap.parse_args(argv)
    meta = header()
    print(f"# {meta['date']} {meta['machine']} {meta['cpus']} CPUs, commit {meta['commit']}")
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    tr = np.arange(len(X)) % 3 != 0
    Xt, yt = X[~tr][:540], y[~tr][:540]
    out = []
    for act, sizes in (("relu", RELU), ("tanh", TANH)):
        for hidden in sizes:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est = MLPClassifier(hidden, activation=act, max_iter=400,
                                    random_state=0).fit(X[tr], y[tr])
            m = ff.from_sklearn(est)
            own = est.predict(Xt)
            name = f"{act} 64-{'-'.join(map(str, hidden))}-10"
            row = dict(model=name, accuracy=float(np.mean(own == yt)))
            rad = {}
            for meth in ("ibp", "crown"):
                t0 = time.perf_counter()
                c = ff.certify(m, Xt, norm="inf", method=meth, clip=(0, 1), threads=2)
                rad[meth] = c.radius
                row[meth] = dict(seconds=time.perf_counter() - t0,
                                 median=float(np.median(c.radius)))
            if act == "relu":
                k = args.exact_rows
                t0 = time.perf_counter()
                e = ff.certify(m, Xt[:k], norm="inf", method="exact", clip=(0, 1),
                               time_limit=args.time_limit, threads=2)
                ex = e.extra["upper"]
                ok = e.extra["exact"] & (ex > 0)
                row["exact"] = dict(rows=k, solved=int(ok.sum()),
                                    seconds=time.perf_counter() - t0)
                for meth in ("ibp", "crown"):
                    row[f"{meth}_over_exact_median"] = float(np.median(rad[meth][:k][ok] / ex[ok]))
                line = (f"{name:22s} acc {row['accuracy']:.3f}  IBP/exact "
                        f"{row['ibp_over_exact_median']:.3f} ({row['ibp']['seconds']:.2f} s)  "
                        f"CROWN/exact {row['crown_over_exact_median']:.3f} "
                        f"({row['crown']['seconds']:.2f} s)  exact {row['exact']['solved']}/{k} "
                        f"rows in {row['exact']['seconds']:.1f} s")
            else:
                best = np.full(len(Xt), np.inf)
                t0 = time.perf_counter()
                for res in (ff.fmn(m, Xt, own, norm="inf", steps=200, clip=(0, 1), threads=2),
                            ff.fab(m, Xt, own, norm="inf", steps=100, clip=(0, 1), threads=2),
                            ff.deepfool(m, Xt, own, norm="inf", clip=(0, 1), threads=2)):
                    best = np.where(res.success, np.minimum(best, res.linf), best)
                row["attacks_seconds"] = time.perf_counter() - t0
                ok = np.isfinite(best) & (best > 0)
                for meth in ("ibp", "crown"):
                    row[f"{meth}_over_attack_median"] = float(np.median(rad[meth][ok] / best[ok]))
                    assert np.all(rad[meth][ok] <= best[ok] * (1 + 1e-9))
                line = (f"{name:22s} acc {row['accuracy']:.3f}  IBP/attack "
                        f"{row['ibp_over_attack_median']:.3f} ({row['ibp']['seconds']:.2f} s)  "
                        f"CROWN/attack {row['crown_over_attack_median']:.3f} "
                        f"({row['crown']['seconds']:.2f} s)  attacks {row['attacks_seconds']:.1f} s")
            print(line, flush=True)
            out.append(row)
    if args.json:
        write_json(args.json, {**meta, "results": out})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
