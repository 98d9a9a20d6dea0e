"""Where and on which units AGC clips in the ViT example (its optimizer is in ``train.py``).

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
from flax import nnx

import agc_optax

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
