"""fastfool micro-benchmarks from a source checkout: python bench/run.py [--quick] [--json out.json]
[--scaling] ... (the options of `fastfool bench`, whose code is the installed fastfool.bench),
with the checkout's git commit recorded in the table and the JSON."""

import subprocess
import sys
from pathlib import Path

from fastfool.bench import main


def checkout_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent)
    except OSError:
        return None
    return out.stdout.strip() or None


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--commit" not in argv:
        argv += ["--commit", checkout_commit() or "unknown"]
    sys.exit(main(argv))
