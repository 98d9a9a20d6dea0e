"""Optimizer pieces every example composes: gradient clipping, the weight-decay mask, the schedule.

References:
  Brock, De, Smith, Simonyan, *High-Performance Large-Scale Image Recognition Without
  Normalization*, ICML 2021, arXiv:2102.06171 (AGC, section 4.1; the training recipe).
"""

from typing import Any

import jax
import optax

import agc_optax
from examples.common.config import LoopConfig


def kernel_mask(params: Any) -> Any:
    """Marks the kernels (conv and dense weights) for weight decay; not gains or biases."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: agc_optax.path_to_str(path).endswith("kernel"), params)


def clipping(config: LoopConfig) -> list[optax.GradientTransformation]:
    """Returns the configured gradient clipping, to go first in the optimizer's chain.

    Args:
      config: ``clipping`` > 0 adds AGC (λ = ``clipping``, ε = ``agc_eps``, leaving out
        ``agc_exclude``, tracking the fraction of clipped units); ``clip_global_norm`` > 0
        adds ``optax.clip_by_global_norm``.

    Returns:
      Zero, one or two transformations, AGC first.
    """
    parts = []
    if config.clipping > 0:
        parts.append(agc_optax.agc(config.clipping, config.agc_eps,
                                   exclude=config.agc_exclude, track_stats=True))
    if config.clip_global_norm > 0:
        parts.append(optax.clip_by_global_norm(config.clip_global_norm))
    return parts


def warmup_cosine(peak: float, warmup_epochs: float, total_steps: int,
                  steps_per_epoch: int) -> optax.Schedule:
    """A linear warm-up from 0 to ``peak`` over ``warmup_epochs``, then cosine decay to 0.

    The warm-up is cut to ``total_steps - 1`` steps so that short runs still decay.
    """
    warmup = min(round(warmup_epochs * steps_per_epoch), total_steps - 1)
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total_steps, 0.0)
