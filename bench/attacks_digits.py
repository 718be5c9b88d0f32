"""Every attack on scikit-learn's digits: success rate, median L2 / L-inf of the successful
perturbations, mean confidence and rows per second.

    python bench/attacks_digits.py [--json out.json] [--repeat 8]

Models: LogisticRegression (all 10 digits) and MLPClassifier (64-50-20-10, tanh; and the seed's
(50, 20, 2) identity network on digits 0-3). Inputs are scaled to [0, 1] and every attack clips
to that range. Rows are the 1797 images repeated `--repeat` times so that throughput is measured
on a non-trivial batch.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

import fastfool as ff


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None)
    ap.add_argument("--repeat", type=int, default=8)
    args = ap.parse_args(argv)
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr = LogisticRegression(max_iter=2000).fit(X, y)
        tanh = MLPClassifier((50, 20), activation="tanh", max_iter=400, random_state=0).fit(X, y)
        keep = y < 4
        ident = MLPClassifier((50, 20, 2), activation="identity", max_iter=400, random_state=21).fit(X[keep], y[keep])
        rf = RandomForestClassifier(100, random_state=0).fit(X, y)
    models = {"logreg": (ff.from_sklearn(lr, dtype=np.float32), X, y),
              "mlp-tanh 64-50-20-10": (ff.from_sklearn(tanh, dtype=np.float32), X, y),
              "mlp-identity 64-50-20-2-4": (ff.from_sklearn(ident, dtype=np.float32), X[keep], y[keep])}
    clip = (0.0, 1.0)
    rows = []

    def run(name, model_name, fn, n_rows):
        fn()  # warm-up
        t0 = time.perf_counter()
        res = fn()
        dt = time.perf_counter() - t0
        s = res.summary()
        rows.append(dict(attack=name, model=model_name, rows=res.n, success=s["success_rate"],
                         fooled=s["fooled_rate"],
                         median_l2=s["median_l2"], median_linf=s["median_linf"],
                         mean_confidence=s["mean_confidence"], rows_per_s=res.n / dt,
                         queries=s.get("mean_queries")))
        print(f"{name:<24}{model_name:<28}{100 * s['success_rate']:>8.1f}{100 * s['fooled_rate']:>8.1f}"
              f"{s['median_l2']:>10.3f}"
              f"{s['median_linf']:>10.3f}{s['mean_confidence']:>8.3f}{res.n / dt:>13,.0f}")

    print(f"{'attack':<24}{'model':<28}{'success%':>8}{'fooled%':>8}{'med L2':>10}{'med Linf':>10}{'conf':>8}{'rows/s':>13}")
    for mname, (m, Xm, ym) in models.items():
        Xr = np.tile(Xm, (args.repeat, 1))
        yr = np.tile(ym, args.repeat)
        run("fgsm Linf eps=0.1", mname, lambda: ff.fgsm(m, Xr, yr, eps=0.1, clip=clip), len(Xr))
        run("pgd-10 Linf eps=0.1", mname, lambda: ff.pgd(m, Xr, yr, eps=0.1, steps=10, seed=0, clip=clip), len(Xr))
        run("pgd-10 L2 eps=1", mname, lambda: ff.pgd(m, Xr, yr, eps=1.0, steps=10, norm=2, seed=0, clip=clip), len(Xr))
        run("pgd-10 Linf target=rnd", mname, lambda: ff.pgd(m, Xr, yr, eps=0.2, steps=10, seed=0, clip=clip, target="random"), len(Xr))
        run("deepfool L2", mname, lambda: ff.deepfool(m, Xm, ym), len(Xm))
        run("fmn L2 (100 steps)", mname, lambda: ff.fmn(m, Xm, ym, norm=2, clip=clip), len(Xm))
        run("fmn Linf (100 steps)", mname, lambda: ff.fmn(m, Xm, ym, norm="inf", clip=clip), len(Xm))
        run("fmn L0 (100 steps)", mname, lambda: ff.fmn(m, Xm, ym, norm=0, clip=clip), len(Xm))
        run("fmn L2 quantize=1/16", mname,
            lambda: ff.fmn(m, Xm, ym, norm=2, clip=clip, quantize=1 / 16), len(Xm))
        run("fab Linf (100 steps)", mname, lambda: ff.fab(m, Xm[:300], ym[:300], clip=clip), 300)
        run("ddn L2 (100 steps)", mname, lambda: ff.ddn(m, Xm, ym, clip=clip), len(Xm))
        run("fmn L2 from ddn", mname, lambda: ff.fmn(m, Xm, ym, norm=2, init="ddn", clip=clip), len(Xm))
        run("universal Linf eps=0.1", mname,
            lambda: ff.universal(m, Xm, ym, eps=0.1, clip=clip, seed=0), len(Xm))
        run("cw L2 (1000 x 9)", mname, lambda: ff.cw(m, Xm[:100], ym[:100], clip=clip), 100)
        run("apgd-ce Linf eps=0.1", mname, lambda: ff.apgd(m, Xm, ym, eps=0.1, clip=clip), len(Xm))
        run("apgd-ce L1 eps=2", mname, lambda: ff.apgd(m, Xm, ym, eps=2.0, norm=1, clip=clip), len(Xm))
        run("square Linf eps=0.1 (1k q)", mname,
            lambda: ff.square(m, Xm[:300], ym[:300], eps=0.1, max_queries=1000, clip=clip), 300)
        run("square L2 eps=1 (1k q)", mname,
            lambda: ff.square(m, Xm[:300], ym[:300], eps=1.0, norm=2, max_queries=1000, clip=clip), 300)
        run("autoattack Linf eps=0.1", mname,
            lambda: ff.autoattack(m, Xm[:300], ym[:300], eps=0.1, clip=clip), 300)
        if mname != "mlp-tanh 64-50-20-10":
            run("minimal L2 (exact)", mname, lambda: ff.minimal(m, Xr, yr, norm=2), len(Xr))
            run("minimal Linf (exact)", mname, lambda: ff.minimal(m, Xr, yr, norm="inf"), len(Xr))
        run("template p>=0.99", mname, lambda: ff.template(m, Xm, target="random", seed=0, clip=clip), len(Xm))
        run("template from noise", mname, lambda: ff.template(m, None, target=np.tile(m.classes_, 10),
                                                                start="noise", n=10 * m.n_classes, seed=0), 10 * m.n_classes)
        run("far_points p=0.99 k=10", mname, lambda: ff.far_points(m, Xm, p=0.99, k=10), m.n_classes)
    m, Xm, ym = models["mlp-identity 64-50-20-2-4"]
    run("far_points hidden(2)", "mlp-identity 64-50-20-2-4", lambda: ff.far_points(m, Xm, layer=-1), 4)
    H = m.hidden(Xm, -1)
    codes = np.tile(H[:200] * 5, (args.repeat, 1))
    run("invert (layer -1, 5x codes)", "mlp-identity 64-50-20-2-4", lambda: ff.invert(m, codes, layer=-1), len(codes))
    run("invert x0 (nearest)", "mlp-identity 64-50-20-2-4", lambda: ff.invert(m, codes, layer=-1, x0=np.tile(Xm[:200], (args.repeat, 1))), len(codes))
    run("score_attack Linf 0.2", "random forest (black box)", lambda: ff.score_attack(rf, X[:300], y[:300], eps=0.2, max_queries=500, clip=clip), 300)
    run("hop_skip_jump L2 (2k q)", "random forest (black box)",
        lambda: ff.hop_skip_jump(rf, X[:100], y[:100], max_queries=2000, seed=0, clip=clip), 100)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": ff.get_threads(),
                       "simd": ff.get_simd(), "rows": rows}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
