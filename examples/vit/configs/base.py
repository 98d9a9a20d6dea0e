"""The configuration of a ViT training run; presets override its defaults."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a ViT training run (recorded in ``summary.json``).

    Attributes:
      dataset: ``"fashion_mnist"``, ``"mnist"`` or ``"cifar10"``.
      data_dir: directory searched first for the dataset's files.
      train_examples: use only the first this many training examples (``None``: all).
      test_examples: evaluate on only the first this many test examples (``None``: all).
      model: a key of ``models.VARIANTS``.
      dropout_rate: dropout on every residual branch and before the classifier.
      batch_size: global batch size, over all devices and hosts.
      lr: peak learning rate of AdamW, reached after the warm-up.
      b1: AdamW's first-moment decay.
      b2: AdamW's second-moment decay.
      warmup_epochs: linear warm-up length, then cosine decay to 0.
      epochs: training length in epochs, unless ``steps`` is set.
      steps: training length in steps; overrides ``epochs``.
      weight_decay: AdamW's decoupled weight decay, on kernels only.
      label_smoothing: label-smoothing factor of the training loss.
      clip_placement: ``"none"``, ``"global_norm"`` (before AdamW), ``"agc_before"``
        (AGC on the gradient) or ``"agc_after"`` (AGC on AdamW's update).
      clipping: AGC's λ.
      agc_eps: AGC's ε.
      agc_units: AGC's units: ``"infer"`` (from the model's computation), ``"shape"``
        (every axis but the last) or ``"optax_rank"`` (optax's rule by rank).
      clip_norms_and_biases: whether AGC clips LayerNorm scales and all biases (False
        excludes them); the classifier ``head`` is never clipped.
      clip_global_norm: the global-norm threshold of ``clip_placement="global_norm"``.
      crop_padding: zero padding before the random crop; 0 for no crop.
      flip: random horizontal flips.
      dtype: ``"auto"`` (bfloat16 on GPU/TPU, float32 on CPU), ``"float32"`` or
        ``"bfloat16"``: the compute dtype; parameters and optimizer state stay float32.
      eval_batch_size: global batch size of evaluation.
      log_every_steps: interval of training records in ``metrics.jsonl``.
      seed: seeds initialisation, shuffling, augmentation and dropout.
    """

    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    train_examples: int | None = None
    test_examples: int | None = None
    model: str = "vit_cpu"
    dropout_rate: float = 0.0
    batch_size: int = 128
    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    warmup_epochs: float = 1.0
    epochs: int = 10
    steps: int | None = None
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    clip_placement: str = "agc_before"
    clipping: float = 0.01
    agc_eps: float = 1e-3
    agc_units: str = "infer"
    clip_norms_and_biases: bool = True
    clip_global_norm: float = 1.0
    crop_padding: int = 2
    flip: bool = True
    dtype: str = "auto"
    eval_batch_size: int = 1000
    log_every_steps: int = 50
    seed: int = 0
