"""What an experiment is: a grid of runs, each repeated over seeds, with its own report.

Experiments are plain values (see :mod:`experiments.nf_resnet`); the runner turns each
(run, seed) pair into a :class:`Trial`, one trainer command in one directory.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from experiments.report import Result


@dataclasses.dataclass(frozen=True)
class Run:
    """One configuration of an experiment.

    Attributes:
      name: directory name of the run (of its seed 0), unique in its experiment.
      flags: trainer flags of this run, added after the experiment's common flags.
      labels: settings that plots and tables group by (e.g. batch size, λ).
      seeds: the seeds to run it with; ``None`` takes the experiment's.
    """

    name: str
    flags: tuple[str, ...]
    labels: dict[str, Any]
    seeds: tuple[int, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Trial:
    """One training process: a run at one seed.

    Attributes:
      run: the run.
      seed: the seed; 0 keeps the run's own directory and flags, seed ``k`` runs in
        ``<run>_seed<k>`` with ``--seed k`` added.
    """

    run: Run
    seed: int

    @property
    def name(self) -> str:
        """The trial's directory name."""
        return self.run.name if self.seed == 0 else f"{self.run.name}_seed{self.seed}"

    @property
    def flags(self) -> tuple[str, ...]:
        """The run's flags, plus ``--seed`` for seeds other than 0."""
        return self.run.flags if self.seed == 0 else (*self.run.flags, "--seed", str(self.seed))


Figure = Callable[["Experiment", Sequence["Result"], pathlib.Path], list[pathlib.Path]]


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
      name: the experiment's name (its directory under the runs dir, its figures' stem).
      question: what the experiment measures, one sentence.
      preset: the trainer preset every run starts from.
      common_flags: flags shared by every run (the budget, the model).
      runs: the grid.
      report: its figures and table.
      seeds: the seeds of every run that names none.
      trainer: the module launched with ``python -m`` (e.g. ``examples.nf_resnet.train``).
      title: the figures' title, when the report draws one.
    """

    name: str
    question: str
    preset: str
    common_flags: tuple[str, ...]
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

    def command(self, trial: Trial, workdir: pathlib.Path | str) -> list[str]:
        """The trainer command line of ``trial`` (starting with the interpreter)."""
        return [sys.executable, "-m", self.trainer, "--preset", self.preset,
                "--workdir", str(workdir), *self.common_flags, *trial.flags]
