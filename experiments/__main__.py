"""``python -m experiments``: see :mod:`experiments`."""

import sys

from experiments.cli import main

sys.exit(main())
