"""The configuration of a training run; presets override its defaults."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (recorded in ``summary.json``).

    Attributes:
      dataset: ``"fashion_mnist"``, ``"mnist"`` or ``"cifar10"``.
      data_dir: directory searched first for the dataset's files.
      train_examples: use only the first this many training examples (``None``: all).
      test_examples: evaluate on only the first this many test examples (``None``: all).
      model: a key of ``models.VARIANTS``.
      activation: scaled activation of the model.
      se_ratio: squeeze-excite ratio, ``None`` for none.
      drop_path_rate: stochastic-depth rate of the last block.
      dropout_rate: dropout before the classifier.
      batch_size: global batch size, over all devices and hosts.
      microbatch_size: split each batch into microbatches of this size and sum their
        gradients before clipping (gradient accumulation: one optimizer step per batch;
        for batches that do not fit in memory, or run slowly, at once). ``None``: no split.
      lr: base learning rate; the peak rate is ``lr · batch_size / 256``.
      warmup_epochs: linear warm-up length, then cosine decay to 0.
      epochs: training length in epochs, unless ``steps`` is set.
      steps: training length in steps; overrides ``epochs``.
      momentum: Nesterov momentum of SGD.
      weight_decay: L2 decay on kernels only (not gains, biases, skip gains), added to
        the gradient after clipping, as in the NFNets code.
      label_smoothing: label-smoothing factor of the training loss.
      clipping: AGC's λ; 0 turns AGC off.
      agc_eps: AGC's ε.
      agc_exclude: regex of the parameters AGC leaves alone (the classifier).
      clip_global_norm: the classic baseline, ``optax.clip_by_global_norm``; 0 is off.
      crop_padding: zero padding before the random crop; 0 for no crop.
      flip: random horizontal flips.
      dtype: ``"auto"`` (bfloat16 on GPU/TPU, float32 on CPU), ``"float32"`` or
        ``"bfloat16"``: the compute dtype; parameters and AGC statistics stay float32.
      eval_batch_size: global batch size of evaluation.
      log_every_steps: interval of training records in ``metrics.jsonl``.
      seed: seeds initialisation, shuffling, augmentation and dropout.
    """

    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    train_examples: int | None = None
    test_examples: int | None = None
    model: str = "nf_resnet_cpu"
    activation: str = "relu"
    se_ratio: float | None = None
    drop_path_rate: float = 0.0
    dropout_rate: float = 0.0
    batch_size: int = 256
    microbatch_size: int | None = None
    lr: float = 0.1
    warmup_epochs: float = 1.0
    epochs: int = 10
    steps: int | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-5
    label_smoothing: float = 0.1
    clipping: float = 0.01
    agc_eps: float = 1e-3
    agc_exclude: str = r"^head/"
    clip_global_norm: float = 0.0
    crop_padding: int = 2
    flip: bool = True
    dtype: str = "auto"
    eval_batch_size: int = 1000
    log_every_steps: int = 50
    seed: int = 0
