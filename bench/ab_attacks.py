"""A/B of two fastfool packages' attacks in one process (Python-level changes): the baseline
package copied under another name (e.g. ``fastfool_old``, with its own ``_core``) next to the
installed one; the attacks' calls alternate between them (order flipped every pair) and the
per-pair time ratios old/new are summarised, as bench/ab_inprocess.py does for the kernels.

    python bench/ab_attacks.py OLD_PARENT_DIR [--package fastfool_old] [--pairs 15]

The workloads are the attack rows of issue 17's peer table (float32, 2 threads): digits LR and
MLP (64-50-20-10 tanh) at 20k rows, the MNIST shape (784-50-20-2-4 tanh) at 50k, and a wide
linear model (12288 -> 1000) at 500 rows; weights random with the same seeds for both.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_inprocess import paired  # noqa: E402


def workloads(ff, rng_seed=0):
    rng = np.random.default_rng(rng_seed)

    def mlp(sizes, n):
        Ws = [(rng.standard_normal((a, c)) * (1.5 / np.sqrt(a))).astype(np.float32)
              for a, c in zip(sizes, sizes[1:])]
        bs = [(rng.standard_normal(c) * 0.1).astype(np.float32) for c in sizes[1:]]
        m = ff.MLP(Ws, bs, activation="tanh")
        X = rng.uniform(0, 1, (n, sizes[0])).astype(np.float32)
        return m, X

    lr = ff.LinearModel(rng.standard_normal((10, 64)).astype(np.float32) * 0.3,
                        np.zeros(10, np.float32))
    Xlr = rng.uniform(0, 1, (20000, 64)).astype(np.float32)
    m64, X64 = mlp([64, 50, 20, 10], 20000)
    m784, X784 = mlp([784, 50, 20, 2, 4], 50000)
    wide = ff.LinearModel(rng.standard_normal((1000, 12288)).astype(np.float32) * 0.01,
                          np.zeros(1000, np.float32))
    Xw = rng.uniform(0, 1, (500, 12288)).astype(np.float32)
    kw = dict(clip=(0, 1), threads=2)
    return {
        "digits-LR fgsm 20k": lambda: ff.fgsm(lr, Xlr, eps=0.1, **kw),
        "digits-LR pgd10 20k": lambda: ff.pgd(lr, Xlr, eps=0.1, steps=10, seed=0, **kw),
        "digits-MLP pgd10 20k": lambda: ff.pgd(m64, X64, eps=0.1, steps=10, seed=0, **kw),
        "digits-MLP pgd10 early 20k": lambda: ff.pgd(m64, X64, eps=0.1, steps=10, seed=0,
                                                     early_stop=True, **kw),
        "mnist-shape fgsm 50k": lambda: ff.fgsm(m784, X784, eps=0.1, **kw),
        "mnist-shape pgd10 50k": lambda: ff.pgd(m784, X784, eps=0.1, steps=10, seed=0, **kw),
        "wide-LR fgsm 500": lambda: ff.fgsm(wide, Xw, eps=0.01, **kw),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old_parent", help="directory holding the baseline package")
    ap.add_argument("--package", default="fastfool_old")
    ap.add_argument("--pairs", type=int, default=15)
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", default=None, help="comma-separated workload name prefixes")
    args = ap.parse_args(argv)
    sys.path.insert(0, args.old_parent)
    old = importlib.import_module(args.package)
    import fastfool as new
    wl = {"old": workloads(old), "new": workloads(new)}
    rows = []
    print(f"{'workload':<28}{'old ms':>10}{'new ms':>10}{'old/new':>9}  [quartiles]")
    for name in wl["new"]:
        if args.only and not any(name.startswith(o) for o in args.only.split(",")):
            continue
        times = paired({k: wl[k][name] for k in wl}, args.pairs)
        r = np.array(times["old"]) / np.array(times["new"])
        row = {"workload": name, "old_ms": 1e3 * float(np.median(times["old"])),
               "new_ms": 1e3 * float(np.median(times["new"])), "ratio": float(np.median(r)),
               "q25": float(np.percentile(r, 25)), "q75": float(np.percentile(r, 75))}
        rows.append(row)
        print(f"{name:<28}{row['old_ms']:>10.2f}{row['new_ms']:>10.2f}{row['ratio']:>9.3f}  "
              f"[{row['q25']:.3f}, {row['q75']:.3f}]")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
