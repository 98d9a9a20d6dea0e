#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh), then lints and runs the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k sharding`; the tests run in
# one worker process per core, at most 4 (pytest-xdist); `-n 0` runs them in this process.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
venv="${VENV:-$repo/.venv}"
cd "$repo"
"$venv/bin/ruff" check .
# pytest exits 5 when it collects no test; that fails this script too. The 25 slowest tests
# close the log, to keep the suite's time (2 cores, ~15 min) in view.
"$venv/bin/python" -m pytest -n auto --maxprocesses 4 --durations=25 "$@"
