"""``python -m experiments list|run NAME|report NAME``: see :mod:`experiments`."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence

import experiments
from experiments.catalog import EXPERIMENTS
from experiments.report import DEFAULT_FIGURES_DIR, report_experiment
from experiments.runner import DEFAULT_RUNS_DIR, run_experiment


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser, one subcommand per action."""
    parser = argparse.ArgumentParser(prog="python -m experiments",
                                     description=experiments.__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the experiments and their runs")
    for name in ("run", "report"):
        sub = commands.add_parser(name, help=f"{name} an experiment")
        sub.add_argument("experiment", choices=sorted(EXPERIMENTS))
        sub.add_argument("--runs-dir", type=pathlib.Path, default=DEFAULT_RUNS_DIR)
        sub.add_argument("--figures-dir", type=pathlib.Path, default=DEFAULT_FIGURES_DIR)
        if name == "run":
            sub.add_argument("--only", nargs="*", default=(),
                             help="run only these runs (all their seeds) or trials")
            sub.add_argument("--seeds", nargs="*", type=int, default=(),
                             help="run only the trials of these seeds")
            sub.add_argument("--dry-run", action="store_true", help="print, run nothing")
            sub.add_argument("--no-report", action="store_true",
                             help="do not regenerate the figures afterwards")
    return parser


def list_experiments() -> None:
    """Prints every experiment, its runs and their flags."""
    for name, experiment in EXPERIMENTS.items():
        seeds = "" if experiment.seeds == (0,) else f" [seeds {experiment.seeds}]"
        print(f"{name} ({experiment.trainer}){seeds}: {experiment.question}")
        for run in experiment.runs:
            print(f"    {run.name}: {' '.join(run.flags)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (1 when a run failed, 2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        list_experiments()
        return 0
    experiment = EXPERIMENTS[args.experiment]
    if args.command == "run":
        try:
            outcome = run_experiment(experiment, args.runs_dir, args.only,
                                     dry_run=args.dry_run, seeds=args.seeds)
        except ValueError as error:  # An unknown name or seed, or a refused stored run.
            print(f"{parser.prog} run: error: {error}", file=sys.stderr)
            return 2
        print(json.dumps(outcome, indent=1))
        if args.dry_run or args.no_report or not {"done", "ran"} & set(outcome.values()):
            return 1 if "failed" in outcome.values() else 0
    for path in report_experiment(experiment, args.runs_dir, args.figures_dir):
        print(f"wrote {path}")
    return 1 if args.command == "run" and "failed" in outcome.values() else 0


if __name__ == "__main__":
    sys.exit(main())
