"""fastfool micro-benchmarks: each kernel against a careful NumPy baseline in the same run.

    fastfool bench [--quick] [--json out.json] [--threads 2] [--only scoring,ce] [--scaling]
    python bench/run.py ...   (the same, from a source checkout, recording its git commit)

An optional module of the installed package, so that users can measure fastfool on their own
machine; it never calls git (the checkout's runner, bench/run.py, passes --commit). The other
benchmarks (peers, A/B of builds, GPU) live in bench/ only.

Prints a table (fastfool and its baseline timed in alternating rounds of back-to-back calls
after a warm-up, medians; ratio = baseline / fastfool, so > 1 means fastfool is faster) and the
machine's ceilings measured in the same run (numpy.matmul GFLOP/s on a large square product,
copy bandwidth).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

import fastfool as ff
from fastfool import kernels as K


def median_time(fn, repeats, warmup=1, settle=0.25):
    """Median wall time of `repeats` calls after `warmup` calls. Sleeps `settle` seconds first:
    OpenBLAS worker threads keep spinning for a while after a BLAS call and would otherwise steal
    the cores from whichever code is timed next (fastfool or NumPy alike)."""
    time.sleep(settle)
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def paired_times(fn_a, fn_b, repeats, settle=0.25, rounds=4, warmup_s=0.05, min_block_s=0.1):
    """Steady-state medians of fn_a and fn_b measured in alternating rounds (a block of a's,
    then a block of b's, `rounds` times). Each block: settle, warm-up calls for at least
    `warmup_s` seconds (at least one), then back-to-back timed calls: about repeats / rounds of
    them, more for short calls so that a block lasts about `min_block_s` (a 1 ms row gets ~100
    samples instead of 4, which steadies its median on the shared machine). Alternating rounds
    spread the machine's drift over both sides; back-to-back calls measure what an attack loop
    sees (after a pause the first calls run slower: idle cores, sleeping thread pools). Four
    rounds: the host's slow phases last seconds, and two long blocks per side let one phase
    land on one side (the same PGD call measured 33 and 39 ms in adjacent rows of one run).
    Returns (median a, median b, median b / median a)."""
    ta, tb = [], []
    per = max(1, -(-repeats // rounds))
    for _ in range(rounds):
        for fn, ts in ((fn_a, ta), (fn_b, tb)):
            time.sleep(settle)  # OpenBLAS threads spin ~0.1 s after a BLAS call
            start = time.perf_counter()
            fn()
            calls = 1
            while time.perf_counter() < start + warmup_s:  # idle cores clock down in the settle
                fn()
                calls += 1
            each = (time.perf_counter() - start) / calls
            n = max(per, min(200, int(min_block_s / max(each, 1e-9))))
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
    a, b = statistics.median(ta), statistics.median(tb)
    return a, b, b / a


def set_blas_threads(n):
    """Give NumPy's BLAS the same thread count as fastfool (threadpoolctl when installed)."""
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(n)
    except ImportError:
        return None


def ceilings(quick, repeats):
    n = 1024 if quick else 2048
    out = {}
    for dt in (np.float32, np.float64):
        a = np.random.default_rng(0).standard_normal((n, n)).astype(dt)
        t = median_time(lambda: a @ a, repeats)
        out[f"matmul_{np.dtype(dt).name}_gflops"] = 2 * n**3 / t / 1e9
    buf = np.ones(64 * 2**20 // 8 if quick else 256 * 2**20 // 8)
    dst = np.empty_like(buf)
    t = median_time(lambda: np.copyto(dst, buf), repeats)
    out["copy_GBps"] = 2 * buf.nbytes / t / 1e9  # read + write
    return out


def numpy_softmax(S):
    S = S - S.max(axis=1, keepdims=True)
    np.exp(S, out=S)
    S /= S.sum(axis=1, keepdims=True)
    return S


_ACT = {"tanh": (np.tanh, lambda h: 1 - h * h),
        "relu": (lambda z: np.maximum(z, 0), lambda h: (h > 0).astype(h.dtype))}


def numpy_mlp_grad(x, Ws, bs, y, act):
    """The NumPy baseline of the MLP cross-entropy input gradient (forward, then back-prop)."""
    fn, dfn = _ACT[act]
    hs = [x]
    for W, b in zip(Ws[:-1], bs[:-1]):
        hs.append(fn(hs[-1] @ W + b))
    P = numpy_softmax(hs[-1] @ Ws[-1] + bs[-1])
    P[np.arange(len(y)), y] -= 1
    d = P
    for i in range(len(Ws) - 1, 0, -1):
        d = (d @ Ws[i].T) * dfn(hs[i])
    return d @ Ws[0].T


def numpy_ce_grad(X, W, b, y):
    P = numpy_softmax(X @ W.T + b)
    loss = -np.log(P[np.arange(len(y)), y])
    P[np.arange(len(y)), y] -= 1
    return P @ W, loss


def workloads(quick):
    """(name, shape text, dtype, flops or None, fastfool fn, baseline fn, baseline name)."""
    rng = np.random.default_rng(1)
    rows = []

    def scoring(N, D, C, dt, tag=""):
        X = rng.standard_normal((N, D), dtype=np.float32).astype(dt)
        W = (rng.standard_normal((C, D), dtype=np.float32) / np.sqrt(D)).astype(dt)
        b = np.zeros(C, dt)
        out = np.empty((N, C), dt)
        fl = 2 * N * D * C
        shape = f"N={N} D={D} C={C}"
        rows.append(("scoring" + tag, shape, dt, fl,
                     lambda t: K.scores(X, W, b, out=out, threads=t),
                     lambda: np.matmul(X, W.T, out=out), "numpy.matmul"))
        if dt == np.float32:
            rows.append(("scoring+softmax" + tag, shape, dt, fl,
                         lambda t: K.scores(X, W, b, epilogue="softmax", out=out, threads=t),
                         lambda: np.matmul(X, W.T, out=out), "numpy.matmul alone"))

    if quick:
        scoring(512, 3072, 256, np.float32)
        scoring(512, 3072, 256, np.float64)
    else:
        scoring(4096, 12288, 1000, np.float32)
        scoring(2048, 12288, 1000, np.float64)

    def ce(N, D, C, dt):
        X = rng.standard_normal((N, D), dtype=np.float32).astype(dt)
        W = (rng.standard_normal((C, D), dtype=np.float32) / np.sqrt(D)).astype(dt)
        b = np.zeros(C, dt)
        y = rng.integers(0, C, N)
        G = K.empty(X.shape, dt)  # cache-line aligned: large gradients are streamed out
        rows.append(("ce_grad_linear", f"N={N} D={D} C={C}", dt, 4 * N * D * C,
                     lambda t: K.ce_grad_linear(X, W, b, y, out=G, threads=t),
                     lambda: numpy_ce_grad(X, W, b, y), "numpy reference"))

    ce(20000 if quick else 200000, 784, 10, np.float32)
    ce(1797 if quick else 17970, 64, 10, np.float32)

    def mlp(N, sizes, act, dt):
        Ws = [(rng.standard_normal((a, c)) / np.sqrt(a)).astype(dt) for a, c in zip(sizes, sizes[1:])]
        bs = [np.zeros(c, dt) for c in sizes[1:]]
        acts = [act] * (len(Ws) - 1) + ["identity"]
        X = rng.standard_normal((N, sizes[0])).astype(dt)
        y = rng.integers(0, sizes[-1], N)
        def numpy_grad():
            return numpy_mlp_grad(X, Ws, bs, y, act)

        fl = 4 * N * sum(a * c for a, c in zip(sizes, sizes[1:]))
        rows.append((f"ce_grad_mlp {act}", f"N={N} {'-'.join(map(str, sizes))}", dt, fl,
                     lambda t: K.ce_grad_mlp(X, Ws, bs, acts, y, threads=t),
                     numpy_grad, "numpy reference"))

    mlp(2000 if quick else 20000, [64, 50, 20, 10], "tanh", np.float32)

    def backproj(N, sizes, dt):
        Ps = [(rng.standard_normal((c, a)) / np.sqrt(c)).astype(dt) for a, c in zip(sizes, sizes[1:])][::-1]
        H = rng.standard_normal((N, sizes[-1])).astype(dt)
        fl = 2 * N * sum(a * c for a, c in zip(sizes, sizes[1:]))

        def numpy_bp():
            h = H
            for P in Ps:
                h = h @ P
            return h

        rows.append(("backproject", f"N={N} {'-'.join(map(str, sizes))}", dt, fl,
                     lambda t: K.backproject(H, Ps, None, "identity", threads=t),
                     numpy_bp, "numpy matmul chain"))

    backproj(10000 if quick else 100000, [784, 50, 20, 2], np.float32)

    def fgsm_linear(N, D, C, dt):
        X = rng.uniform(0, 1, (N, D)).astype(dt)
        W = (rng.standard_normal((C, D)) / np.sqrt(D)).astype(dt)
        b = np.zeros(C, dt)
        y = rng.integers(0, C, N)
        m = ff.LinearModel(W, b)

        def ours(t):  # the fused gradient + step kernel, as ff.fgsm runs it
            return m.fused_step(X, y, X, t, None, step=0.03, eps=0.03, clip=(0.0, 1.0))

        def numpy_fgsm():
            G, _ = numpy_ce_grad(X, W, b, y)
            return np.clip(X + 0.03 * np.sign(G), 0, 1)

        rows.append(("fgsm linear", f"N={N} D={D} C={C}", dt, 4 * N * D * C, ours, numpy_fgsm,
                     "numpy FGSM (2 matmuls + epilogues)"))

    fgsm_linear(256 if quick else 2000, 3072 if quick else 12288, 100 if quick else 1000, np.float32)

    def pgd_mlp(N, sizes, act, dt):
        Ws = [(rng.standard_normal((a, c)) * (1.5 / np.sqrt(a))).astype(dt) for a, c in zip(sizes, sizes[1:])]
        bs = [(rng.standard_normal(c) * 0.1).astype(dt) for c in sizes[1:]]
        m = ff.MLP(Ws, bs, activation=act)
        X = rng.uniform(0, 1, (N, sizes[0])).astype(dt)
        y = rng.integers(0, sizes[-1], N)
        eps, alpha, steps = 0.1, 0.025, 10
        def numpy_pgd():
            x = X.copy()
            for _ in range(steps):
                g = numpy_mlp_grad(x, Ws, bs, y, act)
                x = np.clip(np.clip(x + alpha * np.sign(g), X - eps, X + eps), 0, 1)
            return x

        fl = 4 * N * steps * sum(a * c for a, c in zip(sizes, sizes[1:]))
        shape = f"N={N} {'-'.join(map(str, sizes))}"
        def ours(t):
            return ff.pgd(m, X, y, eps=eps, steps=steps, step_size=alpha, random_start=False,
                          clip=(0, 1), threads=t)
        rows.append((f"pgd-10 mlp {act}", shape, dt, fl, ours, numpy_pgd, "numpy reference"))
        import importlib.util
        if importlib.util.find_spec("torch") is None:
            return

        # Built at the first call, not here: once torch has run an operation its OpenMP threads
        # keep a core busy and every row timed afterwards (fastfool or NumPy) runs up to 2x
        # slower (measured: the 200k x 784 x 10 CE gradient went from 105 to 220 ms). This row
        # runs last.
        state = {}

        def torch_setup():
            import torch
            torch.set_num_threads(max(1, ff.get_threads()))
            layers = []
            for i, (W, b) in enumerate(zip(Ws, bs)):
                lin = torch.nn.Linear(W.shape[0], W.shape[1])
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
                    lin.bias.copy_(torch.from_numpy(b))
                layers.append(lin)
                if i < len(Ws) - 1:
                    layers.append(torch.nn.Tanh())
            state.update(net=torch.nn.Sequential(*layers), Xt=torch.from_numpy(X),
                         yt=torch.from_numpy(y))

        def torch_pgd():
            import torch
            if not state:
                torch_setup()
            net, Xt, yt = state["net"], state["Xt"], state["yt"]
            x = Xt.clone()
            for _ in range(steps):
                x.requires_grad_(True)
                loss = torch.nn.functional.cross_entropy(net(x), yt, reduction="sum")
                (g,) = torch.autograd.grad(loss, x)
                with torch.no_grad():
                    x = torch.clamp(torch.min(torch.max(x + alpha * g.sign(), Xt - eps), Xt + eps), 0, 1)
            return x

        rows.append((f"pgd-10 mlp {act}", shape, dt, fl, ours, torch_pgd, "torch 2.13 autograd"))

    pgd_mlp(2000 if quick else 20000, [64, 50, 20, 10], "tanh", np.float32)
    return rows


_MEMORY_CHILD = r"""
import sys, numpy as np, fastfool as ff

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])  # KiB

N, D = 200000, 784
rng = np.random.default_rng(0)
sizes = [784, 50, 20, 10]
m = ff.MLP([rng.standard_normal((a, c)).astype(np.float32) / np.sqrt(a) for a, c in zip(sizes, sizes[1:])],
           None, activation="tanh", dtype=np.float32)
X = rng.random((N, D), dtype=np.float32)  # no float64 temporary: maxrss must start at the inputs
y = rng.integers(0, 10, N)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current RSS: what the inputs already hold
base = status("VmRSS:")
res = ff.pgd(m, X, y, eps=0.1, steps=10, seed=0, clip=(0, 1), threads=int(sys.argv[1]))
peak = status("VmHWM:")
print(base, peak, res.x_adv.nbytes)
"""


def memory_row(threads):
    """Peak RSS of a PGD run in a fresh process, above what its inputs already hold (Linux:
    /proc/self/clear_refs resets the high-water mark after the inputs are built)."""
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(threads)], capture_output=True,
                         text=True, check=True).stdout.split()
    base_kib, peak_kib, out_bytes = int(out[0]), int(out[1]), int(out[2])
    outputs = out_bytes / 2**20 + 200000 * 8 * 6 / 2**20  # x_adv + per-row result arrays
    return {"workload": "memory pgd-10", "shape": "N=200000 D=784", "dtype": "float32",
            "threads": threads, "peak_above_inputs_mib": (peak_kib - base_kib) / 1024,
            "outputs_mib": outputs, "budget_mib": outputs + 64}


