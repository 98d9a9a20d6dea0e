"""The optimizer of the example: AGC, then weight decay on weights only, then SGD-Nesterov.

References:
  Brock, De, Smith, Simonyan, *High-Performance Large-Scale Image Recognition Without
  Normalization*, ICML 2021, arXiv:2102.06171 (AGC, section 4.1; the training recipe).
"""

from typing import Any

import jax
import optax
from flax import nnx

import agc_optax
from examples.nf_resnet.configs import TrainConfig


def weight_decay_mask(params: nnx.State) -> Any:
    """Marks the kernels (conv and dense weights) for weight decay; not gains or biases."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: agc_optax.path_to_str(path).endswith("kernel"), params)


def create_optimizer(config: TrainConfig, total_steps: int,
                     steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Returns ``agc → [clip_by_global_norm] → weight decay → SGD-Nesterov`` and its schedule.

    The peak learning rate is ``lr · batch_size / 256``, reached by a linear warm-up and
    followed by cosine decay to 0. AGC leaves the classifier alone (``exclude=``) and
    tracks the fraction of clipped units; weight decay is added after clipping, so AGC
    sees the loss gradient only, as in the NFNets code.

    Args:
      config: the run's configuration (``clipping`` 0 leaves AGC out,
        ``clip_global_norm`` > 0 adds the classic baseline).
      total_steps: the run's length, for the cosine decay.
      steps_per_epoch: to convert ``warmup_epochs`` into steps.

    Returns:
      The optimizer and its learning-rate schedule.
    """
    peak = config.lr * config.batch_size / 256
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total_steps - 1)
    schedule = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total_steps, 0.0)
    parts = []
    if config.clipping > 0:
        parts.append(agc_optax.agc(config.clipping, config.agc_eps,
                                   exclude=config.agc_exclude, track_stats=True))
    if config.clip_global_norm > 0:
        parts.append(optax.clip_by_global_norm(config.clip_global_norm))
    parts += [
        optax.add_decayed_weights(config.weight_decay, mask=weight_decay_mask),
        optax.sgd(schedule, momentum=config.momentum, nesterov=True),
    ]
    return optax.chain(*parts), schedule
