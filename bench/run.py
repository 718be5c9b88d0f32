"""fastfool micro-benchmarks (the code lives in fastfool.bench so that `fastfool bench` works
from an installed package): python bench/run.py [--quick] [--json out.json] [--scaling]"""

import sys

from fastfool.bench import main

if __name__ == "__main__":
    sys.exit(main())
