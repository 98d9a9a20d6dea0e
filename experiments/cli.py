"""``python -m experiments list|run NAME|report NAME|report --all``: see :mod:`experiments`."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence

import experiments
from experiments import plot
from experiments.catalog import EXPERIMENTS, RUN_FIGURES
from experiments.paths import FIGURES_DIR, RESULTS_DIR, RUNS_DIR
from experiments.report import report_experiment
from experiments.runner import run_experiment
from experiments.spec import as_flags


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser, one subcommand per action."""
    parser = argparse.ArgumentParser(prog="python -m experiments",
                                     description=experiments.__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the experiments and their runs")
    run = commands.add_parser("run", help="run an experiment's trials not stored yet")
    run.add_argument("experiment", choices=sorted(EXPERIMENTS))
    run.add_argument("--runs-dir", type=pathlib.Path, default=RUNS_DIR,
                     help="where the trials run (their checkpoints and logs)")
    run.add_argument("--only", nargs="*", default=(),
                     help="run only these runs (all their seeds) or trials")
    run.add_argument("--seeds", nargs="*", type=int, default=(),
                     help="run only the trials of these seeds")
    run.add_argument("--dry-run", action="store_true", help="print, run nothing")
    run.add_argument("--no-report", action="store_true",
                     help="do not regenerate the figures afterwards")
    report = commands.add_parser("report", help="regenerate figures and tables from results")
    which = report.add_mutually_exclusive_group(required=True)
    which.add_argument("experiment", nargs="?", choices=sorted(EXPERIMENTS))
    which.add_argument("--all", action="store_true",
                       help="every experiment and every run figure the docs show")
    for sub in (run, report):
        sub.add_argument("--results-dir", type=pathlib.Path, default=RESULTS_DIR,
                         help="where finished trials are stored (committed)")
        sub.add_argument("--figures-dir", type=pathlib.Path, default=FIGURES_DIR)
    return parser


def list_experiments() -> None:
    """Prints every experiment, its runs and their overrides (as trainer flags)."""
    for name, experiment in EXPERIMENTS.items():
        seeds = "" if experiment.seeds == (0,) else f" [seeds {experiment.seeds}]"
        print(f"{name} ({experiment.trainer}){seeds}: {experiment.question}")
        for run in experiment.runs:
            print(f"    {run.name}: {' '.join(as_flags(run.overrides))}")


def report_all(results_dir: pathlib.Path, figures_dir: pathlib.Path) -> list[pathlib.Path]:
    """Regenerates every experiment's report and every run figure; returns the files written."""
    written = [path for experiment in EXPERIMENTS.values()
               for path in report_experiment(experiment, results_dir, figures_dir)]
    for name, runs in RUN_FIGURES.items():
        plot.plot([results_dir / run for run in runs], figures_dir / name)
        written.append(figures_dir / name)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (1 when a run failed, 2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        list_experiments()
        return 0
    if args.command == "report" and args.all:
        for path in report_all(args.results_dir, args.figures_dir):
            print(f"wrote {path}")
        return 0
    experiment = EXPERIMENTS[args.experiment]
    outcome: dict[str, str] = {}
    if args.command == "run":
        try:
            outcome = run_experiment(experiment, args.results_dir, args.runs_dir, args.only,
                                     dry_run=args.dry_run, seeds=args.seeds)
        except ValueError as error:  # An unknown name or seed, or a refused stored run.
            print(f"{parser.prog} run: error: {error}", file=sys.stderr)
            return 2
        print(json.dumps(outcome, indent=1))
        if args.dry_run or args.no_report or not {"done", "ran"} & set(outcome.values()):
            return 1 if "failed" in outcome.values() else 0
    for path in report_experiment(experiment, args.results_dir, args.figures_dir):
        print(f"wrote {path}")
    return 1 if "failed" in outcome.values() else 0


if __name__ == "__main__":
    sys.exit(main())
