"""What an experiment is: a grid of runs, each repeated over seeds, with its own report.

Experiments are plain values (see :mod:`experiments.nf_resnet`). A run is a set of config
overrides on top of the experiment's preset and its shared overrides; a (run, seed) pair
is a :class:`Trial`, one trainer process. Overrides are config values, not flag text:
:func:`as_flags` spells them out only to launch the trainer, and
:mod:`experiments.fingerprint` compares a stored run's configuration with them field by
field.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from experiments.runs import RunData

Overrides = Mapping[str, Any]


def as_flags(overrides: Overrides) -> list[str]:
    """The trainer flags that set ``overrides`` (one flag per config field).

    ``field_name: value`` becomes ``--field-name value``; ``True``/``False`` become
    ``--field-name``/``--no-field-name``; ``None`` becomes ``none``; a float is written
    exactly (its ``repr``).
    """
    argv = []
    for name, value in overrides.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif value is None:
            argv += [flag, "none"]
        else:
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    return argv


@dataclasses.dataclass(frozen=True)
class Run:
    """One configuration of an experiment.

    Attributes:
      name: directory name of the run (of its seed 0), unique in its experiment.
      overrides: config fields this run sets, on top of the experiment's.
      labels: settings that plots and tables group by (e.g. batch size, λ).
      seeds: the seeds to run it with; ``None`` takes the experiment's.
    """

    name: str
    overrides: Overrides
    labels: dict[str, Any]
    seeds: tuple[int, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Trial:
    """One training process: a run at one seed.

    Attributes:
      run: the run.
      seed: the seed; 0 keeps the run's own directory and overrides, seed ``k`` runs in
        ``<run>_seed<k>`` with ``seed = k`` added.
    """

    run: Run
    seed: int

    @property
    def name(self) -> str:
        """The trial's directory name."""
        return self.run.name if self.seed == 0 else f"{self.run.name}_seed{self.seed}"

    @property
    def overrides(self) -> dict[str, Any]:
        """The run's overrides, plus ``seed`` for seeds other than 0."""
        return dict(self.run.overrides) | ({"seed": self.seed} if self.seed else {})


@dataclasses.dataclass(frozen=True)
class Result:
    """A run of the grid with its finished trials.

    Attributes:
      run: the run.
      trials: the outputs of its finished trials, in seed order.
      expected: how many trials the grid asks for (its seeds).
    """

    run: Run
    trials: list[RunData]
    expected: int

    @property
    def labels(self) -> dict[str, Any]:
        """The run's labels."""
        return self.run.labels


Figure = Callable[["Experiment", Sequence[Result], pathlib.Path], list[pathlib.Path]]


@dataclasses.dataclass(frozen=True)
class Report:
    """How an experiment is reported.

    Attributes:
      figures: functions ``(experiment, results, figures_dir) -> written paths``
        (:mod:`experiments.figures`).
      columns: the run labels that head the rows of its table.
      legend: the run label that names a run in the figures' legends.
      step_time: whether the table shows the wall time per training step
        (:func:`experiments.report.step_milliseconds`).
    """

    figures: tuple[Figure, ...]
    columns: tuple[str, ...]
    legend: str = "clip"
    step_time: bool = False


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A grid of runs sharing a trainer, a preset and a budget.

    Attributes:
      name: the experiment's name (its directory under ``results/``, its figures' stem).
      question: what the experiment measures, one sentence.
      preset: the trainer preset every run starts from.
      overrides: config fields every run sets (the budget, the model).
      runs: the grid.
      report: its figures and table.
      seeds: the seeds of every run that names none.
      trainer: the module launched with ``python -m`` (e.g. ``examples.nf_resnet.train``);
        its package's ``configs`` has the presets.
      title: the figures' title, when the report draws one.
    """

    name: str
    question: str
    preset: str
    overrides: Overrides
    runs: tuple[Run, ...]
    report: Report
    seeds: tuple[int, ...] = (0,)
    trainer: str = "examples.nf_resnet.train"
    title: str = ""

    def trials(self, run: Run) -> list[Trial]:
        """The trials of ``run``, one per seed."""
        return [Trial(run, seed) for seed in (run.seeds or self.seeds)]

    def all_trials(self) -> list[Trial]:
        """Every trial of the grid, run by run."""
        return [trial for run in self.runs for trial in self.trials(run)]

    def trial_overrides(self, trial: Trial) -> dict[str, Any]:
        """Every field ``trial`` sets on top of the preset (the trial's win over the grid's)."""
        return dict(self.overrides) | trial.overrides

    def command(self, trial: Trial, workdir: pathlib.Path | str) -> list[str]:
        """The trainer command line of ``trial`` (starting with the interpreter)."""
        return [sys.executable, "-m", self.trainer, "--preset", self.preset,
                "--workdir", str(workdir), *as_flags(self.trial_overrides(trial))]
