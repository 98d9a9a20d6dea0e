"""Reading what a run left in its directory: the one reader of run outputs.

A trainer writes ``metrics.jsonl`` (one JSON record per line: training records with
``train_loss``, evaluation records with ``test_accuracy``) and, when it ends,
``summary.json``; the experiment runner adds ``run.json`` (the command and labels).
Plots, experiment reports, the trainer's own summary and the tests read them here.
"""

import dataclasses
import json
import pathlib
from collections.abc import Sequence
from typing import Any

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
RUN_SPEC = "run.json"

Record = dict[str, Any]


def read_records(path: pathlib.Path) -> list[Record]:
    """Returns the records of a ``metrics.jsonl`` file (none when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_records(records: Sequence[Record]) -> list[Record]:
    """The training records (those with a ``train_loss``)."""
    return [r for r in records if "train_loss" in r]


def eval_records(records: Sequence[Record]) -> list[Record]:
    """The evaluation records (those with a ``test_accuracy``)."""
    return [r for r in records if "test_accuracy" in r]


def is_finished(run_dir: pathlib.Path) -> bool:
    """Whether a run ended (also true for a run that diverged; not for one a signal stopped)."""
    path = run_dir / SUMMARY
    return path.is_file() and not json.loads(path.read_text()).get("interrupted")


def _read_json(path: pathlib.Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


@dataclasses.dataclass(frozen=True)
class RunData:
    """The outputs of one run.

    Attributes:
      directory: the run's directory.
      records: every record of ``metrics.jsonl``, in order.
      summary: ``summary.json`` (empty while the run has not ended).
      spec: ``run.json`` (empty for a run not started by the experiment runner).
    """

    directory: pathlib.Path
    records: list[Record]
    summary: dict[str, Any]
    spec: dict[str, Any]

    @property
    def train(self) -> list[Record]:
        """The training records."""
        return train_records(self.records)

    @property
    def evals(self) -> list[Record]:
        """The evaluation records."""
        return eval_records(self.records)

    @property
    def config(self) -> dict[str, Any]:
        """The run's configuration (from ``summary.json``; empty while it runs)."""
        return self.summary.get("config", {})

    @property
    def finished(self) -> bool:
        """Whether the run has ended (``summary.json`` exists)."""
        return bool(self.summary)

    @property
    def diverged(self) -> bool:
        """Whether a non-finite loss stopped the run."""
        return bool(self.summary.get("diverged"))


def read_run(run_dir: pathlib.Path) -> RunData:
    """Reads a run's directory.

    Raises:
      FileNotFoundError: the directory has neither ``metrics.jsonl`` nor ``summary.json``.
    """
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / METRICS).exists() and not is_finished(run_dir):
        raise FileNotFoundError(f"{run_dir} holds no {METRICS} or {SUMMARY}: not a run "
                                "directory (pass the --workdir of a training run).")
    return RunData(run_dir, read_records(run_dir / METRICS), _read_json(run_dir / SUMMARY),
                   _read_json(run_dir / RUN_SPEC))
