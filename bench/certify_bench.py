"""Certified radii on the digits MLPs (issue 20): IBP and CROWN time and median radius over 540
rows, CROWN against the exact MILP radius (relu) and against the best attack (tanh), against a
plain NumPy CROWN (bench/crown_baseline.py: the same search width, no rounding control) in
the same run, ff.verify's statuses at eps 0.02, 0.05, 0.1, and the kernel-SVM bounds on a
digits RBF SVC (time, median radius, ratio to FMN's distance), in one run.

    python bench/certify_bench.py [--json bench/results/certify.json] [--exact-rows 40]

Models: MLPClassifier 64-50-20-10 tanh and 64-64-10 relu on digits (bench/apgd_peers.py),
float64, clip [0, 1], 2 threads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import fastfool as ff

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import header, write_json  # noqa: E402
from apgd_peers import models  # noqa: E402
import crown_baseline  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--exact-rows", type=int, default=40)
    ap.add_argument("--time-limit", type=float, default=60.0)
    args = ap.parse_args(argv)
    meta = header()
    print(f"# {meta['date']} {meta['machine']} {meta['cpus']} CPUs, commit {meta['commit']}")
    ms, X, y = models()
    X = X[:540].astype(np.float64)
    y = y[:540]
    out = []
    for name, est in ms:
        m = ff.from_sklearn(est)
        own = est.predict(X)
        for nrm in ("inf", "2"):
            row = dict(model=name, norm=nrm)
            for meth in ("ibp", "crown"):
                ff.certify(m, X[:20], norm=nrm, method=meth, clip=(0, 1), threads=2)
                t0 = time.perf_counter()
                c = ff.certify(m, X, norm=nrm, method=meth, clip=(0, 1), threads=2)
                row[meth] = dict(seconds=time.perf_counter() - t0,
                                 median=float(np.median(c.radius)))
            nn = 2 if nrm == "2" else "inf"
            best = np.full(len(X), np.inf)
            for res in (ff.fmn(m, X, own, norm=nn, steps=200, clip=(0, 1), threads=2),
                        ff.fab(m, X, own, norm=nn, steps=100, clip=(0, 1), threads=2),
                        ff.deepfool(m, X, own, norm=nn, clip=(0, 1), threads=2)):
                d = (res.l2 if nrm == "2" else res.linf).astype(np.float64)
                best = np.where(res.success, np.minimum(best, d), best)
            ok = np.isfinite(best) & (best > 0)
            row["crown_over_attack_median"] = float(np.median(c.radius[ok] / best[ok]))
            # the plain NumPy CROWN, same upper bounds and 20 bisection steps
            import importlib
            C = importlib.import_module("fastfool.certify")
            Ws, bs, acts = C._mlp_params(m)
            k = np.searchsorted(m.classes_, c.pred)
            t0 = time.perf_counter()
            rb = crown_baseline.certify(Ws, bs, acts, X, k, c.extra["upper"], nrm, 0.0, 1.0)
            row["numpy_crown"] = dict(seconds=time.perf_counter() - t0,
                                      median=float(np.median(rb)))
            line = (f"{name:18s} L{nrm:3s} IBP median {row['ibp']['median']:.4f} "
                    f"({row['ibp']['seconds']:.2f} s)  CROWN {row['crown']['median']:.4f} "
                    f"({row['crown']['seconds']:.2f} s)  CROWN / best attack median "
                    f"{row['crown_over_attack_median']:.3f}; plain NumPy CROWN "
                    f"{row['numpy_crown']['median']:.4f} ({row['numpy_crown']['seconds']:.2f} s,"
                    f" x{row['numpy_crown']['seconds'] / row['crown']['seconds']:.1f})")
            if "relu" in name and nrm == "inf":
                k = args.exact_rows
                t0 = time.perf_counter()
                e = ff.certify(m, X[:k], norm="inf", method="exact", clip=(0, 1),
                               time_limit=args.time_limit, threads=2)
                row["exact"] = dict(rows=k, seconds=time.perf_counter() - t0,
                                    all_exact=bool(e.extra["exact"].all()),
                                    crown_over_exact_median=float(np.median(
                                        c.radius[:k] / e.extra["upper"])),
                                    attack_over_exact_median=float(np.median(
                                        best[:k] / e.extra["upper"])))
                line += (f"\n{'':18s} exact (MILP) on {k} rows in {row['exact']['seconds']:.1f} s:"
                         f" CROWN / exact median {row['exact']['crown_over_exact_median']:.3f},"
                         f" best attack / exact {row['exact']['attack_over_exact_median']:.4f}")
            print(line, flush=True)
            out.append(row)
        for eps in (0.02, 0.05, 0.1):
            t0 = time.perf_counter()
            v = ff.verify(m, X, y, eps=eps, norm="inf", clip=(0, 1), time_limit=args.time_limit,
                          threads=2)
            sec = time.perf_counter() - t0
            c = v.counts()
            out.append(dict(model=name, verify_eps=eps, counts=c, seconds=v.seconds))
            print(f"{name:18s} verify Linf eps {eps:4.2f}: robust {c['robust']:3d}, fooled "
                  f"{c['fooled']:3d}, unknown {c['unknown']:3d} of {len(X)} in {sec:.1f} s "
                  f"(bound {v.seconds['bound']:.1f}, attack {v.seconds['attack']:.1f}, exact "
                  f"{v.seconds['exact']:.1f})", flush=True)
    svm_rows = _svm_rows()
    out.extend(svm_rows)
    if args.json:
        write_json(args.json, {**meta, "results": out})
    return 0


def _svm_rows():
    """Kernel-SVM certificates: digits SVC(rbf, gamma=scale, C=10), every third row held out."""
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    tr = np.arange(len(X)) % 3 != 0
    est = SVC(C=10).fit(X[tr], y[tr])
    m = ff.from_sklearn(est)
    Xt, yt = X[~tr], y[~tr]
    rows = []
    for nrm in ("inf", "2"):
        nn = 2 if nrm == "2" else "inf"
        a = ff.fmn(m, Xt, yt, norm=nn, steps=100, clip=(0, 1), threads=2)
        d = a.l2 if nrm == "2" else a.linf
        row = dict(model=f"SVC rbf ({est.support_vectors_.shape[0]} SV)", norm=nrm)
        for meth in ("ibp", "taylor", "auto"):
            t0 = time.perf_counter()
            c = ff.certify(m, Xt, norm=nrm, method=meth, clip=(0, 1), threads=2)
            ok = a.success & (est.predict(Xt) == yt) & (c.radius > 0)
            row[meth] = dict(seconds=time.perf_counter() - t0, median=float(np.median(c.radius)),
                             over_fmn_median=float(np.median(c.radius[ok] / d[ok])),
                             above_attack=int(np.sum(c.radius[ok] > d[ok])))
        print(f"{row['model']:18s} L{nrm:3s} " + "  ".join(
            f"{k} median {row[k]['median']:.4f} ({row[k]['seconds']:.2f} s, / FMN "
            f"{row[k]['over_fmn_median']:.3f})" for k in ("ibp", "taylor", "auto")), flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
