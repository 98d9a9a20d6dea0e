"""Run outputs: ``metrics.jsonl`` records, throughput, and a progress bar or log lines."""

import dataclasses
import json
import logging
import math
import pathlib
import signal
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


def describe_run(config: Any, params: Any, total_steps: int, start_step: int) -> str:
    """The line a run starts with: model, size, length, devices."""
    size = config.batch_size
    micro = config.microbatch_size
    microbatches = size // micro if micro and micro < size else 1
    return (f"{config.model}: {sum(x.size for x in jax.tree.leaves(params)):,} parameters, "
            f"{total_steps} steps of {size}"
            + (f" ({microbatches} microbatches)" if microbatches > 1 else "")
            + f" on {jax.device_count()} {jax.devices()[0].device_kind} device(s), starting "
            f"at step {start_step}.")


class RunLog:
    """What a run reports: ``metrics.jsonl``, the progress bar, throughput, ``summary.json``.

    Only process 0 writes; every process keeps the evaluations and the divergence flag.

    Attributes:
      throughput: images per second (the loop marks each dispatched step).
      evals: the run's evaluation records, a resumed run's earlier ones first.
      diverged: whether a training record had a non-finite loss.
    """

    def __init__(self, workdir: pathlib.Path, batch_size: int, total_steps: int,
                 start_step: int, resumed: bool, started_at: float):
        """Opens the outputs of a run starting (or resuming) at ``start_step``.

        Args:
          workdir: the run's directory.
          batch_size: images per step (for the throughput).
          total_steps: the run's length.
          start_step: the step it starts from.
          resumed: whether it continues an earlier run.
          started_at: ``time.monotonic()`` when the run began (the summary's wall time
            counts from it).
        """
        is_main = jax.process_index() == 0
        self._start = (started_at, start_step, resumed)
        self._workdir = workdir
        self._writer = MetricsWriter(workdir, resume_step=start_step if resumed else None,
                                     enabled=is_main)
        self._progress = Progress(total_steps, start_step, enabled=is_main)
        self.throughput = Throughput(batch_size, start_step)
        self.evals = runs.eval_records(self._writer.previous_records)
        self.diverged = False

    def message(self, text: str) -> None:
        """Prints a line (without breaking the progress bar)."""
        self._progress.message(text)

    def train_record(self, step: int, steps_per_epoch: int, history: list[Any],
                     learning_rate: float) -> dict[str, Any]:
        """Writes the means of an interval's step metrics; a non-finite loss is divergence.

        Args:
          step: the interval's last step.
          steps_per_epoch: to give the record's epoch.
          history: the metrics of the interval's steps (``loss``, ``accuracy`` and AGC's
            statistics).
          learning_rate: the learning rate of the interval's last step.

        Returns:
          The record written.
        """
        means = mean_metrics(history)  # Waits for the interval's steps to finish.
        record = {
            "step": step, "epoch": step / steps_per_epoch,
            # Fewer than --log-every-steps after a resume off the logging grid, or at the end.
            "steps_in_record": len(history),
            "train_loss": means["loss"], "train_accuracy": means["accuracy"],
            "learning_rate": learning_rate,
            **{name: means[name] for name in ("clip_fraction", "grad_norm",
                                               "clipped_grad_norm", "max_ratio")},
            "clip_fraction_by_param": means["clip_fraction_by_param"] or None,
            # None for an interval holding only the first, compiling step.
            "images_per_second": self.throughput.interval(step),
        }
        self._writer.write(record)
        self._progress.update(step, loss=record["train_loss"], acc=record["train_accuracy"],
                              img_s=record["images_per_second"])
        if not np.isfinite(record["train_loss"]):
            self.diverged = True
            self.message(f"Training diverged at step {step} (loss {record['train_loss']}); "
                         "stopping.")
        return record

    def eval_record(self, step: int, steps_per_epoch: int, result: dict[str, float]) -> None:
        """Writes an evaluation's ``test_*`` results."""
        record = {"step": step, "epoch": step / steps_per_epoch, **result}
        self.evals.append(record)
        self._writer.write(record)
        self.message(f"step {step}: " + " ".join(
            f"{name}={value:.4f}" for name, value in result.items()))

    def stopped(self, signum: int, step: int) -> None:
        """Says that a signal stopped the run at ``step``."""
        self.message(f"{signal.Signals(signum).name}: saving a checkpoint at step {step}; "
                     "continue with --resume.")

    def close(self) -> None:
        """Closes the progress bar."""
        self._progress.close()

    def write_summary(self, config: Any, step: int, params: Any,
                      stop_signal: int | None) -> dict[str, Any]:
        """The run's summary, also written to ``summary.json`` (by process 0)."""
        start_time, start_step, resumed = self._start
        evals = self.evals
        summary = {
            "final_test_accuracy": evals[-1]["test_accuracy"] if evals else None,
            "final_test_loss": evals[-1]["test_loss"] if evals else None,
            "best_test_accuracy": max((e["test_accuracy"] for e in evals), default=None),
            "steps": step,
            "wall_seconds": time.monotonic() - start_time,
            # Excludes the first, compiling step; None when no other step ran.
            "images_per_second": self.throughput.overall(step),
            "device_kind": jax.devices()[0].device_kind,
            "num_devices": jax.device_count(),
            "num_processes": jax.process_count(),
            "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
            "diverged": self.diverged,
            "interrupted": stop_signal is not None,
            "stop_signal": signal.Signals(stop_signal).name if stop_signal else None,
            "resumed_from_step": start_step if resumed else None,
            "jax_version": jax.__version__,
            "config": dataclasses.asdict(config),
        }
        if jax.process_index() == 0:
            (self._workdir / runs.SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
            logging.info("Outputs are in %s", self._workdir)
        return summary
