"""Trains an NF-ResNet with adaptive gradient clipping (AGC), data-parallel over every device.

    python -m examples.nf_resnet.main --preset cpu --workdir runs/cpu

Read it top to bottom: :func:`create_optimizer` puts ``agc`` first in the optimizer's chain,
:func:`train_step` computes the gradient and applies that optimizer, :func:`eval_step`
scores a batch, and :func:`train_and_evaluate` is the loop. What is not about training
(data, devices, checkpoints, work directories, progress) comes from :mod:`examples.common`.

References:
  Brock, De, Smith, Simonyan, *High-Performance Large-Scale Image Recognition Without
  Normalization*, ICML 2021, arXiv:2102.06171 (AGC, section 4.1; the training recipe).
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
from examples.common import checkpointing, devices, errors, input_pipeline, preemption, reporting
from examples.common import workdir as workdir_lib
from examples.nf_resnet import configs, image_data, mixing, networks
from examples.nf_resnet.configs import TrainConfig

Batch = dict[str, jax.Array]
Metrics = dict[str, Any]


class TrainState(NamedTuple):
    """What a training step reads and writes, and a checkpoint stores.

    Attributes:
      step: the number of steps taken.
      params: the model's ``nnx.Param`` leaves.
      batch_stats: BatchNorm's running averages (``nnx.BatchStat``); empty for an NF-ResNet.
      opt_state: the optimizer's state (AGC's statistics of the last step among it).
      ema_params: the exponential moving average of ``params`` (``--ema-decay``; empty
        without), what evaluation scores when the recipe has one.
    """

    step: jax.Array
    params: nnx.State
    batch_stats: nnx.State
    opt_state: optax.OptState
    ema_params: nnx.State


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
      num_classes: outputs of the classifier.
      config: the run's configuration.
    """

    graphdef: nnx.GraphDef
    rest: nnx.State
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    key: jax.Array
    mean: np.ndarray
    std: np.ndarray
    num_classes: int
    config: TrainConfig

    def model(self, params: nnx.State, batch_stats: nnx.State) -> nnx.Module:
        """The model holding ``params`` and ``batch_stats`` (a copy: steps stay pure)."""
        return nnx.merge(self.graphdef, params, batch_stats, self.rest, copy=True)


