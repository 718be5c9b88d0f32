"""Ctrl-C latency: seconds from SIGINT to KeyboardInterrupt in long public calls, each in a fresh
process (the cases of tests/test_hardening.py, which asserts only a loose bound), and for the CLI.

    python bench/interrupt_latency.py [--repeats 5] [--json bench/results/interrupt.json]

Prints a table (median and worst of the repeats per case) and writes JSON with the machine,
date and commit."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from _util import header, write_json  # noqa: E402
from test_hardening import CLI_INTERRUPT, INTERRUPT_CASES, interrupt_latency  # noqa: E402


def cli_latency() -> float:
    """`fastfool attack` running PGD of 10**7 steps: SIGINT 4 s in, seconds to its exit (130)."""
    import tempfile

    import numpy as np

    import fastfool as ff
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        ff.save_model(ff.MLP([rng.standard_normal((64, 50)), rng.standard_normal((50, 10))],
                             activation="tanh"), f"{d}/m.npz")
        np.save(f"{d}/X.npy", rng.uniform(0, 1, (3000, 64)))
        r = subprocess.run([sys.executable, "-c", CLI_INTERRUPT, "--model", f"{d}/m.npz", "--data",
                            f"{d}/X.npy", "--attack", "pgd", "--eps", "0.1", "--steps", str(10**7)],
                           capture_output=True, text=True, timeout=120)
    rc, latency = r.stdout.split()[:2]
    if int(rc) != 130:
        raise RuntimeError(f"the CLI exited {rc}: {r.stdout}")
    return float(latency)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats: must be >= 1")
    rows = []
    print(f"{'case':<22} {'median ms':>10} {'worst ms':>10}")
    for case in [*INTERRUPT_CASES, "cli"]:
        if case == "cli":
            t = [cli_latency() for _ in range(args.repeats)]
        else:
            t = [interrupt_latency(case, delay=0.5 + 0.1 * i) for i in range(args.repeats)]
        rows.append({"case": case, "seconds": t, "median": statistics.median(t), "worst": max(t)})
        print(f"{case:<22} {1e3 * statistics.median(t):>10.1f} {1e3 * max(t):>10.1f}", flush=True)
    if args.json:
        write_json(args.json, header(results=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
