"""fastfool's AutoAttack against torchattacks' AutoAttack (standard: APGD-CE, APGD-T, FAB-T,
Square) on the same digits MLPs (issue 19): robust accuracy after each fastfool stage and in
total, time, and the rows each fools that the other misses, in one run.

    python bench/autoattack_peers.py [--json bench/results/autoattack.json] [--no-peer]

Models: MLPClassifier 64-50-20-10 tanh and 64-64-10 relu on digits (every third row held out:
599 rows), float32, 2 threads; L-inf, clip [0, 1], eps 0.05 and 0.1. Every x_adv is judged by
the estimator's own predict. Both ensembles run APGD-CE, APGD-T, FAB-T and Square; fastfool runs
twice: every stage on every row still robust (skip_certified=False, the paper's procedure) and
the default, where the rows CROWN proves robust after APGD-CE skip the later stages (checked to
give the same x_adv).

Steps: torchattacks' AutoAttack builds its APGD, APGD-T and FAB-T with their class defaults,
10 iterations each; the paper's (and fastfool's default) is 100. Both ensembles run at each of
``--steps`` (default 100 and 10), torchattacks' by setting its attacks' ``steps``, so that each
speed-up compares the same work.
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
from apgd_peers import models, torch_net  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-peer", action="store_true", help="fastfool only")
    ap.add_argument("--eps", type=float, nargs="*", default=[0.05, 0.1])
    ap.add_argument("--steps", type=int, nargs="*", default=[100, 10],
                    help="APGD / APGD-T / FAB-T iterations, both ensembles (torchattacks' own "
                         "default is 10)")
    args = ap.parse_args(argv)
    meta = header()
    print(f"# {meta['date']} {meta['machine']} {meta['cpus']} CPUs, commit {meta['commit']}")
    ta = None
    if not args.no_peer:
        try:
            import torch
            import torchattacks as ta
            torch.set_num_threads(2)
        except ImportError:
            print("# torchattacks not installed: fastfool only")
    ms, X, y = models()
    rows = []
    for name, est in ms:
        m = ff.from_sklearn(est, dtype=np.float32)
        clean = float(np.mean(est.predict(X) == y))
        for eps, steps in [(e, k) for e in args.eps for k in args.steps]:
            # the paper's ensemble on every row still robust, then with the rows CROWN proves
            # robust skipping the later stages (the default): the same rows fooled
            t0 = time.perf_counter()
            r_all = ff.autoattack(m, X, y, eps=eps, clip=(0, 1), threads=2, skip_certified=False,
                                  steps=steps)
            sec_all = time.perf_counter() - t0
            t0 = time.perf_counter()
            r = ff.autoattack(m, X, y, eps=eps, clip=(0, 1), threads=2, steps=steps)
            sec = time.perf_counter() - t0
            assert np.array_equal(r.x_adv, r_all.x_adv) and np.array_equal(r.success, r_all.success)
            assert np.abs(r.x_adv - X).max() <= eps + 1e-6
            ff_fooled = est.predict(r.x_adv) != y
            assert np.array_equal(ff_fooled, r.success)
            row = dict(model=name, eps=eps, steps=steps, clean=clean, rows=len(X),
                       ff_robust=float(1 - ff_fooled.mean()),
                       ff_seconds=sec, ff_stages=r.summary()["stages"],
                       ff_certified=int(r.extra["certified"].sum()),
                       ff_certify_seconds=float(r.extra["certify_seconds"]),
                       ff_attack_all_seconds=sec_all,
                       ff_attack_all_stages=r_all.summary()["stages"])
            line = (f"{name:18s} eps {eps:4.2f} steps {steps:3d} clean {clean:.4f}  fastfool: "
                    + ", ".join(f"{s['attack']} {s['robust_accuracy']:.4f} ({s['seconds']:.2f} s)"
                                for s in row["ff_stages"])
                    + f"  total {row['ff_robust']:.4f} in {sec:.2f} s (certified "
                    f"{row['ff_certified']} rows in {row['ff_certify_seconds']:.2f} s; every "
                    f"stage on every row: {sec_all:.2f} s)")
            if ta is not None:
                net = torch_net(est)
                xt, yt = torch.tensor(X).reshape(-1, 1, 8, 8), torch.tensor(y)
                atk = ta.AutoAttack(net, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
                for a in atk._autoattack.attacks:  # APGD, APGD-T, FAB-T (Square: queries)
                    if hasattr(a, "steps"):
                        a.steps = steps
                t0 = time.perf_counter()
                xa = atk(xt, yt).detach().numpy().reshape(len(X), -1)
                tsec = time.perf_counter() - t0
                xa = np.clip(xa, 0, 1)
                assert np.abs(xa - X).max() <= eps + 1e-6
                ta_fooled = est.predict(xa) != y
                row.update(ta_robust=float(1 - ta_fooled.mean()), ta_seconds=tsec,
                           ta_only=int(np.sum(ta_fooled & ~ff_fooled)),
                           ff_only=int(np.sum(ff_fooled & ~ta_fooled)), speedup=tsec / sec,
                           speedup_attack_all=tsec / sec_all)
                line += (f" | torchattacks {row['ta_robust']:.4f} in {tsec:.2f} s (x{tsec / sec:.1f}, "
                         f"every stage x{tsec / sec_all:.1f});"
                         f" rows only ta fools {row['ta_only']}, only ff {row['ff_only']}")
            print(line, flush=True)
            rows.append(row)
    if args.json:
        write_json(args.json, {**meta, "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
