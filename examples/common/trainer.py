"""The training loop every example shares, data-parallel over every device JAX sees.

Read :func:`train_and_evaluate` top to bottom for a whole run. A model family brings its
model and optimizer as a :class:`~examples.common.state.ModelFamily`; the steps
(:mod:`examples.common.steps`) are pure and jitted, and logging, evaluation, checkpoints
and the summary live in the named functions around them.
"""

import dataclasses
import functools
import json
import logging
import pathlib
import signal
import time
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from examples.common import (
    checkpointing,
    cpu_devices,
    datasets,
    errors,
    input_pipeline,
    preemption,
    reporting,
    runs,
    steps,
)
from examples.common import workdir as workdir_lib
from examples.common.config import LoopConfig
from examples.common.state import ModelFamily, StepContext, TrainState, create_train_state

# Steps the host dispatches beyond the one running. JAX dispatches asynchronously; unbounded,
# the host can queue hundreds of steps. On XLA:CPU split into two devices (--cpu-devices 2)
# a loop of the ViT cpu preset's step that queued 500 without waiting aborted the process:
# one device's share of a step waited over 40 s for the other's at an all-reduce (one-off
# probe, twice). Two steps ahead trained as fast as waiting every 50 steps did, within the
# machine's noise (about 2000 images/s for either).
MAX_STEPS_AHEAD = 2


class Shardings(NamedTuple):
    """Batches split over a 1-D mesh of every device; the state replicated."""

    batch: NamedSharding
    replicated: NamedSharding


@dataclasses.dataclass
class Status:
    """Where a run stands: its step, its evaluations and how it ended."""

    start_step: int
    step: int
    evals: list[dict[str, Any]]
    resumed: bool
    diverged: bool = False
    stop_signal: int | None = None

    @property
    def interrupted(self) -> bool:
        """Whether a signal (Ctrl-C, SIGTERM) stopped the run before its end."""
        return self.stop_signal is not None


def data_parallel(config: LoopConfig) -> Shardings:
    """Returns the shardings of a data-parallel run, checking the batches divide evenly."""
    for name in ("batch_size", "eval_batch_size"):
        if getattr(config, name) % jax.device_count():
            raise errors.UserError(f"{errors.flag(name)} {getattr(config, name)} does not "
                                   f"divide by the {jax.device_count()} devices.")
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    return Shardings(NamedSharding(mesh, P("data")), NamedSharding(mesh, P()))


def load_data(config: LoopConfig) -> datasets.ImageDataset:
    """Loads the dataset, cut to the configured number of examples."""
    data = datasets.load(config.dataset, config.data_dir)
    train, test = slice(config.train_examples), slice(config.test_examples)
    return data._replace(train_images=data.train_images[train],
                         train_labels=data.train_labels[train],
                         test_images=data.test_images[test], test_labels=data.test_labels[test])


def jit_steps(ctx: StepContext, shardings: Shardings) -> tuple[Any, Any]:
    """Returns the jitted training step (microbatched if configured) and evaluation step."""
    if steps.num_microbatches(ctx.config) > 1:
        train_fn = steps.MicrobatchedStep(ctx, shardings.replicated, shardings.batch)
    else:
        train_fn = jax.jit(functools.partial(steps.train_step, ctx=ctx),
                           in_shardings=(shardings.replicated, shardings.batch),
                           out_shardings=(shardings.replicated, shardings.replicated),
                           donate_argnums=0)
    eval_fn = jax.jit(functools.partial(steps.eval_step, ctx=ctx),
                      in_shardings=(shardings.replicated, shardings.batch),
                      out_shardings=shardings.replicated)
    return train_fn, eval_fn