def _positive_int(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if not 1 <= n <= 10**6:
        raise argparse.ArgumentTypeError(f"expected a whole number in [1, 1000000], got {n}")
    return n


def add_arguments(ap):
    """The benchmark options (shared by `fastfool bench` and bench/run.py)."""
    ap.add_argument("--quick", action="store_true", help="small shapes, 3 repeats (CI smoke run)")
    ap.add_argument("--threads", type=_positive_int, default=ff.get_threads())
    ap.add_argument("--repeats", type=_positive_int, default=None)
    ap.add_argument("--json", default=None, help="write the results to this file")
    ap.add_argument("--only", default=None,
                    help="comma-separated workload name prefixes to run ('memory' for the RSS row)")
    ap.add_argument("--scaling", action="store_true", help="also time GEMM rows on 1 thread")
    ap.add_argument("--commit", default=None,
                    help="the source commit to record (bench/run.py passes the checkout's)")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="fastfool bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        return run(args)
    except ValueError as exc:  # a user mistake: one line, exit 2 (as the fastfool command)
        print(f"fastfool bench: error: {exc}", file=sys.stderr)
        return 2


def run(args):
    only = args.only.split(",") if args.only else None
    if only:  # before any timing or allocation: a typo should cost nothing (quick rows: same names)
        names = {w[0] for w in workloads(True)} | {"memory"}
        unknown = [o for o in only if not any(n.startswith(o) for n in names)]
        if unknown:
            raise ValueError(f"--only: no workload starts with {', '.join(map(repr, unknown))}; "
                             f"choose from {', '.join(sorted(names))}")
    rows = workloads(args.quick)
    repeats = args.repeats or (3 if args.quick else 7)
    limit = set_blas_threads(args.threads)
    ceil = ceilings(args.quick, repeats)
    print(f"fastfool {ff.__version__}  simd={ff.get_simd()}  threads={args.threads}  "
          f"commit={args.commit}  {platform.processor() or platform.machine()}")
    print("ceilings: " + "  ".join(f"{k}={v:.1f}" for k, v in ceil.items()))
    hdr = (f"{'workload':<22}{'shape':<28}{'dtype':<9}{'fastfool ms':>12}{'baseline ms':>12}"
           f"{'ratio':>8}{'GFLOP/s':>9}  baseline")
    print(hdr)
    print("-" * len(hdr))
    results = []

    for name, shape, dt, fl, ours, base, base_name in rows:
        if only and not any(name.startswith(o) for o in only):
            continue
        extra_one = args.scaling and args.threads != 1 and name.startswith("scoring")
        thread_list = [args.threads] + ([1] if extra_one else [])
        for t in thread_list:
            if t != args.threads:
                set_blas_threads(t)
            t_ours, t_base, ratio = paired_times(lambda: ours(t), base, repeats)
            if t != args.threads:
                set_blas_threads(args.threads)
            row = {"workload": name, "shape": shape, "dtype": np.dtype(dt).name, "threads": t,
                   "fastfool_s": t_ours, "baseline_s": t_base, "baseline": base_name,
                   "ratio": ratio, "gflops": fl / t_ours / 1e9 if fl else None}
            results.append(row)
            print(f"{name:<22}{shape:<28}{row['dtype']:<9}{t_ours * 1e3:>12.2f}{t_base * 1e3:>12.2f}"
                  f"{row['ratio']:>8.2f}{(row['gflops'] or 0):>9.1f}  {base_name}"
                  + (f" (t={t})" if t != args.threads else ""))
    if not args.quick and (not only or "memory" in only):
        mem = memory_row(args.threads)
        results.append(mem)
        print(f"memory: PGD-10 over N=200000 D=784 (784-50-20-10 tanh): peak RSS above inputs "
              f"{mem['peak_above_inputs_mib']:.0f} MiB; outputs {mem['outputs_mib']:.0f} MiB + 64 MiB "
              f"budget = {mem['budget_mib']:.0f} MiB")
    if args.json:
        doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": args.commit,
               "version": ff.__version__,
               "machine": platform.platform(), "cpu_count": os.cpu_count(), "simd": ff.simd_info(),
               "threads": args.threads, "repeats": repeats, "quick": args.quick,
               "ceilings": ceil, "results": results}
        tmp = f"{args.json}.tmp{os.getpid()}"  # a failed write leaves the previous file whole
        try:
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=2, default=str)
            os.replace(tmp, args.json)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        print(f"wrote {args.json}")
    del limit
    return 0


if __name__ == "__main__":
    sys.exit(main())
