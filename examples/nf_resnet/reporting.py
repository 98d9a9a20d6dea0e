"""Run outputs: ``metrics.jsonl`` records and a progress bar or plain log lines."""

import json
import logging
import math
import pathlib
import sys
import time
from typing import Any

from tqdm import tqdm


class MetricsWriter:
    """Appends one JSON object per line to ``<workdir>/metrics.jsonl``."""

    def __init__(self, workdir: pathlib.Path, resume_step: int | None = None):
        """Opens the file.

        Args:
          workdir: the run's directory.
          resume_step: when resuming, records after this step (written by the interrupted
            run after its last checkpoint) are dropped so no step appears twice.
        """
        self.path = workdir / "metrics.jsonl"
        self.previous_records: list[dict[str, Any]] = []
        if resume_step is not None and self.path.exists():
            records = [json.loads(line) for line in self.path.read_text().splitlines() if line]
            self.previous_records = [r for r in records if r["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.previous_records))
        elif self.path.exists():
            self.path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        """Appends ``record``; non-finite floats are written as ``null``."""
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
