"""The pure training and evaluation steps, and gradient accumulation over microbatches.

:func:`train_step` and :func:`eval_step` are pure functions of a
:class:`~examples.common.state.TrainState` and a global batch, jitted by the trainer.
With ``--microbatch-size`` the trainer runs :class:`MicrobatchedStep` instead: the same
step with the gradient summed over microbatches, one jitted call per microbatch.
"""

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding

from examples.common import input_pipeline
from examples.common.config import LoopConfig
from examples.common.errors import UserError
from examples.common.state import StepContext, TrainState, cross_entropy

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array | dict[str, jax.Array]]


def num_microbatches(config: LoopConfig) -> int:
    """Returns how many microbatches a global batch is split into (1: none).

    Raises:
      UserError: ``--microbatch-size`` does not divide ``--batch-size``, or is not a
        multiple of the device count (every device takes an equal share of a microbatch).
    """
    size = config.microbatch_size
    if not size or size >= config.batch_size:
        return 1
    devices = jax.device_count()
    if config.batch_size % size or size % devices:
        candidates = [d for d in range(devices, size + 1, devices) if config.batch_size % d == 0]
        raise UserError(
            f"--microbatch-size {size} must divide --batch-size {config.batch_size} and be a "
            f"multiple of the {devices} devices; e.g. --microbatch-size "
            f"{max(candidates, default=config.batch_size)}.")
    return config.batch_size // size


