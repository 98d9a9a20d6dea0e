"""The configuration of an NF-ResNet training run; presets override its defaults."""

import dataclasses

from examples.common.config import LoopConfig
from examples.nf_resnet import models, nfnet_specs

# DeepMind's NFNets and NF-ResNets, then the small NF-ResNets and the BatchNorm ResNets.
MODEL_CHOICES = (*nfnet_specs.VARIANTS,
                 *sorted(models.VARIANTS.keys() - nfnet_specs.VARIANTS.keys()))


@dataclasses.dataclass(frozen=True)
class TrainConfig(LoopConfig):
    """Everything that defines a training run (recorded in ``summary.json``).

    The fields of :class:`~examples.common.config.LoopConfig` (data, batch, length,
    augmentation, clipping, logging, seed), plus the model's and the optimizer's below.

    Attributes:
      model: the variant: ``nfnet_f0`` … ``nfnet_f7`` and ``nf_resnet_{50,101,152,200}``
        DeepMind's networks (``nfnet_specs.VARIANTS``), ``nf_resnet_{nano,cpu,18}`` the
        small NF-ResNets and ``bn_resnet_<size>`` the BatchNorm ResNets
        (``models.VARIANTS``).
      init_from: start from the parameters of the newest checkpoint in this directory (a
        run's --workdir, or one written by ``python -m examples.nf_resnet.convert``); a
        classifier of another number of classes starts afresh (fine-tuning), and so do
        BatchNorm's running averages. The directory must still exist to resume or
        evaluate the run.
      activation: the model's activation (scaled in an NF-ResNet, plain with BatchNorm);
        DeepMind's networks fix theirs.
      se_ratio: squeeze-excite ratio (``None``: no squeeze-excite); DeepMind's networks fix
        theirs.
      drop_path_rate: stochastic-depth rate of the last block.
      dropout_rate: dropout before the classifier.
      lr: base learning rate; the peak rate is ``lr · batch_size / 256``.
      warmup_epochs: linear warm-up length in epochs (0: none), then cosine decay to 0.
      momentum: Nesterov momentum of SGD.
      weight_decay: L2 decay on kernels only (not gains, biases, skip gains or BatchNorm
        scales), added to the gradient after clipping, as in the NFNets code.
    """

    model: str = dataclasses.field(default="nf_resnet_cpu",
                                   metadata={"choices": MODEL_CHOICES})
    init_from: str | None = None
    activation: str = "relu"
    se_ratio: float | None = None
    drop_path_rate: float = 0.0
    dropout_rate: float = 0.0
    lr: float = 0.1
    warmup_epochs: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 5e-5


def has_batch_statistics(model: str) -> bool:
    """Whether ``model`` normalizes with batch statistics (the BatchNorm ResNets).

    Such a model's result depends on the fields that ``examples.common.config`` marks
    ``batch_statistics`` (the microbatch split), which are otherwise execution-only.
    """
    spec = models.VARIANTS.get(model)
    return spec is not None and spec.normalization == "batch"
