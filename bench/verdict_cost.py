"""What the verdict rule costs (issue 14): fastfool.verdict.judge over an attack's x_adv against
the plain forward pass the verdict replaced, and whole attacks, measured in one run.

    python bench/verdict_cost.py [--json out.json] [--repeats 15]

Each row alternates the two calls (median of per-pair ratios after a warm-up), so host noise
hits both alike. "forward" is the model's own softmax forward over the same rows (the old
finish); "judge" is the float32 screen + float64 for unclear rows + the source estimator for
rows within rounding of a tie + confidences. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np


def pairs(a, b, repeats):
    a(), b()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        a()
        ta = time.perf_counter() - t
        t = time.perf_counter()
        b()
        out.append((ta, time.perf_counter() - t))
    out = np.array(out)
    return float(np.median(out[:, 0])), float(np.median(out[:, 1])), float(np.median(out[:, 1] / out[:, 0]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    import fastfool as ff
    from fastfool import verdict
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    X20 = np.clip(X[rng.integers(0, len(X), 20000)] + rng.normal(0, 0.02, (20000, 64)), 0, 1).astype(np.float32)
    lr = LogisticRegression(max_iter=1000).fit(X, y)
    mlp = MLPClassifier((50, 20), activation="tanh", max_iter=200, random_state=0).fit(X, y)
    wide = ff.LinearModel((rng.standard_normal((1000, 12288)) * 0.01).astype(np.float32),
                          np.zeros(1000, np.float32))
    Xw = rng.random((2000, 12288), dtype=np.float32)
    cases = []
    for name, m, Xs in (("digits LR f32 (20k)", ff.from_sklearn(lr, dtype=np.float32), X20),
                        ("digits LR f64 (20k)", ff.from_sklearn(lr, dtype=np.float64), X20.astype(np.float64)),
                        ("digits MLP tanh f32 (20k)", ff.from_sklearn(mlp, dtype=np.float32), X20),
                        ("ImageNet-64 linear f32 (2k)", wide, Xw)):
        ys = m.predict(Xs)
        eps = 0.1 if Xs.shape[1] == 64 else 0.01
        res = ff.pgd(m, Xs, ys, eps=eps, steps=10, seed=0, clip=(0, 1))
        xa = res.x_adv
        reps = args.repeats if Xs.shape[1] == 64 else 3
        fwd, jud, ratio = pairs(lambda: m.scores(xa, "softmax", None),
                                lambda: verdict.judge(m, xa, None), reps)
        unclear = int((~verdict.judge(m, xa, None)[1]).sum())
        atk = pairs(lambda: ff.pgd(m, Xs, ys, eps=eps, steps=10, seed=0, clip=(0, 1)),
                    lambda: ff.pgd(m, Xs, ys, eps=eps, steps=10, seed=0, clip=(0, 1)).fooled_rate, reps)
        cases.append(dict(workload=name, forward_ms=1e3 * fwd, judge_ms=1e3 * jud, judge_over_forward=ratio,
                          unclear_rows_after_pgd=unclear, pgd10_ms=1e3 * atk[0],
                          pgd10_with_fooled_rate_ms=1e3 * atk[1]))
    print(f"{'workload':<30}{'forward':>10}{'judge':>10}{'ratio':>7}{'unclear':>9}{'pgd-10':>10}{'+fooled_rate':>14}")
    for c in cases:
        print(f"{c['workload']:<30}{c['forward_ms']:>8.2f}ms{c['judge_ms']:>8.2f}ms{c['judge_over_forward']:>7.2f}"
              f"{c['unclear_rows_after_pgd']:>9}{c['pgd10_ms']:>8.1f}ms{c['pgd10_with_fooled_rate_ms']:>12.1f}ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d"), "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
