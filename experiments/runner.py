"""Runs an experiment's trials one after another, skipping those already finished.

Every trial runs its trainer as ``python -m <trainer> ...`` from the repository root, in
``<runs-dir>/<experiment>/<trial>/``, next to a ``run.json`` recording its command
(relative to the repository root) and labels. A trial whose directory holds a
``summary.json`` of an uninterrupted run is done, so an interrupted grid continues where it
stopped (a trial's own interrupted run with ``--resume``); a done trial
whose stored command asks for other settings than the grid now does, or whose recorded
configuration the same command no longer gives (a preset default changed), is refused.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pathlib
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from examples.common import flags, runs
from examples.common import workdir as workdir_lib
from examples.common.config import UNUSED_WHEN_SET
from examples.common.errors import flag as flag_name
from experiments.spec import Experiment, Trial

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_RUNS_DIR = REPO_ROOT / "docs" / "runs"
# Flags that change how a run executes, not what it computes (up to float rounding): a
# stored run made without them, or with other values, still counts as done.
EXECUTION_ONLY_FLAGS = ("--cpu-devices", "--microbatch-size")
# Of those, the ones that decide a BatchNorm model's result (``--model bn_*``): it normalizes
# each microbatch on its own. Devices are not microbatches: jit normalizes the global batch.
BATCH_NORM_RESULT_FLAGS = ("--microbatch-size",)
BATCH_NORM_MODEL_PREFIX = "bn_"

Launcher = Callable[[list[str], pathlib.Path], int]


def relative_to_repo(path: pathlib.Path) -> pathlib.Path:
    """``path`` relative to the repository root when inside it (as ``run.json`` stores it)."""
    try:
        return path.resolve().relative_to(REPO_ROOT)
    except ValueError:
        return path.resolve()


def settings(command: Sequence[str]) -> tuple[str, dict[str, tuple[str, ...]]]:
    """The trainer module and the flags of a command that decide its result.

    Leaves out the interpreter, ``--workdir``, ``--resume`` and
    :data:`EXECUTION_ONLY_FLAGS`, except, for BatchNorm models (whose microbatches are
    normalized on their own), :data:`BATCH_NORM_RESULT_FLAGS`;
    the order of the flags does not matter (a later value of a flag wins, as on the command
    line).

    Returns:
      ``(module, {flag: its values})``.
    """
    argv = list(command[command.index("-m") + 1:]) if "-m" in command else list(command)
    module, flags = argv[0], {}
    for token in argv[1:]:
        if token.startswith("--"):
            flag, values = token, []
            flags[flag] = values
        else:
            values.append(token)
    batch_norm = (flags.get("--model") or [""])[-1].startswith(BATCH_NORM_MODEL_PREFIX)
    execution_only = (f for f in EXECUTION_ONLY_FLAGS
                      if not (batch_norm and f in BATCH_NORM_RESULT_FLAGS))
    ignored = ("--workdir", "--resume", *execution_only)
    return module, {k: tuple(v) for k, v in flags.items() if k not in ignored}


def command_config(command: Sequence[str]) -> Any:
    """The configuration a trainer command would run with today: its preset plus its flags.

    The family is the package of the command's module (``examples.<family>.<module>``),
    whose ``configs`` has the presets.
    """
    module, *argv = command[command.index("-m") + 1:] if "-m" in command else command
    configs = importlib.import_module(module.rsplit(".", 1)[0] + ".configs")
    config, _ = flags.parse(argv, prog=module, description="", presets=configs.PRESETS,
                            get_config=configs.get_config)
    return config


def config_drift(stored: dict[str, Any], config: Any) -> list[str]:
    """``--flag stored -> now`` for every setting the run recorded that now means otherwise.

    Fields the stored run did not record (added to the configuration later, with a default
    that keeps the old behaviour) are not compared, nor are execution-only ones, nor those
    another set field makes unused (``epochs`` beside ``steps``).
    """
    now = json.loads(json.dumps(dataclasses.asdict(config)))  # Tuples become lists.
    names = sorted((stored.keys() & now.keys()) - set(workdir_lib.EXECUTION_ONLY))
    unused = {name for name, setter in UNUSED_WHEN_SET.items()
              if stored.get(setter) is not None and now.get(setter) is not None}
    return [f"{flag_name(n)} {stored[n]} -> {now[n]}" for n in names
            if n not in unused and stored[n] != now[n]]


def field_of_flag(flag: str) -> str:
    """The config field a trainer flag sets (``--no-flip`` -> ``flip``)."""
    name = flag.removeprefix("--")
    return name.removeprefix("no-").replace("-", "_")


def changed_flags(stored: Sequence[str], wanted: Sequence[str],
                  recorded: dict[str, Any]) -> list[str]:
    """The flags by which two commands differ, less those ``wanted`` adds to pin a setting.

    A flag that only ``wanted`` has, for a field the stored run recorded (execution-only
    fields aside), is a pin: the grid now spells out a setting the run got from its
    preset, and :func:`config_drift` checks that it is the same one.

    Returns:
      ``[]`` for the same trainer and flags; else a readable difference per flag.
    """
    (stored_module, old), (wanted_module, new) = settings(stored), settings(wanted)
    if stored_module != wanted_module:
        return [f"trainer {stored_module} -> {wanted_module}"]
    differences = [f"{flag} {' '.join(old[flag])} -> {' '.join(new.get(flag, ('(unset)',)))}"
                   for flag in old if new.get(flag) != old[flag]]
    pinnable = recorded.keys() - set(workdir_lib.EXECUTION_ONLY)  # What config_drift checks.
    return differences + [f"{flag} (added)" for flag in new
                          if flag not in old and field_of_flag(flag) not in pinnable]


def check_same_settings(workdir: pathlib.Path, command: Sequence[str]) -> None:
    """Refuses to count a stored run as done when the grid now asks for other settings.

    Two checks: the stored ``run.json`` must record the same trainer and flags (the grid
    may add flags that pin what the run recorded), and the configuration its
    ``summary.json`` records must be what the grid's command gives today, so that a changed
    preset default cannot silently change what stored runs stand for.

    Raises:
      ValueError: another trainer or other flags, or a recorded setting that the same
        command now sets otherwise.
    """
    run = runs.read_run(workdir)
    if not run.spec:
        return
    changes = changed_flags(run.spec["command"], command, run.config)
    if changes:
        raise ValueError(
            f"{workdir} finished with {' '.join(run.spec['command'])}, but the experiment now runs "
            f"{' '.join(command[1:])} ({'; '.join(changes)}). Delete that directory to rerun "
            "it with the new flags, or restore the experiment's definition.")
    drift = config_drift(run.config, command_config(command))
    if drift:
        raise ValueError(
            f"{workdir} finished with settings that its command no longer gives "
            f"({'; '.join(drift)}): a preset default changed or a pinned flag differs. Pin "
            "the old value in the experiment's flags, or delete that directory to rerun it.")


def launch_subprocess(command: list[str], workdir: pathlib.Path) -> int:
    """Runs ``command`` from the repository root, logging to ``workdir/train.log``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(workdir / "train.log", "w") as log:
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


