"""The streaming CLI on a file several times its memory budget (issue 21): rows/s and peak
resident memory of ``fastfool attack --data big.npy --out adv.npy --memory-mb M`` against the
in-memory attack of the same rows, each in its own fresh process, in one run.

    python bench/stream_bench.py [--rows 1000000] [--memory-mb 32] [--json out.json]

Model: MLPClassifier 64-50-20-10 tanh on digits, float64; PGD L-inf eps 0.05, 10 steps;
rows: digits resampled with a little noise (float64: 512 MB at a million rows).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import fastfool as ff

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import digits_tanh_mlp, header, resampled_rows, write_json  # noqa: E402

_CHILD = """
import json, sys, time
import numpy as np
mode, model, data, out, mb = sys.argv[1:6]
t0 = time.perf_counter()
if mode == "stream":
    from fastfool import cli
    rc = cli.main(["attack", "--model", model, "--data", data, "--attack", "pgd", "--eps",
                   "0.05", "--steps", "10", "--seed", "0", "--out", out, "--memory-mb", mb,
                   "--format", "json"])
    assert rc == 0
else:
    import fastfool as ff
    m = ff.load_model(model)
    X = np.load(data)
    res = ff.pgd(m, X, eps=0.05, steps=10, seed=0)
    np.save(out, res.x_adv)
sec = time.perf_counter() - t0
# VmHWM: this process's own peak (ru_maxrss would carry the parent's across fork + exec)
hwm = [int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0]
print("RESULT", json.dumps({"seconds": sec, "peak_rss_mb": hwm / 1024}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--memory-mb", type=float, default=32.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    meta = header()
    print(f"# {meta['date']} {meta['machine']} {meta['cpus']} CPUs, commit {meta['commit']}")
    X0, y0, est = digits_tanh_mlp()
    rows = []
    with tempfile.TemporaryDirectory(dir=".") as d:
        model = os.path.join(d, "m.npz")
        ff.save_model(ff.from_sklearn(est), model)
        data = os.path.join(d, "big.npy")
        rng = np.random.default_rng(0)
        big = np.lib.format.open_memmap(data, mode="w+", dtype=np.float64, shape=(args.rows, 64))
        for a in range(0, args.rows, 100_000):
            b = min(args.rows, a + 100_000)
            big[a:b] = resampled_rows(X0, y0, b - a, rng)[0]
        big.flush()
        del big
        size_mb = os.path.getsize(data) / 2 ** 20
        print(f"data: {args.rows} rows, {size_mb:.0f} MB; streaming budget {args.memory_mb:.0f} MB")
        outs = {}
        for mode in ("memory", "stream"):
            out = os.path.join(d, f"adv-{mode}.npy")
            p = subprocess.run([sys.executable, "-c", _CHILD, mode, model, data, out,
                                str(args.memory_mb)], capture_output=True, text=True,
                               env={**os.environ, "PYTHONWARNINGS": "ignore"})
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")]
            if not line:
                print(p.stderr[-3000:])
                return 1
            r = json.loads(line[0][7:])
            r.update(mode=mode, rows_per_s=args.rows / r["seconds"])
            rows.append(r)
            outs[mode] = out
            print(f"{mode:8s} {r['seconds']:7.2f} s  {r['rows_per_s']:10,.0f} rows/s  peak RSS "
                  f"{r['peak_rss_mb']:7.0f} MB", flush=True)
        same = np.array_equal(np.load(outs["memory"], mmap_mode="r"),
                              np.load(outs["stream"], mmap_mode="r"))
        print(f"streamed x_adv equals the in-memory run: {same}")
    if args.json:
        write_json(args.json, {**meta, "rows": args.rows, "data_mb": size_mb,
                               "memory_mb": args.memory_mb, "identical": bool(same),
                               "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
