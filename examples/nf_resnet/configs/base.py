"""The configuration of an NF-ResNet training run; presets override its defaults."""

import dataclasses

from examples.common.config import LoopConfig
from examples.nf_resnet import models


@dataclasses.dataclass(frozen=True)
class TrainConfig(LoopConfig):
    """Everything that defines a training run (recorded in ``summary.json``).

    The fields of :class:`~examples.common.config.LoopConfig` (data, batch, length,
    augmentation, clipping, logging, seed), plus the model's and the optimizer's below.

    Attributes:
      model: the variant (``models.VARIANTS``): ``nf_resnet_<size>`` an NF-ResNet,
        ``bn_resnet_<size>`` the BatchNorm ResNet with the same layout.
      activation: the model's activation (scaled in an NF-ResNet, plain with BatchNorm).
      se_ratio: squeeze-excite ratio (``None``: no squeeze-excite).
      drop_path_rate: stochastic-depth rate of the last block.
      dropout_rate: dropout before the classifier.
      lr: base learning rate; the peak rate is ``lr · batch_size / 256``.
      warmup_epochs: linear warm-up length in epochs (0: none), then cosine decay to 0.
      momentum: Nesterov momentum of SGD.
      weight_decay: L2 decay on kernels only (not gains, biases, skip gains or BatchNorm
        scales), added to the gradient after clipping, as in the NFNets code.
    """

    model: str = dataclasses.field(default="nf_resnet_cpu",
                                   metadata={"choices": tuple(sorted(models.VARIANTS))})
    activation: str = "relu"
    se_ratio: float | None = None
    drop_path_rate: float = 0.0
    dropout_rate: float = 0.0
    lr: float = 0.1
    warmup_epochs: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 5e-5
