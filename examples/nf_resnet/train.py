"""Trains an NF-ResNet with AGC, data-parallel over every device JAX sees.

    python -m examples.nf_resnet.train --preset cpu --workdir runs/cpu

Read :func:`train_and_evaluate` top to bottom for the whole run. :func:`train_step` and
:func:`eval_step` are pure and jitted; logging, checkpointing and the progress bar live in
the loop around them.
"""

import dataclasses
import functools
import json
import logging
import os
import pathlib
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from examples.nf_resnet import (
    checkpointing,
    cli,
    datasets,
    input_pipeline,
    models,
    optim,
    reporting,
)
from examples.nf_resnet.configs import TrainConfig


class TrainState(NamedTuple):
    """What a training step reads and writes (and a checkpoint stores)."""

    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState


@dataclasses.dataclass(frozen=True)
class StepContext:
    """The constants a step closes over: the model's structure and the data statistics.

    Attributes:
      graphdef: the model's static structure.
      rest: the model's non-parameter state (its random streams, reseeded every step).
      tx: the optimizer.
      key: the root key of per-step augmentation and dropout randomness.
      mean: per-channel pixel mean, in [0, 1] units.
      std: per-channel pixel standard deviation.
      config: the run's configuration.
    """

    graphdef: nnx.GraphDef
    rest: nnx.State
    tx: optax.GradientTransformation
    key: jax.Array
    mean: np.ndarray
    std: np.ndarray
    config: TrainConfig


def compute_dtype(name: str) -> jnp.dtype:
    """Resolves ``--dtype``: ``auto`` is bfloat16 on GPU/TPU and float32 on CPU."""
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    return jnp.dtype(name)


def create_model(config: TrainConfig, num_classes: int, in_features: int,
                 rngs: nnx.Rngs) -> models.NFResNet:
    """Builds the configured NF-ResNet (float32 parameters, configured compute dtype)."""
    if config.model not in models.VARIANTS:
        raise ValueError(f"Unknown model {config.model!r}; choose from {sorted(models.VARIANTS)}.")
    return models.NFResNet(
        models.VARIANTS[config.model], num_classes, in_features=in_features,
        activation=config.activation, se_ratio=config.se_ratio,
        drop_path_rate=config.drop_path_rate, dropout_rate=config.dropout_rate,
        dtype=compute_dtype(config.dtype), rngs=rngs,
    )


def cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy against (optionally smoothed) one-hot labels."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def num_microbatches(config: TrainConfig) -> int:
    """Returns how many microbatches a global batch is split into (1: none).

    Raises:
      ValueError: ``--microbatch-size`` does not divide ``--batch-size``, or is not a
        multiple of the device count (every device takes an equal share of a microbatch).
    """
    size = config.microbatch_size
    if not size or size >= config.batch_size:
        return 1
    if config.batch_size % size or size % jax.device_count():
        raise ValueError(
            f"--microbatch-size {size} must divide --batch-size {config.batch_size} and be a "
            f"multiple of the {jax.device_count()} devices; e.g. --microbatch-size "
            f"{_largest_divisor(config.batch_size, size, jax.device_count())}.")
    return config.batch_size // size


def _largest_divisor(batch_size: int, at_most: int, multiple_of: int) -> int:
    candidates = [d for d in range(multiple_of, at_most + 1, multiple_of) if batch_size % d == 0]
    return max(candidates, default=batch_size)


