"""Minimum-norm attacks on the digits MLPs (issue 19): fastfool's FAB, FMN, DDN, C&W (L2, its
default 1000 steps x 9 constants) and DeepFool against torchattacks' FAB, in one run: per
attack the success rate, the median perturbation norm over the rows every attack fooled, and
the time. FAB-T: fastfool's FAB targeted at each of the 9 most likely other classes in turn,
the closest point kept (AutoAttack's variant, 9 runs of ``--steps``). FMN-DDN: FMN started
from DDN's point (``init="ddn"``).

    python bench/minnorm_peers.py [--json bench/results/minnorm.json] [--no-peer] [--steps 100]

Models: MLPClassifier 64-50-20-10 tanh and 64-64-10 relu on digits (every third row held out:
599 rows, the rows each model gets right), float32, 2 threads; clip [0, 1]; L-inf, L2 and L1
(torchattacks' FAB: L-inf and L2; its ``eps`` set to 100 so that it returns its closest point
whatever the norm). Every x_adv is judged by the estimator's own predict.
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

_ORD = {"inf": np.inf, "2": 2, "1": 1}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-peer", action="store_true", help="fastfool only")
    ap.add_argument("--steps", type=int, default=100)
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
    ms, X0, y0 = models()
    rows = []
    for name, est in ms:
        ok = est.predict(X0) == y0
        X, y = X0[ok], y0[ok]
        m = ff.from_sklearn(est, dtype=np.float32)
        for norm in ("inf", "2", "1"):
            nn_ = {"inf": "inf", "2": 2, "1": 1}[norm]
            runs = {}

            def run(label, f):
                t0 = time.perf_counter()
                xa = f()
                sec = time.perf_counter() - t0
                xa = np.clip(np.asarray(xa, np.float32), 0, 1)
                fooled = est.predict(xa) != y
                dist = np.linalg.norm((xa - X).astype(np.float64), _ORD[norm], axis=1)
                runs[label] = (fooled, dist, sec)
            run("ff.fab", lambda: ff.fab(m, X, y, norm=nn_, steps=args.steps, clip=(0, 1),
                                         threads=2).x_adv)
            # FAB-T: the targeted runs toward the 9 most likely other classes, the closest kept
            run("ff.fab-t", lambda: ff.fab(m, X, y, norm=nn_, steps=args.steps, n_targets=9,
                                           clip=(0, 1), threads=2).x_adv)
            run("ff.fmn", lambda: ff.fmn(m, X, y, norm=nn_, steps=args.steps, clip=(0, 1),
                                         threads=2).x_adv)
            # FMN refining DDN's point (init="ddn": DDN's steps, then FMN's; the time is both)
            run("ff.fmn-ddn", lambda: ff.fmn(m, X, y, norm=nn_, steps=args.steps, clip=(0, 1),
                                             init="ddn", threads=2).x_adv)
            if norm == "2":
                run("ff.ddn", lambda: ff.ddn(m, X, y, steps=args.steps, clip=(0, 1),
                                             threads=2).x_adv)
                run("ff.cw", lambda: ff.cw(m, X, y, clip=(0, 1), threads=2).x_adv)
            if norm != "1":
                run("ff.deepfool", lambda: ff.deepfool(m, X, y, norm=nn_, clip=(0, 1),
                                                       threads=2).x_adv)
                if ta is not None:
                    net = torch_net(est)
                    xt, yt = torch.tensor(X).reshape(-1, 1, 8, 8), torch.tensor(y)
                    atk = ta.FAB(net, norm="Linf" if norm == "inf" else "L2", eps=100.0,
                                 steps=args.steps, n_restarts=1, n_classes=10, seed=0)
                    run("torchattacks.FAB",
                        lambda: atk(xt, yt).detach().numpy().reshape(len(X), -1))
            every = np.logical_and.reduce([f for f, _, _ in runs.values()])
            line = f"{name:18s} L{norm:3s} rows {len(X)} (all fooled by all: {every.sum()}):"
            res = {}
            for label, (fooled, dist, sec) in runs.items():
                med = float(np.median(dist[every])) if every.any() else float("nan")
                res[label] = dict(success=float(fooled.mean()), median=med, seconds=sec)
                line += f"  {label} {fooled.mean():.3f} med {med:.4f} {sec:.2f} s;"
            print(line, flush=True)
            rows.append(dict(model=name, norm=norm, rows=int(len(X)), common=int(every.sum()),
                             attacks=res))
    if args.json:
        write_json(args.json, {**meta, "steps": args.steps, "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