def run_experiment(experiment: Experiment, runs_dir: pathlib.Path, only: Sequence[str] = (),
                   launch: Launcher | None = None, dry_run: bool = False,
                   seeds: Sequence[int] = ()) -> dict[str, str]:
    """Runs every unfinished trial of ``experiment``, one after another.

    Args:
      experiment: the grid.
      runs_dir: parent directory; trial ``t`` writes to ``runs_dir/experiment.name/t.name``.
      only: names of runs (all their seeds) or trials to restrict to (all when empty).
      launch: starts a command in a directory and returns its exit code; defaults to
        :func:`launch_subprocess`.
      dry_run: print what would run, run nothing.
      seeds: seeds to restrict to (all when empty).

    Returns:
      Trial name -> ``"done"`` (already finished), ``"ran"``, ``"failed"`` or ``"planned"``.
    """
    launch = launch or launch_subprocess
    selected = select(experiment, only, seeds)
    outcome = {}
    for index, trial in enumerate(selected, 1):
        workdir = runs_dir / experiment.name / trial.name
        command = experiment.command(trial, relative_to_repo(workdir))
        if runs.is_finished(workdir):
            check_same_settings(workdir, command)
            outcome[trial.name] = "done"
            continue
        print(f"[{index}/{len(selected)}] {experiment.name}/{trial.name}: "
              f"{' '.join(command[1:])}", flush=True)
        if dry_run:
            outcome[trial.name] = "planned"
            continue
        if workdir_lib.existing_run_files(workdir):  # Killed or interrupted: continue it.
            command = [*command, "--resume"]
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / runs.RUN_SPEC).write_text(json.dumps(
            {"experiment": experiment.name, "run": trial.name, "labels": trial.run.labels,
             "command": command[1:]}, indent=1) + "\n")
        start = time.monotonic()
        code = launch(command, workdir)
        ok = code == 0 and runs.is_finished(workdir)
        outcome[trial.name] = "ran" if ok else "failed"
        print(f"    {'finished' if ok else f'FAILED (exit {code}; see train.log)'} in "
              f"{time.monotonic() - start:.0f} s", flush=True)
    return outcome