def prepare_batch(step: jax.Array, batch: dict[str, jax.Array],
                  ctx: StepContext) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Normalizes and augments a global batch.

    Returns:
      ``(images, labels, dropout_key)``: float images, their labels and the step's key for
      dropout and stochastic depth.
    """
    config = ctx.config
    aug_rng, dropout_rng = jax.random.split(jax.random.fold_in(ctx.key, step))
    images = input_pipeline.normalize(batch["image"], ctx.mean, ctx.std)
    images = input_pipeline.augment(aug_rng, images, config.crop_padding, config.flip)
    return images, batch["label"], dropout_rng


def microbatch_gradients(params: nnx.State, images: jax.Array, labels: jax.Array,
                         dropout_rng: jax.Array, index: jax.Array | int,
                         ctx: StepContext) -> tuple[nnx.State, dict[str, jax.Array]]:
    """Gradient and metrics of microbatch ``index`` of a prepared global batch.

    Microbatch ``k`` of ``n`` holds examples ``k, k + n, k + 2n, …``: a strided slice keeps
    every device's share on that device. Its loss is scaled by ``1 / n``, so the gradients
    of the ``n`` microbatches sum to the gradient of the whole batch's mean loss (exactly
    so for NF-ResNets, which have no batch statistics, up to float rounding and dropout
    masks). With ``n = 1`` this is the plain full-batch gradient.

    Returns:
      The gradient and ``{"loss", "accuracy"}``, both already divided by ``n``.
    """
    n = num_microbatches(ctx.config)
    if n > 1:
        pick = lambda x: jax.lax.dynamic_index_in_dim(  # noqa: E731
            x.reshape(x.shape[0] // n, n, *x.shape[1:]), index, axis=1, keepdims=False)
        images, labels = pick(images), pick(labels)
        dropout_rng = jax.random.fold_in(dropout_rng, index)

    def loss_fn(params):
        # A copy, so reseeding the random streams does not touch the constants in ctx.
        model = nnx.merge(ctx.graphdef, params, ctx.rest, copy=True)
        nnx.reseed(model, dropout=dropout_rng)
        logits = model(images)
        loss = jnp.mean(cross_entropy(logits, labels, ctx.config.label_smoothing))
        return loss / n, logits  # Dividing by n = 1 is exact: one code path for both.

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels) / n}


def accumulate_microbatch(params: nnx.State, totals: tuple[nnx.State, dict[str, jax.Array]],
                          images: jax.Array, labels: jax.Array, dropout_rng: jax.Array,
                          index: jax.Array, ctx: StepContext
                          ) -> tuple[nnx.State, dict[str, jax.Array]]:
    """Adds microbatch ``index``'s gradient and metrics to the running ``totals``."""
    step = microbatch_gradients(params, images, labels, dropout_rng, index, ctx)
    return jax.tree.map(jnp.add, totals, step)


def apply_gradients(state: TrainState, grads: nnx.State, metrics: dict[str, jax.Array],
                    ctx: StepContext) -> tuple[TrainState, dict[str, jax.Array]]:
    """Clips (AGC) and applies a whole batch's gradient; adds the clipping statistics.

    Returns:
      The new state and ``metrics`` plus ``clip_fraction`` (NaN without AGC) and, with AGC,
      ``clip_fraction/<kind>`` for every kind of parameter (:func:`parameter_kind`).
    """
    updates, opt_state = ctx.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    clip_fraction = optax.tree_utils.tree_get(opt_state, "clip_fraction")
    metrics = {**metrics, "clip_fraction": jnp.nan if clip_fraction is None else clip_fraction}
    leaf_fractions = optax.tree_utils.tree_get(opt_state, "leaf_clip_fraction") or {}
    by_kind: dict[str, list[jax.Array]] = {}
    for path, fraction in leaf_fractions.items():
        by_kind.setdefault(parameter_kind(path), []).append(fraction)
    for kind, fractions in by_kind.items():
        metrics[f"clip_fraction/{kind}"] = jnp.mean(jnp.stack(fractions))
    return TrainState(state.step + 1, params, opt_state), metrics


def parameter_kind(path: str) -> str:
    """The kind of a parameter, from its path: ``"blocks/0/convs/1/kernel"`` -> ``"kernel"``.

    The trainer logs AGC's clip fraction per kind (mean over the leaves of that kind of the
    fraction of their units clipped), e.g. to see that zero-initialised skip gains are
    clipped at their ε floor while few kernel units are.
    """
    return path.rsplit("/", 1)[-1]