def create_optimizer(config: TrainConfig, total_steps: int,
                     steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AGC, then weight decay on the kernels, then SGD with Nesterov momentum.

    AGC sees the loss gradient only (weight decay is added after clipping, as in the
    NFNets code) and leaves the classifier alone (``agc_exclude``). The peak learning rate
    ``lr · batch_size / 256`` is reached by a linear warm-up and followed by cosine decay.

    Args:
      config: ``clipping`` 0 leaves AGC out; ``clip_global_norm`` > 0 adds the classic
        global-norm clipping after it.
      total_steps: the run's length, for the cosine decay.
      steps_per_epoch: to turn ``warmup_epochs`` into steps.

    Returns:
      The optimizer and its learning-rate schedule.
    """
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total_steps - 1)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.lr * config.batch_size / 256, warmup, total_steps, 0.0)
    clipping = []
    if config.clipping > 0:
        clipping.append(agc_optax.agc(config.clipping, config.agc_eps,
                                      exclude=config.agc_exclude, track_stats=True))
    if config.clip_global_norm > 0:
        clipping.append(optax.clip_by_global_norm(config.clip_global_norm))
    is_kernel = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda path, _: agc_optax.path_to_str(path).endswith("kernel"), params)
    tx = optax.chain(*clipping, optax.add_decayed_weights(config.weight_decay, mask=is_kernel),
                     optax.sgd(schedule, momentum=config.momentum, nesterov=True))
    return tx, schedule


def create_train_state(config: TrainConfig, *, num_classes: int, in_features: int,
                       mean: np.ndarray, std: np.ndarray, total_steps: int,
                       steps_per_epoch: int) -> tuple[TrainState, Static]:
    """Builds the model and the optimizer: the state at step 0 and what the steps close over.

    Raises:
      UserError: ``--agc-exclude`` matches no parameter.
    """
    init_key, step_key = jax.random.split(jax.random.key(config.seed))
    model = networks.create_model(config, num_classes, in_features,
                                nnx.Rngs(params=init_key, dropout=0))
    graphdef, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    tx, schedule = create_optimizer(config, total_steps, steps_per_epoch)
    try:
        opt_state = tx.init(params)
    except agc_optax.ExcludeError as e:
        raise errors.UserError(f"--agc-exclude {config.agc_exclude!r}: {e}") from e
    static = Static(graphdef, rest, tx, schedule, step_key, mean, std, num_classes, config)
    ema_params = jax.tree.map(jnp.copy, params) if config.ema_decay > 0 else nnx.State({})
    return TrainState(jnp.zeros((), jnp.int32), params, batch_stats, opt_state,
                      ema_params), static


def loss_and_grads(params: nnx.State, batch_stats: nnx.State, images: jax.Array,
                   targets: jax.Array, labels: jax.Array, dropout_key: jax.Array,
                   static: Static) -> tuple[nnx.State, Metrics, nnx.State]:
    """The gradient of the mean cross-entropy, its metrics and the new batch statistics.

    ``targets`` are class probabilities (one-hot, or mixed by MixUp/CutMix), smoothed here
    by ``label_smoothing``; the integer ``labels`` only score the accuracy.
    """

    def loss_fn(params):
        model = static.model(params, batch_stats)
        nnx.reseed(model, dropout=dropout_key)
        logits = model(images)
        smoothed = optax.smooth_labels(targets, static.config.label_smoothing)
        loss = optax.softmax_cross_entropy(logits, smoothed).mean()
        return loss, (logits, nnx.state(model, nnx.BatchStat))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return grads, {"loss": loss, "accuracy": accuracy}, batch_stats


def microbatched_loss_and_grads(params: nnx.State, batch_stats: nnx.State, images: jax.Array,
                                targets: jax.Array, labels: jax.Array, dropout_key: jax.Array,
                                static: Static, count: int) -> tuple[nnx.State, Metrics,
                                                                     nnx.State]:
    """:func:`loss_and_grads` averaged over ``count`` microbatches (gradient accumulation).

    Microbatch ``k`` holds examples ``k, k + count, …``: a strided slice keeps each device's
    share on that device. AGC then clips the whole batch's gradient once, as at the full
    batch size. BatchNorm normalizes each microbatch on its own ("ghost" batch norm).
    """
    split = lambda x: jnp.swapaxes(x.reshape(-1, count, *x.shape[1:]), 0, 1)  # noqa: E731

    def accumulate(carry, microbatch):
        grads, metrics, batch_stats = carry
        index, *data = microbatch
        more = loss_and_grads(params, batch_stats, *data,
                              jax.random.fold_in(dropout_key, index), static)
        add = lambda a, b: jax.tree.map(lambda x, y: x + y / count, a, b)  # noqa: E731
        return (add(grads, more[0]), add(metrics, more[1]), more[2]), None

    zeros = (jax.tree.map(jnp.zeros_like, params), {"loss": 0.0, "accuracy": 0.0}, batch_stats)
    microbatches = (jnp.arange(count), split(images), split(targets), split(labels))
    return jax.lax.scan(accumulate, zeros, microbatches)[0]


def prepare_batch(batch: Batch, key: jax.Array, static: Static) -> tuple[jax.Array, jax.Array]:
    """Normalized images and their targets; augmented and mixed as configured.

    Fashion-MNIST, MNIST and CIFAR-10 are cropped, flipped and erased here, on the devices;
    the image datasets come cropped from the host. MixUp/CutMix (``--mixing``) mix images
    and targets alike.
    """
    config = static.config
    images = input_pipeline.normalize(batch["image"], static.mean, static.std)
    if not image_data.is_image_dataset(config.dataset):
        images = input_pipeline.augment(key, images, config.crop_padding, config.flip,
                                        config.erase_probability)
    num_classes = static.num_classes
    targets = jax.nn.one_hot(batch["label"], num_classes)
    if config.mixing != "none":
        images, targets = mixing.mix(jax.random.fold_in(key, 1), images, batch["label"],
                                     num_classes, config.mixing, config.mixup_alpha)
    return images, targets


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
    augment_key, dropout_key = jax.random.split(jax.random.fold_in(static.key, state.step))
    images, targets = prepare_batch(batch, augment_key, static)
    data = (images, targets, batch["label"], dropout_key, static)
    if microbatches > 1:
        grads, metrics, batch_stats = microbatched_loss_and_grads(
            state.params, state.batch_stats, *data, microbatches)
    else:
        grads, metrics, batch_stats = loss_and_grads(state.params, state.batch_stats, *data)
    updates, opt_state = static.tx.update(grads, state.opt_state, state.params)  # AGC first.
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if static.config.ema_decay > 0:  # DeepMind's warm-up: min(decay, (1 + t) / (10 + t)).
        decay = jnp.minimum(static.config.ema_decay, (1.0 + state.step) / (10.0 + state.step))
        ema_params = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema_params, params)
    new_state = TrainState(state.step + 1, params, batch_stats, opt_state, ema_params)
    return new_state, {**metrics, **agc_statistics(opt_state)}


def eval_step(state: TrainState, batch: Batch, static: Static) -> Metrics:
    """The summed loss, top-1 and top-5 hits and example count of a padded batch.

    The model runs in evaluation mode (no dropout or stochastic depth; BatchNorm's running
    averages), with the EMA of the weights when the run keeps one.
    """
    params = state.ema_params if static.config.ema_decay > 0 else state.params
    model = nnx.view(static.model(params, state.batch_stats), deterministic=True,
                     use_running_average=True, raise_if_not_found=False)
    logits = model(input_pipeline.normalize(batch["image"], static.mean, static.std))
    labels, mask = batch["label"], batch["mask"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    return {"loss": jnp.sum(loss * mask),
            "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
            "correct_top5": jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask),
            "count": jnp.sum(mask)}


def evaluate(eval_fn: Any, state: TrainState, data: Any,
             sharding: jax.sharding.NamedSharding) -> dict[str, float]:
    """``test_loss``, ``test_accuracy`` and ``test_top5_accuracy`` over the whole test set."""
    totals = {"loss": 0.0, "correct": 0.0, "correct_top5": 0.0, "count": 0.0}
    for batch in data.eval_batches():
        device_batch = {k: jax.make_array_from_process_local_data(sharding, v)
                        for k, v in batch.items()}
        for name, value in jax.device_get(eval_fn(state, device_batch)).items():
            totals[name] += float(value)
    return {"test_loss": totals["loss"] / totals["count"],
            "test_accuracy": totals["correct"] / totals["count"],
            "test_top5_accuracy": totals["correct_top5"] / totals["count"]}


class Setup(NamedTuple):
    """Everything a run builds before its first step.

    The dataset, the state (replicated), the steps' constants, the jitted steps (the batch
    split over the devices), the shardings and the run's length.
    """

    data: Any
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
    data = image_data.load_dataset(config)
    steps_per_epoch = input_pipeline.steps_per_epoch(data.num_train_examples, config.batch_size)
    total_steps = config.steps or config.epochs * steps_per_epoch
    state, static = create_train_state(
        config, num_classes=data.num_classes, in_features=data.in_features,
        mean=data.mean, std=data.std, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
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
    """Trains and evaluates an NF-ResNet; writes metrics, checkpoints and a summary to workdir.

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
    configs.validate(config)  # The shared checks and the image datasets' flags.
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


if __name__ == "__main__":  # `python -m examples.nf_resnet.train` is the same command as main.
    from examples.nf_resnet import main

    raise SystemExit(main.main())
