"""Reading a stored run: its ``metrics.jsonl`` records and its ``summary.json``.

A trainer writes ``config.json`` before its first step, ``metrics.jsonl`` (one JSON record
per line: training records with ``train_loss``, evaluation records with
``test_accuracy``) as it goes and ``summary.json`` (with the run's full configuration)
when it ends; :data:`STORED` are the files ``results/`` keeps of a finished run. Reports,
plots and tests read runs here.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from collections.abc import Sequence
from typing import Any

from examples.common.runs import CONFIG, METRICS, SUMMARY, Record, eval_records, read_records

# What results/ keeps of a finished run: its records and its summary (which holds the
# configuration), not its checkpoints, config.json or log.
STORED = (METRICS, SUMMARY)

__all__ = ["METRICS", "STORED", "SUMMARY", "Record", "RunData", "eval_records", "is_finished",
           "number", "read_run", "store", "train_records"]


def train_records(records: Sequence[Record]) -> list[Record]:
    """The training records (those with a ``train_loss``)."""
    return [r for r in records if "train_loss" in r]


def number(value: float | None) -> float:
    """``value`` as a float, NaN for ``None`` (a JSON null)."""
    return float("nan") if value is None else float(value)


def _read_json(path: pathlib.Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def is_finished(run_dir: pathlib.Path) -> bool:
    """Whether a run ended: also a run that diverged, not one that a signal stopped.

    A diverged run is finished: it stands for its settings as much as one that trained to
    the end (whatever the trainer's exit status).
    """
    summary = _read_json(pathlib.Path(run_dir) / SUMMARY)
    return bool(summary) and not summary.get("interrupted")


@dataclasses.dataclass(frozen=True)
class RunData:
    """The outputs of one run.

    Attributes:
      directory: the run's directory.
      records: every record of ``metrics.jsonl``, in order.
      summary: ``summary.json`` (empty while the run has not ended).
      config: the run's configuration: its summary's, or while it runs, its
        ``config.json``'s (empty when neither records one).
    """

    directory: pathlib.Path
    records: list[Record]
    summary: dict[str, Any]
    config: dict[str, Any]

    @property
    def train(self) -> list[Record]:
        """The training records."""
        return train_records(self.records)

    @property
    def evals(self) -> list[Record]:
        """The evaluation records."""
        return eval_records(self.records)

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

    Args:
      run_dir: a trainer's ``--workdir``, or a stored run under ``results/``.

    Returns:
      Its records, summary and configuration.

    Raises:
      FileNotFoundError: the directory has neither ``metrics.jsonl`` nor ``summary.json``.
    """
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / METRICS).exists() and not (run_dir / SUMMARY).is_file():
        raise FileNotFoundError(f"{run_dir} holds no {METRICS} or {SUMMARY}: not a run "
                                "directory (pass the --workdir of a training run).")
    summary = _read_json(run_dir / SUMMARY)
    config = summary.get("config") or _read_json(run_dir / CONFIG)
    return RunData(run_dir, read_records(run_dir / METRICS), summary, config)


def store(run_dir: pathlib.Path, destination: pathlib.Path) -> list[pathlib.Path]:
    """Copies the :data:`STORED` files of a finished run to ``destination``.

    Args:
      run_dir: the trainer's work directory.
      destination: the run's directory under ``results/`` (created if missing).

    Returns:
      The files written.

    Raises:
      FileNotFoundError: ``run_dir`` has not finished (no ``summary.json``).
    """
    if not is_finished(run_dir):
        raise FileNotFoundError(f"{run_dir} holds no finished run ({SUMMARY}) to store.")
    destination.mkdir(parents=True, exist_ok=True)
    return [pathlib.Path(shutil.copyfile(run_dir / name, destination / name))
            for name in STORED if (run_dir / name).is_file()]
