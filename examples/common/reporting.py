"""Run outputs: ``metrics.jsonl`` records, throughput, and a progress bar or log lines."""

import json
import logging
import math
import pathlib
import sys
import time
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from examples.common import runs


class MetricsWriter:
    """Appends one JSON object per line to ``<workdir>/metrics.jsonl``."""

    def __init__(self, workdir: pathlib.Path, resume_step: int | None = None,
                 enabled: bool = True):
        """Opens the file.

        Args:
          workdir: the run's directory.
          resume_step: when resuming, records after this step (written by the interrupted
            run after its last checkpoint) are dropped so no step appears twice.
          enabled: whether this process writes (only process 0 does on a multi-host run).
        """
        self.enabled = enabled
        self.path = workdir / runs.METRICS
        self.previous_records: list[dict[str, Any]] = []
        if resume_step is not None:
            self.previous_records = [r for r in runs.read_records(self.path)
                                     if r["step"] <= resume_step]
        if enabled and self.path.exists():
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.previous_records))

    def write(self, record: dict[str, Any]) -> None:
        """Appends ``record``; non-finite floats are written as ``null``."""
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")


class Progress:
    """A tqdm bar on a terminal, one log line per update otherwise.

    Args:
      total_steps: the run's length.
      initial_step: the step a resumed run starts from.
      enabled: whether this process reports (only process 0 does on a multi-host run).
    """

    def __init__(self, total_steps: int, initial_step: int = 0, enabled: bool = True):
        self.total_steps = total_steps
        self.enabled = enabled
        self._bar = None
        if enabled and sys.stderr.isatty():
            self._bar = tqdm(total=total_steps, initial=initial_step, unit="step",
                             dynamic_ncols=True)
        self._step = initial_step
        self._start = (time.monotonic(), initial_step)

    def update(self, step: int, **values: float) -> None:
        """Moves to ``step`` and shows ``values`` (loss, accuracy, images/s...)."""
        if not self.enabled:
            return
        text = {k: f"{v:.4g}" for k, v in values.items() if v is not None}
        if self._bar is not None:
            self._bar.update(step - self._step)
            self._bar.set_postfix(text, refresh=True)
        else:
            start_time, start_step = self._start
            per_step = (time.monotonic() - start_time) / max(step - start_step, 1)
            eta = per_step * (self.total_steps - step)
            logging.info("step %d/%d %s eta=%dm%02ds", step, self.total_steps,
                         " ".join(f"{k}={v}" for k, v in text.items()), eta // 60, eta % 60)
        self._step = step

    def message(self, text: str) -> None:
        """Prints a line without breaking the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            logging.info("%s", text)

    def close(self) -> None:
        """Closes the bar."""
        if self._bar is not None:
            self._bar.close()


def mean_metrics(history: list[Any]) -> dict[str, Any]:
    """Fetches and averages per-step metrics (nested dicts of scalars) in one device sync."""
    fetched = jax.device_get(history)
    return jax.tree.map(lambda *values: float(np.mean(values)), *fetched)


class Throughput:
    """Images per second over the run and over each logging interval.

    The first step compiles, so both leave it out: :meth:`started` marks its end.

    Args:
      batch_size: images per step.
      step: the step the run starts from.
    """

    def __init__(self, batch_size: int, step: int):
        self.batch_size = batch_size
        self._start: tuple[float, int] | None = None
        self._interval = (time.monotonic(), step)

    def started(self, metrics: Any, step: int) -> None:
        """Called after every step; the first call waits for it and starts the clocks."""
        if self._start is None:
            jax.block_until_ready(metrics)
            self._start = self._interval = (time.monotonic(), step)

    def _rate(self, since: tuple[float, int] | None, step: int) -> float | None:
        if since is None or step <= since[1]:
            return None
        return (step - since[1]) * self.batch_size / max(time.monotonic() - since[0], 1e-9)

    def interval(self, step: int) -> float | None:
        """Images per second since the last call; ``None`` when no timed step ran."""
        rate = self._rate(self._interval, step)
        self._interval = (time.monotonic(), step)
        return rate

    def overall(self, step: int) -> float | None:
        """Images per second since the first step; ``None`` when no other step ran."""
        return self._rate(self._start, step)
