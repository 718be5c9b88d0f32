"""fastfool's HopSkipJump against ART's on a random forest (issue 19): median L2 against
queries, and time, in one run.

    python bench/hsj_peers.py [--rows 20] [--iters 5 10 20] [--json bench/results/hsj.json]

Model: RandomForestClassifier(100) on digits (even rows), attacked on held-out odd rows, clip
[0, 1], L2. ART's budget is its max_iter (its predict rows are counted through a wrapper); fastfool
runs with max_queries set to ART's mean queries per row. Every x_adv is judged by the forest's
own predict.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import fastfool as ff

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import header, write_json  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--iters", type=int, nargs="*", default=[5, 10, 20])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rf = RandomForestClassifier(100, random_state=0).fit(X[::2], y[::2])
    Xt, yt = X[1::2][: args.rows], y[1::2][: args.rows]
    ok = rf.predict(Xt) == yt
    Xt, yt = Xt[ok], yt[ok]
    meta = header(rows=len(Xt))
    print(f"# {meta['date']} {meta['machine']} {meta['cpus']} CPUs, commit {meta['commit']}; "
          f"{len(Xt)} rows the forest gets right")
    try:
        from art.attacks.evasion import HopSkipJump
        from art.estimators.classification import SklearnClassifier
    except ImportError:
        HopSkipJump = None
        print("# ART not installed: fastfool only")
    out = []
    for it in args.iters:
        row = dict(art_max_iter=it)
        q_budget = None
        if HopSkipJump is not None:
            count = {"rows": 0}

            class Counting:
                def __init__(self, est):
                    self.est = est
                    self.classes_ = est.classes_
                    self.n_features_in_ = est.n_features_in_

                def predict_proba(self, Z):
                    count["rows"] += len(Z)
                    return self.est.predict_proba(Z)

                def predict(self, Z):
                    count["rows"] += len(Z)
                    return self.est.predict(Z)

            clf = SklearnClassifier(rf, clip_values=(0.0, 1.0))
            inner = clf._model
            clf._model = Counting(inner)
            atk = HopSkipJump(clf, targeted=False, norm=2, max_iter=it, max_eval=10000,
                              init_eval=100, init_size=100, verbose=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                xa = atk.generate(Xt.astype(np.float32), y=yt).astype(np.float64)
                sec = time.perf_counter() - t0
            fooled = rf.predict(xa) != yt
            l2 = np.linalg.norm(xa - Xt, axis=1)
            q_budget = count["rows"] / len(Xt)
            row.update(art_seconds=sec, art_queries_per_row=q_budget, art_success=float(fooled.mean()),
                       art_median_l2=float(np.median(l2[fooled])) if fooled.any() else float("nan"))
        budget = int(q_budget) if q_budget else 100 * it * 10
        t0 = time.perf_counter()
        r = ff.hop_skip_jump(rf, Xt, yt, norm=2, max_queries=budget, clip=(0, 1), seed=0)
        sec = time.perf_counter() - t0
        assert np.array_equal(r.success, rf.predict(r.x_adv) != yt)
        row.update(ff_seconds=sec, ff_queries_per_row=float(r.queries.mean()),
                   ff_success=float(r.success.mean()),
                   ff_median_l2=float(np.median(r.l2[r.success])) if r.success.any() else float("nan"))
        line = (f"budget {budget:6d} q/row: fastfool median L2 {row['ff_median_l2']:.3f} "
                f"({row['ff_success']:.2f} fooled, {row['ff_queries_per_row']:.0f} q/row) in {sec:.2f} s")
        if q_budget:
            line += (f" | ART max_iter {it}: median L2 {row['art_median_l2']:.3f} "
                     f"({row['art_success']:.2f}) in {row['art_seconds']:.1f} s "
                     f"(x{row['art_seconds'] / sec:.0f})")
        print(line, flush=True)
        out.append(row)
    if args.json:
        write_json(args.json, {**meta, "results": out})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
