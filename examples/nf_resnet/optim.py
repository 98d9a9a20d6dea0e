"""The optimizer of the example: AGC, then weight decay on kernels only, then SGD-Nesterov.

References:
  Brock, De, Smith, Simonyan, *High-Performance Large-Scale Image Recognition Without
  Normalization*, ICML 2021, arXiv:2102.06171 (AGC, section 4.1; the training recipe).
"""

import optax

from examples.common import optim
from examples.nf_resnet.configs import TrainConfig


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
    schedule = optim.warmup_cosine(config.lr * config.batch_size / 256, config.warmup_epochs,
                                   total_steps, steps_per_epoch)
    tx = optax.chain(
        *optim.clipping(config),
        optax.add_decayed_weights(config.weight_decay, mask=optim.kernel_mask),
        optax.sgd(schedule, momentum=config.momentum, nesterov=True),
    )
    return tx, schedule
