"""``python -m leakcheck``: the command line, in :mod:`leakcheck.remote.cli`."""

import sys

from .remote.cli import main

if __name__ == "__main__":
    sys.exit(main())