def train_step(state: TrainState, batch: dict[str, jax.Array],
               ctx: StepContext) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on a global batch: augment, forward, backward, clip, update.

    Args:
      state: the current state (replicated).
      batch: ``{"image": uint8 NHWC, "label": int}``, sharded over the batch axis.
      ctx: the step's constants. With ``--microbatch-size``, the loop over microbatches is
        unrolled into this one program; the trainer runs :class:`MicrobatchedStep` instead,
        which computes the same on the host, one microbatch per call.

    Returns:
      The new state and the step's ``loss``, ``accuracy`` and ``clip_fraction``.
    """
    images, labels, dropout_rng = prepare_batch(state.step, batch, ctx)
    totals = microbatch_gradients(state.params, images, labels, dropout_rng, 0, ctx)
    for index in range(1, num_microbatches(ctx.config)):
        totals = accumulate_microbatch(state.params, totals, images, labels, dropout_rng,
                                       index, ctx)
    return apply_gradients(state, *totals, ctx)


class MicrobatchedStep:
    """:func:`train_step` with the gradient summed over microbatches (``--microbatch-size``).

    Gradient accumulation: AGC clips the whole batch's gradient, once per step, as at the
    full batch size. The loop over microbatches runs on the host, one jitted call each:
    XLA:CPU ran the same loop inside one program (``lax.scan``) several times slower in a
    one-off probe.
    """

    def __init__(self, ctx: StepContext, replicated: NamedSharding, batch_sharding: NamedSharding):
        """Jits the three parts of a step.

        Args:
          ctx: the step's constants.
          replicated: the sharding of the state and the gradient.
          batch_sharding: the sharding of batches (split over the batch axis).
        """
        self.num_microbatches = num_microbatches(ctx.config)
        self._prepare = jax.jit(functools.partial(prepare_batch, ctx=ctx),
                                in_shardings=(replicated, batch_sharding),
                                out_shardings=(batch_sharding, batch_sharding, replicated))
        self._first = jax.jit(functools.partial(microbatch_gradients, index=0, ctx=ctx),
                              out_shardings=replicated)
        self._accumulate = jax.jit(functools.partial(accumulate_microbatch, ctx=ctx),
                                   out_shardings=replicated, donate_argnums=1)
        self._apply = jax.jit(functools.partial(apply_gradients, ctx=ctx),
                              out_shardings=(replicated, replicated), donate_argnums=0)

    def __call__(self, state: TrainState,
                 batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
        """One training step; same arguments and results as :func:`train_step`."""
        images, labels, dropout_rng = self._prepare(state.step, batch)
        totals = self._first(state.params, images, labels, dropout_rng)
        for index in range(1, self.num_microbatches):
            totals = self._accumulate(state.params, totals, images, labels, dropout_rng,
                                      jnp.int32(index))
        return self._apply(state, *totals)


def eval_step(params: nnx.State, batch: dict[str, jax.Array],
              ctx: StepContext) -> dict[str, jax.Array]:
    """Returns the summed loss, correct predictions and example count of a padded batch."""
    model = nnx.view(nnx.merge(ctx.graphdef, params, ctx.rest), deterministic=True)
    logits = model(input_pipeline.normalize(batch["image"], ctx.mean, ctx.std))
    mask = batch["mask"]
    return {
        "loss": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
        "correct": jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * mask),
        "count": jnp.sum(mask),
    }


def evaluate(eval_fn: Any, params: nnx.State, data: datasets.ImageDataset,
             config: TrainConfig, sharding: NamedSharding) -> dict[str, float]:
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
        for k, v in jax.device_get(eval_fn(params, device_batch)).items():
            totals[k] += float(v)
    return {"test_loss": totals["loss"] / totals["count"],
            "test_accuracy": totals["correct"] / totals["count"]}


def load_data(config: TrainConfig) -> datasets.ImageDataset:
    """Loads the dataset, cut to the configured number of examples."""
    data = datasets.load(config.dataset, config.data_dir)
    train, test = slice(config.train_examples), slice(config.test_examples)
    return data._replace(train_images=data.train_images[train],
                         train_labels=data.train_labels[train],
                         test_images=data.test_images[test], test_labels=data.test_labels[test])


class _StopRequest:
    """Turns the first Ctrl-C into a request to checkpoint and stop; a second one aborts."""

    def __init__(self):
        self.requested = False
        self._previous = signal.getsignal(signal.SIGINT)

    def __enter__(self) -> "_StopRequest":
        signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc_info: Any) -> None:
        signal.signal(signal.SIGINT, self._previous)


def _mean_metrics(history: list[dict[str, jax.Array]]) -> dict[str, float]:
    """Fetches and averages the per-step metrics of a logging interval (one device sync)."""
    fetched = jax.device_get(history)
    return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def _log_progress(progress: reporting.Progress, step: int, record: dict[str, Any]) -> None:
    progress.update(step, loss=record["train_loss"], acc=record["train_accuracy"],
                    img_s=record["images_per_second"])


def train_and_evaluate(config: TrainConfig, workdir: str | pathlib.Path,
                       resume: bool = False) -> dict[str, Any]:
    """Trains and evaluates a model, writing metrics, checkpoints and a summary to workdir.

    Args:
      config: the run's configuration.
      workdir: the output directory (``metrics.jsonl``, ``summary.json``, ``checkpoints/``).
      resume: continue from the newest checkpoint in ``workdir`` if there is one.

    Returns:
      The summary that is also written to ``summary.json``.
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    wall_start = time.monotonic()
    is_main = jax.process_index() == 0

    # Devices: a 1-D mesh, batches split over it, parameters replicated.
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    batch_sharding, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    for name in ("batch_size", "eval_batch_size"):
        if getattr(config, name) % jax.device_count():
            raise ValueError(f"--{name.replace('_', '-')} {getattr(config, name)} does not "
                             f"divide by the {jax.device_count()} devices.")

    # Data.
    data = load_data(config)
    mean, std = input_pipeline.channel_stats(data.train_images)
    steps_per_epoch = input_pipeline.steps_per_epoch(len(data.train_images), config.batch_size)
    total_steps = config.steps or config.epochs * steps_per_epoch
    train_ds = input_pipeline.train_dataset(
        data.train_images, data.train_labels, global_batch_size=config.batch_size,
        seed=config.seed, process_index=jax.process_index(),
        process_count=jax.process_count())

    # Model, optimizer and the jitted steps.
    init_key, step_key = jax.random.split(jax.random.key(config.seed))
    model = create_model(config, data.num_classes, data.train_images.shape[-1],
                         nnx.Rngs(params=init_key, dropout=0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx, schedule = optim.create_optimizer(config, total_steps, steps_per_epoch)
    ctx = StepContext(graphdef, rest, tx, step_key, mean, std, config)
    state = jax.device_put(TrainState(jnp.zeros((), jnp.int32), params, tx.init(params)),
                           replicated)
    microbatches = num_microbatches(config)  # Also checks --microbatch-size.
    if microbatches > 1:
        train_fn = MicrobatchedStep(ctx, replicated, batch_sharding)
    else:
        train_fn = jax.jit(functools.partial(train_step, ctx=ctx),
                           in_shardings=(replicated, batch_sharding),
                           out_shardings=(replicated, replicated), donate_argnums=0)
    eval_fn = jax.jit(functools.partial(eval_step, ctx=ctx),
                      in_shardings=(replicated, batch_sharding), out_shardings=replicated)

    # Resume.
    checkpointer = checkpointing.Checkpointer(workdir / "checkpoints")
    data_state = None
    start_step = checkpointer.latest_step() if resume else None
    if start_step is not None:
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        state, data_state = checkpointer.restore(start_step, abstract)
    start_step = start_step or 0
    data_iterator = input_pipeline.iterate(train_ds, data_state)
    data_state = data_iterator.get_state()
    batches = input_pipeline.DevicePrefetcher(data_iterator, batch_sharding)
    writer = reporting.MetricsWriter(workdir, resume_step=start_step if resume else None)
    progress = reporting.Progress(total_steps, start_step, enabled=is_main)
    progress.message(
        f"{config.model}: {sum(x.size for x in jax.tree.leaves(params)):,} parameters, "
        f"{total_steps} steps of {config.batch_size}"
        + (f" ({microbatches} microbatches)" if microbatches > 1 else "")
        + f" on {jax.device_count()} "
        f"{jax.devices()[0].device_kind} device(s), starting at step {start_step}.")

    step, diverged, interrupted, history = start_step, False, False, []
    evals = [r for r in writer.previous_records if "test_accuracy" in r]
    timer_start, timer_step = None, start_step  # Set after the first (compiling) step.
    interval_start, interval_step = time.monotonic(), start_step
    try:
        with _StopRequest() as stop:
            while step < total_steps and not stop.requested:
                batch, next_data_state = next(batches)
                state, metrics = train_fn(state, batch)
                step, data_state = step + 1, next_data_state
                history.append(metrics)
                if timer_start is None:
                    jax.block_until_ready(metrics)
                    timer_start, timer_step = time.monotonic(), step
                    interval_start, interval_step = timer_start, step
                if step % config.log_every_steps == 0 or step == total_steps:
                    means = _mean_metrics(history)
                    now = time.monotonic()
                    record = {
                        "step": step, "epoch": step / steps_per_epoch,
                        "train_loss": means["loss"], "train_accuracy": means["accuracy"],
                        "learning_rate": float(schedule(step - 1)),
                        "clip_fraction": means["clip_fraction"],
                        "clip_fraction_by_param": {
                            k.split("/", 1)[1]: v for k, v in means.items()
                            if k.startswith("clip_fraction/")} or None,
                        # None for an interval holding only the first, compiling step.
                        "images_per_second": (step - interval_step) * config.batch_size
                        / max(now - interval_start, 1e-9) if step > interval_step else None,
                    }
                    history, interval_start, interval_step = [], now, step
                    if is_main:
                        writer.write(record)
                    _log_progress(progress, step, record)
                    if not np.isfinite(record["train_loss"]):
                        diverged = True
                        progress.message(f"Training diverged at step {step} (loss "
                                         f"{record['train_loss']}); stopping.")
                        break
                if step % steps_per_epoch == 0 or step == total_steps:
                    result = {"step": step, "epoch": step / steps_per_epoch,
                              **evaluate(eval_fn, state.params, data, config, batch_sharding)}
                    evals.append(result)
                    if is_main:
                        writer.write(result)
                    progress.message(f"step {step}: test_loss={result['test_loss']:.4f} "
                                     f"test_accuracy={result['test_accuracy']:.4f}")
                    checkpointer.save(step, state, data_state)
            if stop.requested:
                interrupted = True
                progress.message(f"Interrupted: saving a checkpoint at step {step}; "
                                 "continue with --resume.")
                checkpointer.save(step, state, data_state)
        if not evals and not diverged and not interrupted:  # Resumed a finished run.
            evals.append({"step": step, **evaluate(eval_fn, state.params, data, config,
                                                   batch_sharding)})
    finally:
        batches.close()
        checkpointer.close()
        progress.close()

    elapsed = time.monotonic() - (timer_start or time.monotonic())
    summary = {
        "final_test_accuracy": evals[-1]["test_accuracy"] if evals else None,
        "final_test_loss": evals[-1]["test_loss"] if evals else None,
        "best_test_accuracy": max((e["test_accuracy"] for e in evals), default=None),
        "steps": step,
        "wall_seconds": time.monotonic() - wall_start,
        # Excludes the first, compiling step; None when no other step ran.
        "images_per_second": ((step - timer_step) * config.batch_size / elapsed
                              if step > timer_step and elapsed else None),
        "device_kind": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
        "diverged": diverged,
        "interrupted": interrupted,
        "resumed_from_step": start_step if resume else None,
        "jax_version": jax.__version__,
        "config": dataclasses.asdict(config),
    }
    if is_main:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def maybe_initialize_distributed() -> None:
    """Calls ``jax.distributed.initialize`` on a multi-host launch.

    Under SLURM, Open MPI or on a TPU pod JAX discovers the processes itself. A launch by
    hand sets ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` in every process; JAX does not read the
    last two, so they are passed on here. Nothing happens on a single-process launch or
    when the caller already initialised ``jax.distributed``.
    """
    if jax.distributed.is_initialized():
        return
    if os.environ.get("JAX_NUM_PROCESSES"):
        missing = [v for v in ("JAX_COORDINATOR_ADDRESS", "JAX_PROCESS_ID") if v not in os.environ]
        if missing:
            raise ValueError(f"JAX_NUM_PROCESSES is set but {missing} are not: a launch by hand "
                             "sets all three in every process.")
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
        return
    cluster_vars = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
    cluster_tasks = max(int(os.environ.get(v) or 1) for v in cluster_vars)
    if cluster_tasks > 1 or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (130 when interrupted)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr,
                        force=True)
    for noisy in ("absl", "orbax", "jax"):  # Their INFO lines would drown the progress lines.
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config, workdir, resume = cli.parse(argv)
    maybe_initialize_distributed()
    summary = train_and_evaluate(config, workdir, resume=resume)
    if summary["diverged"]:  # A finding, not a failure: grids of runs expect some.
        logging.info("The run diverged (non-finite loss); see %s/summary.json.", workdir)
        return 0
    if summary["interrupted"]:
        return 130
    logging.info("final test accuracy %.4f, best %.4f, %s images/s, %.0f s",
                 summary["final_test_accuracy"], summary["best_test_accuracy"],
                 f"{summary['images_per_second'] or 0:.0f}", summary["wall_seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
