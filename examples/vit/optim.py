"""The ViT example's optimizer: AdamW, with AGC before or after it, or global-norm clipping.

Where AGC goes is the question a transformer + AdamW user faces (``agc_placement``):

- ``"before"``: ``agc → adamw``; AGC clips each unit's *gradient* to
  ``λ · max(‖W_i‖, ε)``, as in the NFNets paper.
- ``"after"``: ``adamw → agc``; AGC clips each unit's *update* (learning rate and
  weight decay included) to ``λ · max(‖W_i‖, ε)``. This is what
  ``optax.chain(optax.adamw(...), agc(...))`` does, knowingly or not.

``clip_global_norm`` > 0 adds ``optax.clip_by_global_norm`` before AdamW (the classic
transformer recipe); with ``clipping`` 0 and ``clip_global_norm`` 0 the optimizer is AdamW.

References:
  Loshchilov, Hutter, *Decoupled Weight Decay Regularization*, ICLR 2019,
  arXiv:1711.05101 (AdamW).
  Brock, De, Smith, Simonyan, *High-Performance Large-Scale Image Recognition Without
  Normalization*, ICML 2021, arXiv:2102.06171 (AGC, section 4.1).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import agc_optax
from examples.common import optim

AGC_PLACEMENTS = ("before", "after")
UNIT_RULES = ("infer", "shape", "optax_rank")
# Excluded from AGC with --no-clip-norms-and-biases: LayerNorm scales and all biases.
NORMS_AND_BIASES = r"/(bias|scale)$"


def optax_rank_unit_axes(path: str, leaf: Any) -> tuple[int, ...]:
    """Fan-in axes by optax's rank rule (``optax.adaptive_grad_clip`` 0.2.8, no ``axis``).

    A leaf whose shape without size-1 axes has rank ≤ 1 is one unit; rank 2 and 3 reduce
    axis 0 only (so an attention output kernel ``(heads, dim, out)`` gets one unit per
    ``(head, out)`` pair instead of per output feature); rank 4 reduces ``(0, 1, 2)``;
    rank 5 ``(0, 1, 2, 3)``.

    Args:
      path: the leaf's path string (for the error message).
      leaf: the parameter (anything with a ``shape``).

    Returns:
      The axes optax would reduce.

    Raises:
      ValueError: the leaf's rank is above 5, where optax raises too.
    """
    shape = tuple(leaf.shape)
    if sum(1 for n in shape if n != 1) <= 1:
        return tuple(range(len(shape)))
    if len(shape) in (2, 3):
        return (0,)
    if len(shape) in (4, 5):
        return tuple(range(len(shape) - 1))
    raise ValueError(f"optax's rank rule has no axes for {path!r} of shape {shape}; "
                     "use --agc-units infer.")


def model_unit_axes(model: nnx.Module, image_shape: tuple[int, ...]) -> Callable[..., Any]:
    """The model's own fan-in axes for every parameter (AGC's ``unit_axes``).

    Args:
      model: the ViT.
      image_shape: the shape of one NHWC input batch (only traced, never run).

    Returns:
      An :class:`agc_optax.InferredUnitAxes`: a ``(path, leaf) -> axes`` callable that
      prints as a table.
    """
    image = jax.ShapeDtypeStruct(image_shape, jnp.float32)
    return agc_optax.infer_unit_axes(lambda module, x: module(x), model, image)


def unit_axes_rule(name: str, model: nnx.Module, image_shape: tuple[int, ...]) -> Any:
    """Resolves ``--agc-units`` to AGC's ``unit_axes`` argument.

    Args:
      name: ``"infer"`` (the model's own computation), ``"shape"`` (the library's default
        shape rule: every axis but the last) or ``"optax_rank"`` (:func:`optax_rank_unit_axes`).
      model: the ViT, read by ``"infer"``.
      image_shape: the input batch shape, read by ``"infer"``.

    Returns:
      The ``unit_axes`` argument of :func:`agc_optax.agc`.
    """
    if name == "infer":
        return model_unit_axes(model, image_shape)
    if name == "shape":
        return None
    if name == "optax_rank":
        return optax_rank_unit_axes
    raise ValueError(f"Unknown --agc-units {name!r}; choose from {UNIT_RULES}.")


def agc_exclude(config: Any) -> list[str]:
    """AGC's ``exclude``: ``agc_exclude`` (the head), plus norms and biases if not clipped."""
    return [config.agc_exclude] + ([] if config.clip_norms_and_biases else [NORMS_AND_BIASES])


def create_optimizer(config: Any, total_steps: int, steps_per_epoch: int,
                     unit_axes: Any = None) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Returns AdamW with the configured clipping, and its learning-rate schedule.

    The learning rate warms up linearly from 0 to ``config.lr``, then decays to 0 by a
    cosine. Weight decay is decoupled (AdamW) and applies to kernels only (not biases,
    LayerNorm scales or the position embedding).

    Args:
      config: the run's configuration (``clipping``, ``agc_eps``, ``agc_placement``,
        ``agc_exclude``, ``clip_norms_and_biases``, ``clip_global_norm``, ``lr``, ``b1``,
        ``b2``, ``weight_decay``, ``warmup_epochs``).
      total_steps: the run's length, for the cosine decay.
      steps_per_epoch: to convert ``warmup_epochs`` into steps.
      unit_axes: AGC's ``unit_axes`` (:func:`unit_axes_rule`).

    Returns:
      The optimizer and its learning-rate schedule.
    """
    if config.agc_placement not in AGC_PLACEMENTS:
        raise ValueError(f"Unknown --agc-placement {config.agc_placement!r}; "
                         f"choose from {AGC_PLACEMENTS}.")
    schedule = optim.warmup_cosine(config.lr, config.warmup_epochs, total_steps,
                                   steps_per_epoch)
    adamw = optax.adamw(schedule, b1=config.b1, b2=config.b2,
                        weight_decay=config.weight_decay, mask=optim.kernel_mask)
    optimizer = adamw
    if config.clip_global_norm > 0:
        optimizer = optax.chain(optax.clip_by_global_norm(config.clip_global_norm), adamw)
    if config.clipping <= 0:
        return optimizer, schedule
    return agc_optax.with_agc(optimizer, config.clipping, config.agc_eps,
                              placement=config.agc_placement, unit_axes=unit_axes,
                              exclude=agc_exclude(config), track_stats=True), schedule
