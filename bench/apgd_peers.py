"""fastfool's APGD against torchattacks' APGD / APGD-T on the same digits MLPs (issue 19): robust
accuracy and time, in one run.

    python bench/apgd_peers.py [--steps 100] [--json bench/results/apgd.json]

Models: MLPClassifier 64-50-20-10 tanh and 64-64-10 relu on digits (every third row held out:
599 rows attacked), float32, 2 threads; L-inf, clip [0, 1], eps 0.05 and 0.1. Robust accuracy:
rows the estimator still classifies correctly (torchattacks' x_adv judged by the same
estimator's predict). torchattacks starts from a random point of the ball, fastfool from X
(restarts=1): the runs are the same algorithm, not the same iterates.
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


def models():
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    tr = np.arange(len(X)) % 3 != 0
    out = []
    for name, hidden, act in (("64-50-20-10 tanh", (50, 20), "tanh"), ("64-64-10 relu", (64,), "relu")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = MLPClassifier(hidden, activation=act, max_iter=300, random_state=0).fit(X[tr], y[tr])
        out.append((name, est))
    return out, X[~tr].astype(np.float32), y[~tr]


def torch_net(est):
    import torch
    from torch import nn
    layers = [nn.Flatten()]  # torchattacks' APGD takes image batches (N, C, H, W)
    for i, (W, b) in enumerate(zip(est.coefs_, est.intercepts_)):
        lin = nn.Linear(*W.shape)
        lin.weight.data = torch.tensor(W.T, dtype=torch.float32)
        lin.bias.data = torch.tensor(b, dtype=torch.float32)
        layers.append(lin)
        if i < len(est.coefs_) - 1:
            layers.append(nn.Tanh() if est.activation == "tanh" else nn.ReLU())
    return nn.Sequential(*layers).eval()


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    meta = header()
    print(f"# {meta['date']} {meta['machine']} {meta['cpus']} CPUs, commit {meta['commit']}")
    try:
        import torch
        import torchattacks
        torch.set_num_threads(2)
    except ImportError:
        torchattacks = None
    ms, X, y = models()
    rows = []
    print(f"{'model':18s} {'eps':>5s} {'attack':14s} {'robust acc':>10s} {'seconds':>8s}")
    for name, est in ms:
        m = ff.from_sklearn(est, dtype=np.float32)
        clean = float(np.mean(est.predict(X) == y))
        net = torch_net(est) if torchattacks is not None else None
        for eps in (0.05, 0.1):
            runs = {
                "ff APGD-CE": lambda: ff.apgd(m, X, y, eps=eps, steps=args.steps, clip=(0, 1), threads=2).x_adv,
                "ff APGD-DLR": lambda: ff.apgd(m, X, y, eps=eps, steps=args.steps, loss="dlr", clip=(0, 1),
                                               threads=2).x_adv,
                "ff APGD-T(9)": lambda: ff.apgd(m, X, y, eps=eps, steps=args.steps, loss="dlr", target=9,
                                                clip=(0, 1), threads=2).x_adv,
            }
            if net is not None:
                xt, yt = torch.tensor(X).reshape(-1, 1, 8, 8), torch.tensor(y)
                def ta(atk):
                    return atk(xt, yt).detach().numpy().reshape(len(X), -1)
                runs["ta APGD-CE"] = lambda: ta(torchattacks.APGD(net, eps=eps, steps=args.steps))
                runs["ta APGD-DLR"] = lambda: ta(torchattacks.APGD(net, eps=eps, steps=args.steps,
                                                                   loss="dlr"))
                runs["ta APGD-T(9)"] = lambda: ta(torchattacks.APGDT(net, eps=eps, steps=args.steps,
                                                                     n_classes=10))
            for what, f in runs.items():
                xa, sec = timed(f)
                assert np.abs(xa - X).max() <= eps + 1e-6
                robust = float(np.mean(est.predict(xa) == y))
                rows.append(dict(model=name, eps=eps, attack=what, clean=clean, robust=robust,
                                 seconds=sec, steps=args.steps, rows=len(X)))
                print(f"{name:18s} {eps:5.2f} {what:14s} {robust:10.4f} {sec:8.2f}")
    if args.json:
        write_json(args.json, {**meta, "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
