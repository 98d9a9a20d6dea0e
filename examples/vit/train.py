"""Trains a ViT with AdamW and adaptive gradient clipping (AGC), data-parallel.

    python -m examples.vit.main --preset cpu --workdir runs/vit_cpu

Read it top to bottom: :func:`create_optimizer` wraps AdamW in ``with_agc`` (AGC before or
after it, ``--agc-placement``), :func:`train_step` computes the gradient and applies that
optimizer, :func:`eval_step` scores a batch, and :func:`train_and_evaluate` is the loop (the
NF-ResNet example's, repeated rather than shared, as Flax's examples do). What is not
about training (data, devices, checkpoints, work directories, progress) comes from
:mod:`examples.common`.

References:
  Loshchilov, Hutter, *Decoupled Weight Decay Regularization*, ICLR 2019,
  arXiv:1711.05101 (AdamW).
  Brock, De, Smith, Simonyan, *High-Performance Large-Scale Image Recognition Without
  Normalization*, ICML 2021, arXiv:2102.06171 (AGC, section 4.1).
"""

import dataclasses
import functools
import pathlib
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import agc_optax
from examples.common import (
    checkpointing,
    datasets,
    devices,
    errors,
    input_pipeline,
    preemption,
    reporting,
)
from examples.common import workdir as workdir_lib
from examples.vit import models, optim
from examples.vit.configs import TrainConfig

Batch = dict[str, jax.Array]
Metrics = dict[str, Any]


class TrainState(NamedTuple):
    """What a training step reads and writes, and a checkpoint stores.

    Attributes:
      step: the number of steps taken.
      params: the model's ``nnx.Param`` leaves.
      batch_stats: the model's ``nnx.BatchStat`` leaves: a ViT has none (empty).
      opt_state: the optimizer's state (AGC's statistics of the last step among it).
    """

    step: jax.Array
    params: nnx.State
    batch_stats: nnx.State
    opt_state: optax.OptState


@dataclasses.dataclass(frozen=True)
class Static:
    """What the steps close over: the model's structure, the optimizer, the constants.

    Attributes:
      graphdef: the model's structure; with ``params``, ``batch_stats`` and ``rest`` it
        makes the model again (:meth:`model`).
      rest: the model's other state (its random streams, reseeded every step).
      tx: the optimizer.
      schedule: its learning-rate schedule (for the records).
      key: the root of the per-step augmentation and dropout randomness.
      mean: per-channel pixel mean of the training images, in [0, 1] units.
      std: per-channel pixel standard deviation.
      config: the run's configuration.
    """

    graphdef: nnx.GraphDef
    rest: nnx.State
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    key: jax.Array
    mean: np.ndarray
    std: np.ndarray
    config: TrainConfig

    def model(self, params: nnx.State, batch_stats: nnx.State) -> nnx.Module:
        """The model holding ``params`` and ``batch_stats`` (a copy: steps stay pure)."""
        return nnx.merge(self.graphdef, params, batch_stats, self.rest, copy=True)


