"""fastfool against its peers on the same weights and inputs: FGSM and PGD-10 (L-inf, clip [0, 1],
no random start, step 2.5 eps / steps) timed side by side in one process, with a check that
every implementation returns the same x_adv.

    python bench/peers.py [--quick] [--repeats 5] [--threads 2] [--json bench/results/peers.json]

Implementations: fastfool (its verdict included: `success` and `pred` are the model's decisions
on x_adv), a careful NumPy reference (float32, one fused pass per step) always, and
torchattacks, Foolbox and ART (on a torch `nn.Sequential` holding the same weights) when they
are installed (`pip install torch==2.13.0`, then `pip install --no-deps torchattacks` and
`pip install foolbox eagerpy adversarial-robustness-toolbox packaging`; `--no-slow-peers`
skips the last two).
Each repeat runs the implementations in a rotated order, each timed call after --gap idle
seconds (NumPy's OpenBLAS threads, and torch's, spin after a product and take the cores from
whatever runs next: README's note; without the gap fastfool's digits FGSM read 24 ms instead
of 11); the table shows medians. "agree" is the share of rows whose x_adv is within 1e-4 of the NumPy reference
everywhere (float32 sign flips where a gradient component is ~0 move a coordinate by 2 alpha).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import fastfool as ff

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import header, write_json  # noqa: E402

HERE = Path(__file__).resolve().parent


# -- the models: (name, weights [(W (in, out), b)], activations, X, y) ----------------------------

def digits_data(rows):
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    reps = -(-rows // len(X))
    return X, y, np.tile(X, (reps, 1))[:rows], np.tile(y, reps)[:rows]


def digits_lr(rows):
    from sklearn.linear_model import LogisticRegression
    X, y, Xr, yr = digits_data(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr = LogisticRegression(max_iter=1000).fit(X, y)
    return [(lr.coef_.T.astype(np.float32), lr.intercept_.astype(np.float32))], ["identity"], Xr, yr


def digits_mlp(rows):
    from sklearn.neural_network import MLPClassifier
    X, y, Xr, yr = digits_data(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier((50, 20), activation="tanh", max_iter=300, random_state=0).fit(X, y)
    layers = [(W.astype(np.float32), b.astype(np.float32)) for W, b in zip(mlp.coefs_, mlp.intercepts_)]
    return layers, ["tanh", "tanh", "identity"], Xr, yr


def random_net(sizes, act, rows, seed=0):
    rng = np.random.default_rng(seed)
    layers = [((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
               (0.1 * rng.standard_normal(b)).astype(np.float32)) for a, b in zip(sizes, sizes[1:])]
    X = rng.uniform(0, 1, (rows, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], rows)
    return layers, [act] * (len(sizes) - 2) + ["identity"], X, y


WORKLOADS = {  # name: (builder, full rows, quick rows)
    "digits LR 64->10": (digits_lr, 20000, 5000),
    "ImageNet-64 linear 12288->1000": (lambda n: random_net([12288, 1000], "identity", n), 2000, 300),
    "digits MLP 64-50-20-10 tanh": (digits_mlp, 20000, 5000),
    "MNIST-shape 784-50-20-2-4": (lambda n: random_net([784, 50, 20, 2, 4], "identity", n), 50000, 10000),
}
ATTACKS = {"digits LR 64->10": ("fgsm", "pgd"), "ImageNet-64 linear 12288->1000": ("fgsm", "pgd"),
           "digits MLP 64-50-20-10 tanh": ("pgd",), "MNIST-shape 784-50-20-2-4": ("fgsm", "pgd")}


# -- implementations -----------------------------------------------------------------------------

def fastfool_model(layers, acts):
    if len(layers) == 1:
        W, b = layers[0]
        return ff.LinearModel(W.T.copy(), b)
    return ff.MLP([W for W, _ in layers], [b for _, b in layers], activation=acts[:-1])


def run_fastfool(model, X, y, attack, eps, steps, threads):
    if attack == "fgsm":
        return ff.fgsm(model, X, y, eps=eps, clip=(0, 1), threads=threads).x_adv
    return ff.pgd(model, X, y, eps=eps, steps=steps, random_start=False, clip=(0, 1),
                  threads=threads).x_adv


_ACT = {"identity": (lambda z: z, lambda h: 1.0), "tanh": (np.tanh, lambda h: 1.0 - h * h)}


def numpy_grad_sign(layers, acts, x, y):
    """sign of the input gradient of the softmax cross-entropy, float32 throughout."""
    hs = [x]
    for (W, b), a in zip(layers, acts):
        hs.append(_ACT[a][0](hs[-1] @ W + b))
    z = hs[-1]
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    d = p
    for i in range(len(layers) - 1, -1, -1):
        W = layers[i][0]
        d = d @ W.T
        if i:
            d = d * _ACT[acts[i - 1]][1](hs[i])
    return np.sign(d)


def run_numpy(layers, acts, X, y, attack, eps, steps):
    eps = np.float32(eps)
    if attack == "fgsm":
        return np.clip(X + eps * numpy_grad_sign(layers, acts, X, y), 0, 1)
    alpha = np.float32(2.5 * eps / steps)
    x = X.copy()
    for _ in range(steps):
        x += alpha * numpy_grad_sign(layers, acts, x, y)
        np.clip(x, X - eps, X + eps, out=x)
        np.clip(x, 0, 1, out=x)
    return x


def torch_setup(layers, acts, threads):
    try:
        import torch
        import torchattacks
    except ImportError:
        return None
    torch.set_num_threads(threads)
    mods = []
    for (W, b), a in zip(layers, acts):
        lin = torch.nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        mods.append(lin)
        if a == "tanh":
            mods.append(torch.nn.Tanh())
    net = torch.nn.Sequential(*mods).eval()
    return torch, torchattacks, net


def run_torch(setup, X, y, attack, eps, steps):
    torch, ta, net = setup
    xt, yt = torch.from_numpy(X), torch.from_numpy(np.asarray(y, np.int64))
    if attack == "fgsm":
        atk = ta.FGSM(net, eps=eps)
    else:
        atk = ta.PGD(net, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=False)
    return atk(xt, yt).numpy()


def run_foolbox(setup, X, y, attack, eps, steps):
    import foolbox as fb
    torch, _, net = setup
    fmodel = fb.PyTorchModel(net, bounds=(0, 1))
    xt, yt = torch.from_numpy(X), torch.from_numpy(np.asarray(y, np.int64))
    atk = fb.attacks.FGSM() if attack == "fgsm" else fb.attacks.LinfPGD(
        abs_stepsize=2.5 * eps / steps, steps=steps, random_start=False)
    _, adv, _ = atk(fmodel, xt, yt, epsilons=eps)
    return adv.numpy()


def run_art(setup, X, y, attack, eps, steps):
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier
    torch, _, net = setup
    n_out = [m for m in net if isinstance(m, torch.nn.Linear)][-1].out_features
    clf = PyTorchClassifier(model=net, loss=torch.nn.CrossEntropyLoss(), input_shape=(X.shape[1],),
                            nb_classes=n_out, clip_values=(0.0, 1.0), device_type="cpu")
    if attack == "fgsm":
        atk = FastGradientMethod(clf, eps=eps, batch_size=len(X))
    else:
        atk = ProjectedGradientDescent(clf, eps=eps, eps_step=2.5 * eps / steps, max_iter=steps,
                                       num_random_init=0, batch_size=len(X), verbose=False)
    return atk.generate(X, y=np.asarray(y, np.int64)).astype(np.float32)


def _have(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None


def agree(a, b, tol=1e-4):
    return float(np.mean(np.abs(a - b).max(axis=1) <= tol))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rows per workload")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eps", type=float, default=0.03)
    ap.add_argument("--only", default=None, help="workloads whose name starts with this")
    ap.add_argument("--gap", type=float, default=0.25,
                    help="idle seconds before each timed call, so that the previous "
                         "implementation's spinning BLAS/OpenMP threads have gone to sleep")
    ap.add_argument("--no-slow-peers", action="store_true", help="skip Foolbox and ART")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        ap.error("--repeats and --threads must be >= 1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    rows_out = []
    head = f"{'workload (rows)':<40} {'attack':<7} {'fastfool':>10} {'NumPy':>10} {'torchatt.':>10} " \
           f"{'Foolbox':>10} {'ART':>10} {'vs best':>8}  agree (NumPy, ta, fb, art)"
    print(head)
    for name, (build, full, quick) in WORKLOADS.items():
        if args.only and not name.startswith(args.only):
            continue
        n = quick if args.quick else full
        layers, acts, X, y = build(n)
        model = fastfool_model(layers, acts)
        setup = torch_setup(layers, acts, args.threads)
        for attack in ATTACKS[name]:
            steps = 10
            impls = {"fastfool": lambda: run_fastfool(model, X, y, attack, args.eps, steps, args.threads),
                     "numpy": lambda: run_numpy(layers, acts, X, y, attack, args.eps, steps)}
            if setup is not None:
                impls["torchattacks"] = lambda: run_torch(setup, X, y, attack, args.eps, steps)
                if _have("foolbox") and not args.no_slow_peers:
                    impls["foolbox"] = lambda: run_foolbox(setup, X, y, attack, args.eps, steps)
                if _have("art") and not args.no_slow_peers:
                    impls["art"] = lambda: run_art(setup, X, y, attack, args.eps, steps)
            outs = {k: f() for k, f in impls.items()}  # warm-up, and the x_adv compared
            times = {k: [] for k in impls}
            keys = list(impls)
            for r in range(args.repeats):
                order = keys[r % len(keys):] + keys[:r % len(keys)]
                for k in order:
                    time.sleep(args.gap)
                    t0 = time.perf_counter()
                    impls[k]()
                    times[k].append(time.perf_counter() - t0)
            med = {k: float(np.median(v)) for k, v in times.items()}
            best_peer = min(v for k, v in med.items() if k != "fastfool")
            ag = {k: agree(outs["fastfool"], outs[k]) for k in outs if k != "fastfool"}
            row = {"workload": name, "rows": n, "attack": "FGSM" if attack == "fgsm" else "PGD-10",
                   "seconds": med, "all_seconds": times, "fastfool_vs_best_peer": best_peer / med["fastfool"],
                   "agree_with_fastfool": ag}
            rows_out.append(row)
            cell = lambda k: "" if k not in med else f"{med[k] * 1e3:8.1f}ms"  # noqa: E731
            ags = " ".join(f"{ag[k]:.4f}" for k in ("numpy", "torchattacks", "foolbox", "art") if k in ag)
            print(f"{name + f' ({n})':<40} {row['attack']:<7} {cell('fastfool'):>10} {cell('numpy'):>10} "
                  f"{cell('torchattacks'):>10} {cell('foolbox'):>10} {cell('art'):>10} "
                  f"{best_peer / med['fastfool']:>7.2f}x  {ags}", flush=True)
    doc = header(threads=args.threads, eps=args.eps, quick=args.quick, fastfool=ff.__version__,
                 results=rows_out)
    for mod in ("torch", "torchattacks", "foolbox", "art"):
        if _have(mod):
            doc[mod] = getattr(__import__(mod), "__version__", "?")
    if args.json:
        write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
