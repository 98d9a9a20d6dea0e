"""Alias of ``python -m experiments`` (the experiments are their own top-level package)."""

import sys

from experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
