"""``python -m fastfool``: the ``fastfool`` command line (default: the digits demo)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
