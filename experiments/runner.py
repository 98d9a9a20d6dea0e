"""Runs an experiment's trials one after another, skipping those already stored.

Every trial runs its trainer as ``python -m <trainer> ...`` from the repository root in
its work directory, ``<runs-dir>/<experiment>/<trial>/`` (git-ignored; the runner logs the
trainer's output to ``train.log`` there). When it finishes (a diverged run finishes too),
its :data:`~experiments.runs.STORED` files are copied to
``<results-dir>/<experiment>/<trial>/``, what is committed. A trial stored there is done,
so an interrupted grid continues where it stopped (a killed trial's own run with
``--resume``), but only while the configuration it recorded is what the grid asks for
today (:mod:`experiments.fingerprint`): otherwise the grid stops and says what differs.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import time
from collections.abc import Callable, Sequence

from experiments import fingerprint, runs
from experiments.paths import REPO_ROOT, relative_to_repo
from experiments.spec import Experiment, Trial

LOG = "train.log"

Launcher = Callable[[list[str], pathlib.Path], int]


def check_stored(experiment: Experiment, trial: Trial, directory: pathlib.Path) -> None:
    """Refuses a finished run in ``directory`` that does not stand for ``trial``.

    Raises:
      ValueError: the configuration the run recorded differs from the trial's (a grid
        edited since, or a preset default changed), naming each differing field.
    """
    found = fingerprint.stored_run_differences(experiment, trial,
                                               runs.read_run(directory).config)
    if found:
        raise ValueError(
            f"{relative_to_repo(directory)} holds a finished run of "
            f"{experiment.name}/{trial.name} with other settings than the grid now gives "
            f"({'; '.join(found)}). If a preset default changed, set the run's value in the "
            "experiment's overrides; if the grid changed on purpose, delete that directory "
            "to rerun the trial.")


def launch_subprocess(command: list[str], workdir: pathlib.Path) -> int:
    """Runs ``command`` from the repository root, logging to ``workdir/train.log``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(workdir / LOG, "w") as log:
        return subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env=env, check=False).returncode


def select(experiment: Experiment, only: Sequence[str], seeds: Sequence[int] = ()
           ) -> list[Trial]:
    """The trials of the runs named in ``only`` (or all), matched by run or trial name.

    Args:
      experiment: the grid.
      only: names of runs (all their seeds) or trials; empty for every run.
      seeds: keep only the trials of these seeds; empty for every seed.

    Returns:
      The selected trials, run by run.

    Raises:
      ValueError: a name matches no run or trial, or a seed no selected trial has.
    """
    trials = experiment.all_trials()
    names = {t.run.name for t in trials} | {t.name for t in trials}
    unknown = set(only) - names
    if unknown:
        raise ValueError(f"No run named {sorted(unknown)} in {experiment.name!r}; runs: "
                         f"{[run.name for run in experiment.runs]}")
    selected = [t for t in trials if not only or t.run.name in only or t.name in only]
    missing = set(seeds) - {t.seed for t in selected}
    if missing:
        raise ValueError(f"No selected run of {experiment.name!r} has seed {sorted(missing)}; "
                         f"its seeds: {sorted({t.seed for t in selected})}")
    return [t for t in selected if not seeds or t.seed in seeds]


def _started(workdir: pathlib.Path) -> bool:
    """Whether a trainer already wrote into ``workdir`` (anything besides the runner's log)."""
    return workdir.is_dir() and any(p.name != LOG for p in workdir.iterdir())


def run_trial(experiment: Experiment, trial: Trial, workdir: pathlib.Path,
              launch: Launcher) -> int:
    """Launches ``trial`` in ``workdir`` (resuming what a killed run left there).

    Returns:
      The trainer's exit code. Whether the trial finished is whether it left a finished
      run (:func:`experiments.runs.is_finished`), whatever the code: a diverged run
      finishes with a summary and may exit non-zero.
    """
    command = experiment.command(trial, relative_to_repo(workdir))
    if _started(workdir):  # Killed or interrupted: continue it.
        command.append("--resume")
    workdir.mkdir(parents=True, exist_ok=True)
    return launch(command, workdir)


def _outcome_line(workdir: pathlib.Path, code: int, seconds: float) -> str:
    """What the runner prints once a trial's process ended."""
    where = f"exit {code}; see {relative_to_repo(workdir) / LOG}"
    if not runs.is_finished(workdir):
        return f"    FAILED ({where}) in {seconds:.0f} s"
    state = "diverged (stored: it counts as finished)" if runs.read_run(workdir).diverged \
        else "finished"
    return f"    {state}{'' if code == 0 else f' ({where})'} in {seconds:.0f} s"


def run_experiment(experiment: Experiment, results_dir: pathlib.Path,
                   runs_dir: pathlib.Path, only: Sequence[str] = (),
                   launch: Launcher | None = None, dry_run: bool = False,
                   seeds: Sequence[int] = ()) -> dict[str, str]:
    """Runs every trial of ``experiment`` not stored yet, one after another.

    Args:
      experiment: the grid.
      results_dir: where finished trials are stored (``results_dir/experiment/trial``).
      runs_dir: where trials run (``runs_dir/experiment/trial``).
      only: names of runs (all their seeds) or trials to restrict to (all when empty).
      launch: starts a command in a directory and returns its exit code; defaults to
        :func:`launch_subprocess`.
      dry_run: print what would run, run nothing.
      seeds: seeds to restrict to (all when empty).

    Returns:
      Trial name -> ``"done"`` (already stored), ``"ran"``, ``"failed"`` or ``"planned"``.

    Raises:
      ValueError: a bad name or seed, or a stored run that is not its trial
        (:func:`check_stored`).
    """
    launch = launch or launch_subprocess
    selected = select(experiment, only, seeds)
    outcome = {}
    for index, trial in enumerate(selected, 1):
        stored = results_dir / experiment.name / trial.name
        workdir = runs_dir / experiment.name / trial.name
        if runs.is_finished(stored):
            check_stored(experiment, trial, stored)
            outcome[trial.name] = "done"
            continue
        if runs.is_finished(workdir):  # Ran, but was not stored: store it now.
            check_stored(experiment, trial, workdir)
            if not dry_run:
                runs.store(workdir, stored)
            outcome[trial.name] = "done"
            continue
        command = experiment.command(trial, relative_to_repo(workdir))
        print(f"[{index}/{len(selected)}] {experiment.name}/{trial.name}: "
              f"{' '.join(command[1:])}", flush=True)
        if dry_run:
            outcome[trial.name] = "planned"
            continue
        start = time.monotonic()
        code = run_trial(experiment, trial, workdir, launch)
        print(_outcome_line(workdir, code, time.monotonic() - start), flush=True)
        if runs.is_finished(workdir):
            runs.store(workdir, stored)
            outcome[trial.name] = "ran"
        else:
            outcome[trial.name] = "failed"
    return outcome
