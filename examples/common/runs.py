"""The files a run writes, and the records of ``metrics.jsonl`` as the trainer reads them back.

A trainer writes ``config.json`` before its first step, ``metrics.jsonl`` (one JSON record
per line: training records with ``train_loss``, evaluation records with ``test_accuracy``)
as it goes and, when it ends, ``summary.json``. Reading stored runs for plots and reports
is :mod:`experiments.runs`'s job.
"""

import json
import pathlib
from collections.abc import Sequence
from typing import Any

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"

Record = dict[str, Any]


def read_records(path: pathlib.Path) -> list[Record]:
    """Returns the records of a ``metrics.jsonl`` file (none when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def eval_records(records: Sequence[Record]) -> list[Record]:
    """The evaluation records (those with a ``test_accuracy``)."""
    return [r for r in records if "test_accuracy" in r]
