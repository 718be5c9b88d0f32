"""A/B of the AVX-512 table against the AVX2 table in one process (fastfool.set_simd), on the
kernels and attacks the peer table measures. The two paths give the same bits (checked here per
workload), so the ratio is the instruction set's alone. Rounds alternate the paths (A B B A ...),
median of the repeats after a warm-up; the machine is shared and noisy: read the ratios.

    python bench/avx512_ab.py [--repeats 7] [--threads 2] [--json bench/results/avx512-ab.json]

Skips with a message on a CPU without AVX-512.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import numpy as np

import fastfool as ff
from fastfool import kernels as K

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _util import header, write_json  # noqa: E402


def workloads(threads: int):
    rng = np.random.default_rng(0)
    out = []

    def add(name, fn):
        out.append((name, fn))

    # products
    A = rng.standard_normal((2000, 1024)).astype(np.float32)
    B = (rng.standard_normal((512, 1024)) / 32).astype(np.float32)
    add("scores f32 2000x1024 -> 512 (GEMM)", lambda: K.scores(A, B, threads=threads))
    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    add("scores f64 2000x1024 -> 512 (GEMM)", lambda: K.scores(A64, B64, threads=threads))
    Xm = rng.uniform(0, 1, (20000, 784)).astype(np.float32)
    ym = rng.integers(0, 10, 20000)
    Wm = [(rng.standard_normal((784, 50)) / 28).astype(np.float32),
          (rng.standard_normal((50, 20)) / 7).astype(np.float32),
          (rng.standard_normal((20, 10)) / 4).astype(np.float32)]
    bm = [np.zeros(50, np.float32), np.zeros(20, np.float32), np.zeros(10, np.float32)]
    add("ce_grad_mlp f32 20k x 784-50-20-10 tanh",
        lambda: K.ce_grad_mlp(Xm, Wm, bm, ["tanh", "tanh", "identity"], ym, threads=threads))
    # digits-shape models (the lane path)
    Xd = rng.uniform(0, 1, (20000, 64)).astype(np.float32)
    yd = rng.integers(0, 10, 20000)
    Wl = (rng.standard_normal((10, 64)) / 8).astype(np.float32)
    bl = np.zeros(10, np.float32)
    add("ce_step_linear f32 20k x 64->10, 10 steps",
        lambda: K.ce_step_linear(Xd, Wl, bl, yd, Xd, step=0.01, eps=0.1, clip=(0, 1), steps=10,
                                 threads=threads))
    Wd = [(rng.standard_normal((64, 50)) / 8).astype(np.float32),
          (rng.standard_normal((50, 20)) / 7).astype(np.float32),
          (rng.standard_normal((20, 10)) / 4).astype(np.float32)]
    bd = [np.zeros(50, np.float32), np.zeros(20, np.float32), np.zeros(10, np.float32)]
    add("ce_step_mlp f32 20k x 64-50-20-10 tanh, 10 steps",
        lambda: K.ce_step_mlp(Xd, Wd, bd, ["tanh", "tanh", "identity"], yd, Xd, step=0.01,
                              eps=0.1, clip=(0, 1), steps=10, threads=threads))
    # vector maths
    v = rng.uniform(-20, 20, 1 << 20).astype(np.float32)
    add("vmath exp f32 1M", lambda: ff._core.vmath("exp", v))
    add("vmath tanh f32 1M", lambda: ff._core.vmath("tanh", v))
    v64 = v.astype(np.float64)
    add("vmath exp f64 1M", lambda: ff._core.vmath("exp", v64))
    # whole attacks on fitted scikit-learn models (digits)
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr = LogisticRegression(max_iter=300).fit(X, y)
        mlp = MLPClassifier((50, 20), activation="tanh", max_iter=200, random_state=0).fit(X, y)
    Xb = np.tile(X, (11, 1))[:20000].astype(np.float32)
    yb = np.tile(y, 11)[:20000]
    mlr = ff.from_sklearn(lr, dtype=np.float32)
    mmlp = ff.from_sklearn(mlp, dtype=np.float32)
    add("PGD-10 digits LR (20k rows, f32)",
        lambda: ff.pgd(mlr, Xb, yb, eps=0.05, steps=10, random_start=False, clip=(0, 1),
                       threads=threads).x_adv)
    add("PGD-10 digits MLP 64-50-20-10 (20k rows, f32)",
        lambda: ff.pgd(mmlp, Xb, yb, eps=0.05, steps=10, random_start=False, clip=(0, 1),
                       threads=threads).x_adv)
    add("DeepFool digits MLP (2k rows, f64)",
        lambda: ff.deepfool(ff.from_sklearn(mlp), X[:2000] if len(X) >= 2000 else X,
                            threads=threads).x_adv)
    return out


def timed(fn, path):
    ff.set_simd(path)
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if ff._core.detected_simd() != "avx512":
        print(f"no AVX-512 on this CPU (detected {ff._core.detected_simd()!r}): nothing to compare")
        return 0
    rows = []
    for name, fn in workloads(a.threads):
        ta, tb = [], []
        ra = timed(fn, "avx2")[1]
        rb = timed(fn, "avx512")[1]  # warm-up, and the bit check
        ra = ra if isinstance(ra, tuple) else (ra,)
        rb = rb if isinstance(rb, tuple) else (rb,)
        same = all(np.array_equal(np.asarray(x), np.asarray(z), equal_nan=True)
                   for x, z in zip(ra, rb))
        for i in range(a.repeats):
            order = ("avx2", "avx512") if i % 2 == 0 else ("avx512", "avx2")
            for p in order:
                (ta if p == "avx2" else tb).append(timed(fn, p)[0])
        ma, mb = statistics.median(ta), statistics.median(tb)
        rows.append({"workload": name, "avx2_ms": ma * 1e3, "avx512_ms": mb * 1e3,
                     "speedup": ma / mb, "same_bits": same})
        print(f"{name:52s} avx2 {ma * 1e3:9.2f} ms  avx512 {mb * 1e3:9.2f} ms  "
              f"x{ma / mb:5.2f}  same bits: {same}", flush=True)
    ff.set_simd("auto")
    if a.json:
        import platform
        cpu = "unknown"
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                           cpu)
        except OSError:
            pass
        write_json(a.json, {**header(cpu=cpu, threads=a.threads, repeats=a.repeats,
                                     python=platform.python_version()), "rows": rows})
    return 0 if all(r["same_bits"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
