"""The training state, the constants a step closes over, and the plug-in of a model family.

A :class:`TrainState` is what a training step reads and writes and a checkpoint stores:
the step, the parameters (``nnx.Param``), the model's other mutable state (``nnx.BatchStat``
running averages of BatchNorm; empty for a normalizer-free network) and the optimizer's
state. Everything else a step needs is constant and lives in a :class:`StepContext`.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from examples.common.config import LoopConfig


class TrainState(NamedTuple):
    """What a training step reads and writes (and a checkpoint stores).

    Attributes:
      step: the number of steps taken.
      params: the model's ``nnx.Param`` leaves.
      model_state: the model's ``nnx.BatchStat`` leaves (empty when it has none); training
        steps return it updated, evaluation reads it.
      opt_state: the optimizer's state.
    """

    step: jax.Array
    params: nnx.State
    model_state: nnx.State
    opt_state: optax.OptState


def cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy against (optionally smoothed) one-hot labels."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def smoothed_cross_entropy(logits: jax.Array, labels: jax.Array, config: Any) -> jax.Array:
    """The default training loss: cross-entropy with ``config.label_smoothing``."""
    return cross_entropy(logits, labels, config.label_smoothing)


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """What a model family plugs into the shared trainer.

    Attributes:
      name: the family's name (``"nf_resnet"``, ``"vit"``).
      create_model: ``(config, num_classes, in_features, rngs) -> nnx.Module``; the module
        maps NHWC float images to float32 logits, with ``rngs`` streams ``params`` and
        ``dropout``.
      create_optimizer: ``(config, total_steps, steps_per_epoch) -> (optimizer, schedule)``.
      loss: ``(logits, labels, config) -> per-example training loss``.
    """

    name: str
    create_model: Callable[[Any, int, int, nnx.Rngs], nnx.Module]
    create_optimizer: Callable[[Any, int, int],
                               tuple[optax.GradientTransformation, optax.Schedule]]
    loss: Callable[[jax.Array, jax.Array, Any], jax.Array] = smoothed_cross_entropy


@dataclasses.dataclass(frozen=True)
class StepContext:
    """The constants a step closes over.

    Attributes:
      family: the model family (for its loss).
      graphdef: the model's static structure.
      rest: the model's state that is neither ``Param`` nor ``BatchStat`` (its random
        streams, reseeded every step).
      tx: the optimizer.
      schedule: the optimizer's learning-rate schedule (for the records).
      key: the root key of per-step augmentation and dropout randomness.
      mean: per-channel pixel mean, in [0, 1] units.
      std: per-channel pixel standard deviation.
      config: the run's configuration.
    """

    family: ModelFamily
    graphdef: nnx.GraphDef
    rest: nnx.State
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    key: jax.Array
    mean: np.ndarray
    std: np.ndarray
    config: LoopConfig

    def merge(self, params: nnx.State, model_state: nnx.State, copy: bool = False) -> nnx.Module:
        """Returns the model holding ``params`` and ``model_state``."""
        return nnx.merge(self.graphdef, params, model_state, self.rest, copy=copy)


def compute_dtype(name: str) -> jnp.dtype:
    """Resolves ``--dtype``: ``auto`` is bfloat16 on GPU/TPU and float32 on CPU."""
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    return jnp.dtype(name)


def create_train_state(family: ModelFamily, config: LoopConfig, *, num_classes: int,
                       in_features: int, mean: np.ndarray, std: np.ndarray, total_steps: int,
                       steps_per_epoch: int) -> tuple[TrainState, StepContext]:
    """Builds the model and the optimizer; returns the initial state and the step's constants.

    Initialisation and the per-step randomness both derive from ``config.seed``.

    Args:
      family: the model family.
      config: the run's configuration.
      num_classes: outputs of the classifier.
      in_features: channels of the input images.
      mean: per-channel pixel mean of the training images, in [0, 1] units.
      std: per-channel pixel standard deviation.
      total_steps: the run's length (for the schedule).
      steps_per_epoch: steps in one epoch (for the warm-up).

    Returns:
      ``(state, ctx)``: the state at step 0 (on the default device) and the constants that
      :func:`~examples.common.steps.train_step` and ``eval_step`` close over.
    """
    init_key, step_key = jax.random.split(jax.random.key(config.seed))
    model = family.create_model(config, num_classes, in_features,
                                nnx.Rngs(params=init_key, dropout=0))
    graphdef, params, model_state, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    tx, schedule = family.create_optimizer(config, total_steps, steps_per_epoch)
    ctx = StepContext(family, graphdef, rest, tx, schedule, step_key, mean, std, config)
    state = TrainState(jnp.zeros((), jnp.int32), params, model_state, tx.init(params))
    return state, ctx
