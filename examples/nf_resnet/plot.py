"""Alias of ``python -m examples.common.plot`` (plots the curves of training runs)."""

import sys

from examples.common.plot import main

if __name__ == "__main__":
    sys.exit(main())