def evaluate(eval_fn: Any, state: TrainState, data: datasets.ImageDataset, config: LoopConfig,
             sharding: NamedSharding) -> dict[str, float]:
    """Returns ``test_loss`` and ``test_accuracy`` over the whole test set."""
    totals = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    # No larger than the test set (rounded up to a multiple of the devices), to pad little.
    devices = jax.device_count()
    batch_size = min(config.eval_batch_size, -(-len(data.test_images) // devices) * devices)
    for batch in input_pipeline.eval_batches(
        data.test_images, data.test_labels, global_batch_size=batch_size,
        process_index=jax.process_index(), process_count=jax.process_count(),
    ):
        device_batch = {k: jax.make_array_from_process_local_data(sharding, v)
                        for k, v in batch._asdict().items()}
        for k, v in jax.device_get(eval_fn(state, device_batch)).items():
            totals[k] += float(v)
    return {"test_loss": totals["loss"] / totals["count"],
            "test_accuracy": totals["correct"] / totals["count"]}


def restore(checkpointer: checkpointing.Checkpointer, state: TrainState,
            resume: bool) -> tuple[TrainState, dict[str, Any] | None, int]:
    """Restores the newest checkpoint when resuming and there is one.

    Returns:
      ``(state, data_state, step)``: the state, the input pipeline's position (``None``:
      from the start) and the step to continue from.
    """
    step = checkpointer.latest_step() if resume else None
    if step is None:
        return state, None, 0
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    state, data_state = checkpointer.restore(step, abstract)
    return state, data_state, step


def make_record(step: int, history: list[Any], setup: "Setup",
                throughput: reporting.Throughput) -> dict[str, Any]:
    """The training record of a logging interval: the means of its steps' metrics."""
    means = reporting.mean_metrics(history)  # Waits for the interval's steps to finish.
    return {
        "step": step, "epoch": step / setup.steps_per_epoch,
        # Fewer than --log-every-steps after a resume off the logging grid, or at the end.
        "steps_in_record": len(history),
        "train_loss": means["loss"], "train_accuracy": means["accuracy"],
        "learning_rate": float(setup.ctx.schedule(step - 1)),
        "clip_fraction": means["clip_fraction"],
        "clip_fraction_by_param": means["clip_fraction_by_param"] or None,
        # AGC's gradient norms before and after clipping and its largest unit ratio
        # ‖G_i‖ / max(‖W_i‖, ε), averaged over the interval's steps like the rest.
        "grad_norm": means["grad_norm"],
        "clipped_grad_norm": means["clipped_grad_norm"],
        "max_ratio": means["max_ratio"],
        # None for an interval holding only the first, compiling step.
        "images_per_second": throughput.interval(step),
    }


def limit_steps_ahead(history: list[Any]) -> None:
    """Waits for the step :data:`MAX_STEPS_AHEAD` before the newest in ``history``.

    Args:
      history: the metrics of the steps dispatched since the last training record, newest
        last; every step before them has finished (the record fetched their metrics).
    """
    if len(history) > MAX_STEPS_AHEAD:
        jax.block_until_ready(history[-MAX_STEPS_AHEAD - 1])


def log_record(progress: reporting.Progress, step: int, record: dict[str, Any]) -> None:
    """Shows a training record on the progress bar (or as a log line)."""
    progress.update(step, loss=record["train_loss"], acc=record["train_accuracy"],
                    img_s=record["images_per_second"])


def make_summary(config: LoopConfig, status: Status, state: TrainState,
                 throughput: reporting.Throughput, wall_seconds: float) -> dict[str, Any]:
    """The run's summary (written to ``summary.json``)."""
    evals = status.evals
    return {
        "final_test_accuracy": evals[-1]["test_accuracy"] if evals else None,
        "final_test_loss": evals[-1]["test_loss"] if evals else None,
        "best_test_accuracy": max((e["test_accuracy"] for e in evals), default=None),
        "steps": status.step,
        "wall_seconds": wall_seconds,
        # Excludes the first, compiling step; None when no other step ran.
        "images_per_second": throughput.overall(status.step),
        "device_kind": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        "num_params": int(sum(x.size for x in jax.tree.leaves(state.params))),
        "diverged": status.diverged,
        "interrupted": status.interrupted,
        "stop_signal": signal.Signals(status.stop_signal).name if status.interrupted else None,
        "resumed_from_step": status.start_step if status.resumed else None,
        "jax_version": jax.__version__,
        "config": dataclasses.asdict(config),
    }


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything a run builds before its first step.

    Attributes:
      data: the (cut) dataset.
      state: the initial state, replicated over the devices.
      ctx: the constants of the steps.
      train_fn: the jitted training step.
      eval_fn: the jitted evaluation step.
      shardings: the batch and state shardings.
      steps_per_epoch: full batches in one pass over the training set.
      total_steps: the run's length.
    """

    data: datasets.ImageDataset
    state: TrainState
    ctx: StepContext
    train_fn: Any
    eval_fn: Any
    shardings: Shardings
    steps_per_epoch: int
    total_steps: int

    def is_due(self, step: int, every: int) -> bool:
        """Whether something done every ``every`` steps (and at the end) is due at ``step``."""
        return step % every == 0 or step == self.total_steps


def create_state(family: ModelFamily, config: LoopConfig, data: datasets.ImageDataset,
                 total_steps: int, steps_per_epoch: int) -> tuple[TrainState, StepContext]:
    """The initial state; an ``--agc-exclude`` that matches no parameter is a user error."""
    mean, std = input_pipeline.channel_stats(data.train_images)
    try:
        return create_train_state(
            family, config, num_classes=data.num_classes,
            in_features=data.train_images.shape[-1], mean=mean, std=std,
            total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    except ValueError as e:
        if "matches no leaf" not in str(e):
            raise
        raise errors.UserError(
            f"--agc-exclude {getattr(config, 'agc_exclude', None)!r} matches no parameter "
            "path; fix the regular expression (paths join keys with '/', e.g. "
            "'head/kernel').") from e


def set_up(family: ModelFamily, config: LoopConfig) -> Setup:
    """Loads the data and builds the state, the steps and their shardings."""
    shardings = data_parallel(config)
    data = load_data(config)
    steps_per_epoch = input_pipeline.steps_per_epoch(len(data.train_images), config.batch_size)
    total_steps = config.steps or config.epochs * steps_per_epoch
    state, ctx = create_state(family, config, data, total_steps, steps_per_epoch)
    train_fn, eval_fn = jit_steps(ctx, shardings)
    return Setup(data, jax.device_put(state, shardings.replicated), ctx, train_fn, eval_fn,
                 shardings, steps_per_epoch, total_steps)


def training_batches(config: LoopConfig, setup: Setup, data_state: dict[str, Any] | None
                     ) -> tuple[input_pipeline.DevicePrefetcher, dict[str, Any]]:
    """Returns the device batches from ``data_state`` on, and the loader's state before them."""
    data = setup.data
    iterator = input_pipeline.iterate(input_pipeline.train_dataset(
        data.train_images, data.train_labels, global_batch_size=config.batch_size,
        seed=config.seed, process_index=jax.process_index(),
        process_count=jax.process_count()), data_state)
    return (input_pipeline.DevicePrefetcher(iterator, setup.shardings.batch),
            iterator.get_state())


def write_record(record: dict[str, Any], writer: reporting.MetricsWriter,
                 progress: reporting.Progress, status: Status) -> None:
    """Writes and shows a training record; a non-finite loss marks the run diverged."""
    writer.write(record)
    log_record(progress, record["step"], record)
    if not np.isfinite(record["train_loss"]):
        status.diverged = True
        progress.message(f"Training diverged at step {record['step']} (loss "
                         f"{record['train_loss']}); stopping.")


def evaluate_and_save(setup: Setup, state: TrainState, data_state: dict[str, Any],
                      status: Status, writer: reporting.MetricsWriter,
                      progress: reporting.Progress,
                      checkpointer: checkpointing.Checkpointer) -> None:
    """Evaluates on the test set, writes the result and saves a checkpoint."""
    result = {"step": status.step, "epoch": status.step / setup.steps_per_epoch,
              **evaluate(setup.eval_fn, state, setup.data, setup.ctx.config,
                         setup.shardings.batch)}
    status.evals.append(result)
    writer.write(result)
    progress.message(f"step {status.step}: test_loss={result['test_loss']:.4f} "
                     f"test_accuracy={result['test_accuracy']:.4f}")
    checkpointer.save(status.step, state, data_state)


def train_and_evaluate(family: ModelFamily, config: LoopConfig, workdir: str | pathlib.Path,
                       resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Trains and evaluates a model, writing metrics, checkpoints and a summary to workdir.

    Args:
      family: the model family (its model and optimizer).
      config: the run's configuration.
      workdir: the output directory (``config.json``, ``metrics.jsonl``, ``summary.json``,
        ``checkpoints/``), one run's (:mod:`examples.common.workdir`).
      resume: continue the run in ``workdir`` from its newest checkpoint (from the start
        when it has none); its configuration must match.
      overwrite: delete the run in ``workdir`` first.

    Returns:
      The summary that is also written to ``summary.json``.

    Raises:
      UserError: the configuration is out of range, ``workdir`` holds another run, a
        file cannot be written, or JAX already runs on another number of CPU devices
        than ``cpu_devices`` asks for.
    """
    workdir, wall_start = pathlib.Path(workdir).absolute(), time.monotonic()
    errors.validate(config)
    cpu_devices.use_cpu_devices(config.cpu_devices)  # Before anything starts JAX's backends.
    steps.num_microbatches(config)  # Checks --microbatch-size against the devices.
    is_main = jax.process_index() == 0
    if is_main:
        workdir_lib.prepare(workdir, config, resume=resume, overwrite=overwrite)
        logging.info("Outputs go to %s", shown_path(workdir))
    setup = set_up(family, config)
    if is_main and resume and jax.tree.leaves(setup.state.model_state):
        workdir_lib.check_batch_statistics_resume(workdir, config)
    if is_main:
        workdir_lib.write_config(workdir, config)
    checkpointer = checkpointing.Checkpointer(workdir / workdir_lib.CHECKPOINTS)
    state, data_state, start_step = restore(checkpointer, setup.state, resume)
    writer = reporting.MetricsWriter(workdir, resume_step=start_step if resume else None,
                                     enabled=is_main)
    status = Status(start_step, start_step, runs.eval_records(writer.previous_records), resume)
    batches, data_state = training_batches(config, setup, data_state)
    progress = reporting.Progress(setup.total_steps, start_step, enabled=is_main)
    progress.message(describe_run(config, state, setup.total_steps, start_step))
    throughput, history = reporting.Throughput(config.batch_size, start_step), []
    try:
        with preemption.StopRequest() as stop:
            while status.step < setup.total_steps and not stop.requested and not status.diverged:
                batch, data_state = next(batches)
                state, metrics = setup.train_fn(state, batch)
                status.step += 1
                history.append(metrics)
                throughput.started(metrics, status.step)
                limit_steps_ahead(history)
                if setup.is_due(status.step, config.log_every_steps):
                    record = make_record(status.step, history, setup, throughput)
                    write_record(record, writer, progress, status)
                    history = []
                if not status.diverged and setup.is_due(status.step, setup.steps_per_epoch):
                    evaluate_and_save(setup, state, data_state, status, writer, progress,
                                      checkpointer)
            if stop.requested:
                status.stop_signal = stop.signum
                progress.message(f"{signal.Signals(stop.signum).name}: saving a checkpoint at "
                                 f"step {status.step}; continue with --resume.")
                checkpointer.save(status.step, state, data_state)
        if not status.evals and not status.diverged and not status.interrupted:
            status.evals.append({"step": status.step, **evaluate(  # Resumed a finished run.
                setup.eval_fn, state, setup.data, config, setup.shardings.batch)})
    finally:
        batches.close()
        checkpointer.close()
        progress.close()
    summary = make_summary(config, status, state, throughput, time.monotonic() - wall_start)
    if is_main:
        (workdir / runs.SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
        logging.info("Outputs are in %s", shown_path(workdir))
    return summary


def shown_path(path: pathlib.Path) -> str:
    """``path`` as logs show it: relative to the working directory when inside it.

    Run logs are committed with the experiments (``docs/runs``); a relative path keeps the
    machine's own directories out of them, and is what the user typed from the repository root.
    """
    try:
        return str(path.relative_to(pathlib.Path.cwd()))
    except ValueError:
        return str(path)


def describe_run(config: LoopConfig, state: TrainState, total_steps: int,
                 start_step: int) -> str:
    """The line a run starts with: model, size, length, devices."""
    microbatches = steps.num_microbatches(config)
    return (f"{config.model}: {sum(x.size for x in jax.tree.leaves(state.params)):,} "
            f"parameters, {total_steps} steps of {config.batch_size}"
            + (f" ({microbatches} microbatches)" if microbatches > 1 else "")
            + f" on {jax.device_count()} {jax.devices()[0].device_kind} device(s), starting "
            f"at step {start_step}.")
