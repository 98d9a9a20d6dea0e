"""The configuration of a ViT training run; presets override its defaults."""

import dataclasses

from examples.common.config import LoopConfig
from examples.vit import models, optim


@dataclasses.dataclass(frozen=True)
class TrainConfig(LoopConfig):
    """Everything that defines a ViT training run (recorded in ``summary.json``).

    The fields of :class:`~examples.common.config.LoopConfig` (data, batch, length,
    augmentation, clipping, logging, seed), plus the model's and the optimizer's below.
    ``clipping`` > 0 adds AGC where ``agc_placement`` says; ``clip_global_norm`` > 0 adds
    global-norm clipping before AdamW; with both 0 the optimizer is plain AdamW.

    Attributes:
      model: the ViT variant (``models.VARIANTS``).
      dropout_rate: dropout on every residual branch and before the classifier.
      lr: peak learning rate of AdamW, reached after the warm-up.
      b1: AdamW's first-moment decay.
      b2: AdamW's second-moment decay.
      warmup_epochs: linear warm-up length in epochs (0: none), then cosine decay to 0.
      weight_decay: AdamW's decoupled weight decay, on kernels only.
      agc_placement: ``before`` AdamW (AGC clips each unit's gradient to λ·max(‖W‖, ε))
        or ``after`` it (AGC clips each unit's update, learning rate included, to
        λ·max(‖W‖, ε)).
      agc_units: AGC's units: ``infer`` (read from the model's computation by
        infer_unit_axes), ``shape`` (every axis but the last) or ``optax_rank`` (optax's
        rule by rank: a rank-3 kernel reduces axis 0 only).
      clip_norms_and_biases: AGC clips LayerNorm scales and all biases
        (``--no-clip-norms-and-biases`` excludes them; agc_exclude is always excluded).
    """

    model: str = dataclasses.field(default="vit_cpu",
                                   metadata={"choices": tuple(sorted(models.VARIANTS))})
    batch_size: int = 128
    label_smoothing: float = 0.1
    clipping: float = 0.0
    dropout_rate: float = 0.0
    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    agc_placement: str = dataclasses.field(default="before",
                                           metadata={"choices": optim.AGC_PLACEMENTS})
    agc_units: str = dataclasses.field(default="infer", metadata={"choices": optim.UNIT_RULES})
    clip_norms_and_biases: bool = True