def create_optimizer(config: TrainConfig, total_steps: int,
                     steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW (weight decay on kernels only) wrapped in AGC, or global-norm clipping.

    ``--agc-placement before`` clips each unit's gradient before AdamW, as in the NFNets
    paper; ``after`` clips each unit's update. The learning rate warms up linearly to
    ``lr``, then decays to 0 by a cosine.

    Args:
      config: ``clipping`` 0 leaves AGC out; ``clip_global_norm`` > 0 adds
        ``optax.clip_by_global_norm`` before AdamW.
      total_steps: the run's length, for the cosine decay.
      steps_per_epoch: to turn ``warmup_epochs`` into steps.

    Returns:
      The optimizer and its learning-rate schedule.

    Raises:
      UserError: ``--b1`` or ``--b2`` is outside [0, 1).
    """
    for name in ("b1", "b2"):
        if not 0 <= getattr(config, name) < 1:
            raise errors.UserError(f"--{name} {getattr(config, name)}: AdamW's moment decay "
                                   "must be in [0, 1) (optax's defaults: --b1 0.9 --b2 0.999).")
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total_steps - 1)
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.lr, warmup, total_steps, 0.0)
    is_kernel = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda path, _: agc_optax.path_to_str(path).endswith("kernel"), params)
    optimizer = optax.adamw(schedule, b1=config.b1, b2=config.b2,
                            weight_decay=config.weight_decay, mask=is_kernel)
    if config.clip_global_norm > 0:
        optimizer = optax.chain(optax.clip_by_global_norm(config.clip_global_norm), optimizer)
    if config.clipping <= 0:
        return optimizer, schedule
    if config.agc_placement not in optim.AGC_PLACEMENTS:
        raise ValueError(f"Unknown --agc-placement {config.agc_placement!r}; "
                         f"choose from {optim.AGC_PLACEMENTS}.")
    return agc_optax.with_agc(optimizer, config.clipping, config.agc_eps,
                              placement=config.agc_placement, unit_axes=models.unit_axes(config),
                              exclude=optim.agc_exclude(config), track_stats=True), schedule


def create_train_state(config: TrainConfig, *, num_classes: int, in_features: int,
                       mean: np.ndarray, std: np.ndarray, total_steps: int,
                       steps_per_epoch: int) -> tuple[TrainState, Static]:
    """Builds the model and the optimizer: the state at step 0 and what the steps close over.

    Raises:
      UserError: ``--agc-exclude`` matches no parameter.
    """
    init_key, step_key = jax.random.split(jax.random.key(config.seed))
    model = models.create_model(config, num_classes, in_features,
                                nnx.Rngs(params=init_key, dropout=0))
    graphdef, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    tx, schedule = create_optimizer(config, total_steps, steps_per_epoch)
    try:
        opt_state = tx.init(params)
    except agc_optax.ExcludeError as e:
        raise errors.UserError(f"--agc-exclude {config.agc_exclude!r}: {e}") from e
    static = Static(graphdef, rest, tx, schedule, step_key, mean, std, config)
    return TrainState(jnp.zeros((), jnp.int32), params, batch_stats, opt_state), static


def loss_and_grads(params: nnx.State, batch_stats: nnx.State, images: jax.Array,
                   labels: jax.Array, dropout_key: jax.Array,
                   static: Static) -> tuple[nnx.State, Metrics, nnx.State]:
    """The gradient of the mean label-smoothed cross-entropy, its metrics, new batch stats."""

    def loss_fn(params):
        model = static.model(params, batch_stats)
        nnx.reseed(model, dropout=dropout_key)
        logits = model(images)
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]),
                                      static.config.label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        return loss, (logits, nnx.state(model, nnx.BatchStat))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return grads, {"loss": loss, "accuracy": accuracy}, batch_stats


def microbatched_loss_and_grads(params: nnx.State, batch_stats: nnx.State, images: jax.Array,
                                labels: jax.Array, dropout_key: jax.Array, static: Static,
                                count: int) -> tuple[nnx.State, Metrics, nnx.State]:
    """:func:`loss_and_grads` averaged over ``count`` microbatches (gradient accumulation).

    Microbatch ``k`` holds examples ``k, k + count, …``: a strided slice keeps each device's
    share on that device. AGC then clips the whole batch's gradient once, as at the full
    batch size. BatchNorm normalizes each microbatch on its own ("ghost" batch norm).
    """
    split = lambda x: jnp.swapaxes(x.reshape(-1, count, *x.shape[1:]), 0, 1)  # noqa: E731

    def accumulate(carry, microbatch):
        grads, metrics, batch_stats = carry
        index, images, labels = microbatch
        more = loss_and_grads(params, batch_stats, images, labels,
                              jax.random.fold_in(dropout_key, index), static)
        add = lambda a, b: jax.tree.map(lambda x, y: x + y / count, a, b)  # noqa: E731
        return (add(grads, more[0]), add(metrics, more[1]), more[2]), None

    zeros = (jax.tree.map(jnp.zeros_like, params), {"loss": 0.0, "accuracy": 0.0}, batch_stats)
    microbatches = (jnp.arange(count), split(images), split(labels))
    return jax.lax.scan(accumulate, zeros, microbatches)[0]


def agc_statistics(opt_state: optax.OptState) -> Metrics:
    """What AGC reports about the step (:class:`agc_optax.AGCState`); NaN without AGC.

    ``clip_fraction_by_param`` averages the leaves' clipped fractions per kind of parameter
    (the last key of its path: ``kernel``, ``skip_gain``, …).
    """
    get = lambda name: optax.tree_utils.tree_get(opt_state, name)  # noqa: E731
    by_kind: dict[str, list[jax.Array]] = {}
    for path, fraction in (get("leaf_clip_fraction") or {}).items():
        by_kind.setdefault(path.rsplit("/", 1)[-1], []).append(fraction)
    names = ("clip_fraction", "grad_norm", "clipped_grad_norm", "max_ratio")
    return {**{name: jnp.nan if get(name) is None else get(name) for name in names},
            "clip_fraction_by_param": {kind: jnp.mean(jnp.stack(fractions))
                                       for kind, fractions in by_kind.items()}}


def train_step(state: TrainState, batch: Batch, static: Static,
               microbatches: int = 1) -> tuple[TrainState, Metrics]:
    """One optimizer step: augment, gradient, AGC and the optimizer, new state.

    Args:
      state: the current state (replicated).
      batch: ``{"image": uint8 NHWC, "label": int}``, split over the devices.
      static: what the step closes over.
      microbatches: accumulate the gradient over this many microbatches.

    Returns:
      The new state and the step's ``loss``, ``accuracy`` and AGC's statistics.
    """
    config = static.config
    augment_key, dropout_key = jax.random.split(jax.random.fold_in(static.key, state.step))
    images = input_pipeline.normalize(batch["image"], static.mean, static.std)
    images = input_pipeline.augment(augment_key, images, config.crop_padding, config.flip,
                                    config.erase_probability)
    if microbatches > 1:
        grads, metrics, batch_stats = microbatched_loss_and_grads(
            state.params, state.batch_stats, images, batch["label"], dropout_key, static,
            microbatches)
    else:
        grads, metrics, batch_stats = loss_and_grads(
            state.params, state.batch_stats, images, batch["label"], dropout_key, static)
    updates, opt_state = static.tx.update(grads, state.opt_state, state.params)  # AGC first.
    params = optax.apply_updates(state.params, updates)
    new_state = TrainState(state.step + 1, params, batch_stats, opt_state)
    return new_state, {**metrics, **agc_statistics(opt_state)}


def eval_step(state: TrainState, batch: Batch, static: Static) -> Metrics:
    """The summed loss, correct predictions and example count of a padded batch.

    The model runs in evaluation mode: no dropout or stochastic depth, and BatchNorm
    normalizes with its running averages.
    """
    model = nnx.view(static.model(state.params, state.batch_stats), deterministic=True,
                     use_running_average=True, raise_if_not_found=False)
    logits = model(input_pipeline.normalize(batch["image"], static.mean, static.std))
    labels, mask = batch["label"], batch["mask"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return {"loss": jnp.sum(loss * mask),
            "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
            "count": jnp.sum(mask)}


def evaluate(eval_fn: Any, state: TrainState, data: input_pipeline.InMemoryData,
             sharding: jax.sharding.NamedSharding) -> dict[str, float]:
    """``test_loss`` and ``test_accuracy`` over the whole test set, in padded batches."""
    totals = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    for batch in data.eval_batches():
        device_batch = {k: jax.make_array_from_process_local_data(sharding, v)
                        for k, v in batch.items()}
        for name, value in jax.device_get(eval_fn(state, device_batch)).items():
            totals[name] += float(value)
    return {"test_loss": totals["loss"] / totals["count"],
            "test_accuracy": totals["correct"] / totals["count"]}


class Setup(NamedTuple):
    """Everything a run builds before its first step.

    Attributes:
      data: the dataset (cut to ``train_examples`` / ``test_examples``), in memory.
      state: the state at step 0, replicated over the devices.
      static: what the steps close over.
      train_fn: ``train_step`` jitted with the batch split over the devices.
      eval_fn: ``eval_step`` jitted likewise.
      mesh: the batch and state shardings.
      steps_per_epoch: full batches in one pass over the training set.
      total_steps: the run's length.
    """

    data: input_pipeline.InMemoryData
    state: TrainState
    static: Static
    train_fn: Any
    eval_fn: Any
    mesh: devices.DataParallel
    steps_per_epoch: int
    total_steps: int


def set_up(config: TrainConfig) -> Setup:
    """Loads the data, builds the state and jits the steps, data-parallel over every device."""
    mesh = devices.data_parallel(config)
    images = datasets.load(config.dataset, config.data_dir,
                           train_examples=config.train_examples,
                           test_examples=config.test_examples)
    data = input_pipeline.InMemoryData(
        config.dataset, images, config.batch_size,
        devices.eval_batch_size(config.eval_batch_size, len(images.test_images)))
    steps_per_epoch = input_pipeline.steps_per_epoch(data.num_train_examples, config.batch_size)
    total_steps = config.steps or config.epochs * steps_per_epoch
    state, static = create_train_state(
        config, num_classes=data.num_classes, in_features=data.in_features, mean=data.mean,
        std=data.std, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    step = functools.partial(train_step, static=static,
                             microbatches=devices.num_microbatches(config))
    train_fn = jax.jit(step, in_shardings=(mesh.replicated, mesh.batch),
                       out_shardings=mesh.replicated, donate_argnums=0)
    eval_fn = jax.jit(functools.partial(eval_step, static=static),
                      in_shardings=(mesh.replicated, mesh.batch), out_shardings=mesh.replicated)
    return Setup(data, jax.device_put(state, mesh.replicated), static, train_fn, eval_fn, mesh,
                 steps_per_epoch, total_steps)


def train_and_evaluate(config: TrainConfig, workdir: str | pathlib.Path, resume: bool = False,
                       overwrite: bool = False) -> dict[str, Any]:
    """Trains and evaluates a ViT; writes metrics, checkpoints and a summary to workdir.

    Args:
      config: the run's configuration.
      workdir: the run's directory (``config.json``, ``metrics.jsonl``, ``summary.json``,
        ``checkpoints/``); it must not hold another run (:mod:`examples.common.workdir`).
      resume: continue the run in ``workdir`` from its newest checkpoint.
      overwrite: delete the run in ``workdir`` first.

    Returns:
      The summary that is also written to ``summary.json``.

    Raises:
      UserError: a flag out of range, a work directory holding another run, an
        unwritable file.
    """
    started_at = time.monotonic()
    errors.validate(config)
    devices.use_cpu_devices(config.cpu_devices)  # Before anything starts JAX's backends.
    run = workdir_lib.RunDirectory(workdir, config, resume=resume, overwrite=overwrite)
    setup = set_up(config)
    run.claim(has_batch_stats=bool(jax.tree.leaves(setup.state.batch_stats)))
    checkpointer = checkpointing.Checkpointer(run.checkpoints)
    state, data_state, step = checkpointer.restore_latest(setup.state, resume)
    log = reporting.RunLog(run.path, config.batch_size, setup.total_steps, step, resume,
                           started_at)
    batches, data_state = input_pipeline.device_batches(
        setup.data.train_batches(config.seed, data_state), setup.mesh.batch)
    evaluate_now = lambda: evaluate(setup.eval_fn, state, setup.data, setup.mesh.batch)  # noqa: E731
    log.message(reporting.describe_run(config, state.params, setup.total_steps, step))
    history: list[Metrics] = []
    try:
        with preemption.StopRequest() as stop:
            while step < setup.total_steps and not stop.poll(step) and not log.diverged:
                batch, data_state = next(batches)
                state, metrics = setup.train_fn(state, batch)
                step += 1
                history.append(metrics)
                log.throughput.started(metrics, step)
                devices.limit_steps_ahead(history)
                if step % config.log_every_steps == 0 or step == setup.total_steps:
                    log.train_record(step, setup.steps_per_epoch, history,
                                     float(setup.static.schedule(step - 1)))
                    history = []
                if not log.diverged and (step % setup.steps_per_epoch == 0
                                         or step == setup.total_steps):
                    log.eval_record(step, setup.steps_per_epoch, evaluate_now())
                    checkpointer.save(step, state, data_state)
            if stop.requested:
                log.stopped(stop.signum, step)
                checkpointer.save(step, state, data_state)
        if not log.evals and not log.diverged and not stop.requested:  # A finished run resumed.
            log.evals.append({"step": step, **evaluate_now()})
    finally:
        batches.close()
        checkpointer.close()
        log.close()
    return log.write_summary(config, step, state.params, stop.signum)


if __name__ == "__main__":  # `python -m examples.vit.train` is the same command as main.
    from examples.vit import main

    raise SystemExit(main.main())