def prepare_batch(step: jax.Array, batch: Batch,
                  ctx: StepContext) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Normalizes and augments a global batch.

    Returns:
      ``(images, labels, dropout_key)``: float images, their labels and the step's key for
      dropout and stochastic depth.
    """
    config = ctx.config
    aug_rng, dropout_rng = jax.random.split(jax.random.fold_in(ctx.key, step))
    images = input_pipeline.normalize(batch["image"], ctx.mean, ctx.std)
    images = input_pipeline.augment(aug_rng, images, config.crop_padding, config.flip,
                                    config.erase_probability)
    return images, batch["label"], dropout_rng


def gradients(params: nnx.State, model_state: nnx.State, images: jax.Array, labels: jax.Array,
              dropout_rng: jax.Array, ctx: StepContext, index: jax.Array | int = 0,
              count: int = 1) -> tuple[nnx.State, Metrics, nnx.State]:
    """Gradient and metrics of microbatch ``index`` of ``count`` of a prepared global batch.

    Microbatch ``k`` of ``n`` holds examples ``k, k + n, k + 2n, …``: a strided slice keeps
    every device's share on that device. Its loss is scaled by ``1 / n``, so the gradients
    of the ``n`` microbatches sum to the gradient of the whole batch's mean loss (exactly
    so for a model without batch statistics, up to float rounding and dropout masks). A
    BatchNorm model normalizes each microbatch with that microbatch's statistics (over
    all devices), so the sum is the gradient of "ghost" batch norm over groups of
    ``batch_size / n`` examples, and the running averages move once per microbatch. With
    ``count = 1`` this is the plain full-batch gradient.

    Returns:
      ``(gradient, {"loss", "accuracy"}, model_state)``: the gradient and metrics already
      divided by ``count``, and the model state after this forward pass (BatchNorm's
      running averages moved by this microbatch's statistics).
    """
    if count > 1:
        pick = lambda x: jax.lax.dynamic_index_in_dim(  # noqa: E731
            x.reshape(x.shape[0] // count, count, *x.shape[1:]), index, axis=1, keepdims=False)
        images, labels = pick(images), pick(labels)
        dropout_rng = jax.random.fold_in(dropout_rng, index)

    def loss_fn(params):
        # A copy, so reseeding the random streams does not touch the constants in ctx.
        model = ctx.merge(params, model_state, copy=True)
        nnx.reseed(model, dropout=dropout_rng)
        logits = model(images)
        loss = jnp.mean(ctx.family.loss(logits, labels, ctx.config))
        return loss / count, (logits, nnx.state(model, nnx.BatchStat))

    (loss, (logits, new_model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels) / count
    return grads, {"loss": loss, "accuracy": accuracy}, new_model_state


def accumulate(params: nnx.State, totals: tuple[nnx.State, Metrics, nnx.State],
               images: jax.Array, labels: jax.Array, dropout_rng: jax.Array, index: jax.Array,
               ctx: StepContext, count: int) -> tuple[nnx.State, Metrics, nnx.State]:
    """Adds microbatch ``index``'s gradient and metrics to ``totals``; carries the model state."""
    grads, metrics, model_state = totals
    more_grads, more_metrics, model_state = gradients(
        params, model_state, images, labels, dropout_rng, ctx, index, count)
    return (jax.tree.map(jnp.add, grads, more_grads),
            jax.tree.map(jnp.add, metrics, more_metrics), model_state)


def apply_gradients(state: TrainState, grads: nnx.State, metrics: Metrics,
                    model_state: nnx.State, ctx: StepContext) -> tuple[TrainState, Metrics]:
    """Clips and applies a whole batch's gradient; adds AGC's statistics to the metrics.

    Returns:
      The new state and ``metrics`` plus AGC's statistics (:class:`agc_optax.AGCState`):
      ``clip_fraction``, ``grad_norm`` and ``clipped_grad_norm`` (the gradient norm of the
      clipped leaves before and after clipping) and ``max_ratio`` (the largest
      ‖G_i‖ / max(‖W_i‖, ε)), each NaN without AGC, and ``clip_fraction_by_param``: for
      every kind of parameter (:func:`parameter_kind`), the mean over its leaves of the
      fraction of their units clipped (empty without AGC).
    """
    updates, opt_state = ctx.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    clip_fraction = optax.tree_utils.tree_get(opt_state, "clip_fraction")
    leaf_fractions = optax.tree_utils.tree_get(opt_state, "leaf_clip_fraction") or {}
    by_kind: dict[str, list[jax.Array]] = {}
    for path, fraction in leaf_fractions.items():
        by_kind.setdefault(parameter_kind(path), []).append(fraction)
    statistics = {name: optax.tree_utils.tree_get(opt_state, name)
                  for name in ("grad_norm", "clipped_grad_norm", "max_ratio")}
    metrics = {**metrics,
               "clip_fraction": jnp.nan if clip_fraction is None else clip_fraction,
               **{name: jnp.nan if value is None else value
                  for name, value in statistics.items()},
               "clip_fraction_by_param": {kind: jnp.mean(jnp.stack(fractions))
                                          for kind, fractions in by_kind.items()}}
    return TrainState(state.step + 1, params, model_state, opt_state), metrics


def parameter_kind(path: str) -> str:
    """The kind of a parameter, from its path: ``"blocks/0/convs/1/kernel"`` -> ``"kernel"``.

    The trainer logs AGC's clip fraction per kind, e.g. to see that zero-initialised skip
    gains are clipped at their ε floor while few kernel units are.
    """
    return path.rsplit("/", 1)[-1]


def train_step(state: TrainState, batch: Batch, ctx: StepContext) -> tuple[TrainState, Metrics]:
    """One optimizer step on a global batch: augment, forward, backward, clip, update.

    Args:
      state: the current state (replicated).
      batch: ``{"image": uint8 NHWC, "label": int}``, sharded over the batch axis.
      ctx: the step's constants.

    Returns:
      The new state and the step's ``loss``, ``accuracy``, ``clip_fraction`` and
      ``clip_fraction_by_param``.
    """
    images, labels, dropout_rng = prepare_batch(state.step, batch, ctx)
    totals = gradients(state.params, state.model_state, images, labels, dropout_rng, ctx)
    return apply_gradients(state, *totals, ctx)


class MicrobatchedStep:
    """:func:`train_step` with the gradient summed over microbatches (``--microbatch-size``).

    Gradient accumulation: AGC clips the whole batch's gradient, once per step, as at the
    full batch size. The loop over microbatches runs on the host, one jitted call each:
    XLA:CPU ran the same loop inside one program (``lax.scan``) several times slower in a
    one-off probe.
    """

    def __init__(self, ctx: StepContext, replicated: NamedSharding, batch_sharding: NamedSharding):
        """Jits the parts of a step.

        Args:
          ctx: the step's constants.
          replicated: the sharding of the state and the gradient.
          batch_sharding: the sharding of batches (split over the batch axis).
        """
        self.count = count = num_microbatches(ctx.config)
        self._prepare = jax.jit(functools.partial(prepare_batch, ctx=ctx),
                                in_shardings=(replicated, batch_sharding),
                                out_shardings=(batch_sharding, batch_sharding, replicated))
        self._first = jax.jit(functools.partial(gradients, ctx=ctx, index=0, count=count),
                              out_shardings=replicated)
        self._accumulate = jax.jit(functools.partial(accumulate, ctx=ctx, count=count),
                                   out_shardings=replicated, donate_argnums=1)
        self._apply = jax.jit(functools.partial(apply_gradients, ctx=ctx),
                              out_shardings=(replicated, replicated), donate_argnums=0)

    def __call__(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        """One training step; same arguments and results as :func:`train_step`."""
        images, labels, dropout_rng = self._prepare(state.step, batch)
        totals = self._first(state.params, state.model_state, images, labels, dropout_rng)
        for index in range(1, self.count):
            totals = self._accumulate(state.params, totals, images, labels, dropout_rng,
                                      jnp.int32(index))
        return self._apply(state, *totals)


def eval_step(state: TrainState, batch: Batch, ctx: StepContext) -> dict[str, jax.Array]:
    """Returns the summed loss, correct predictions and example count of a padded batch.

    The model runs in evaluation mode: no dropout or stochastic depth, and BatchNorm
    normalises with its running averages.
    """
    model = nnx.view(ctx.merge(state.params, state.model_state), deterministic=True,
                     use_running_average=True, raise_if_not_found=False)
    logits = model(input_pipeline.normalize(batch["image"], ctx.mean, ctx.std))
    mask = batch["mask"]
    return {
        "loss": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
        "correct": jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * mask),
        "count": jnp.sum(mask),
    }
