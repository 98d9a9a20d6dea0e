"""The configuration of an NF-ResNet training run; presets override its defaults."""

import dataclasses

from examples.common import datasets, errors
from examples.common.config import LoopConfig
from examples.nf_resnet import models, nfnet_specs, randaugment

# DeepMind's NFNets and NF-ResNets, then the small NF-ResNets and the BatchNorm ResNets.
MODEL_CHOICES = (*nfnet_specs.VARIANTS,
                 *sorted(models.VARIANTS.keys() - nfnet_specs.VARIANTS.keys()))
# Datasets of RGB images read and cropped by grain on the host (examples.nf_resnet.image_data),
# beside the small in-memory ones of examples.common.datasets.
IMAGE_DATASETS = ("image_folder", "tfds", "synthetic")
# Those whose images are real files, cropped and augmented in the host's loaders.
FILE_DATASETS = ("image_folder", "tfds")
DATASET_CHOICES = (*sorted(datasets.SOURCES), *IMAGE_DATASETS)
MIXING_CHOICES = ("none", "mixup", "cutmix", "mixup_cutmix")


@dataclasses.dataclass(frozen=True)
class TrainConfig(LoopConfig):
    """Everything that defines a training run (recorded in ``summary.json``).

    The fields of :class:`~examples.common.config.LoopConfig` (data, batch, length,
    augmentation, clipping, logging, seed), plus the model's, the optimizer's and the
    ImageNet-scale data's below.

    Attributes:
      dataset: the dataset: ``fashion_mnist``, ``mnist``, ``cifar10`` (small, in memory);
        ``image_folder`` (a class-folder tree ``DIR/train/<class>/*.jpg`` and
        ``DIR/val/<class>/*``, given by --data-dir), ``tfds`` (TFDS ``imagenet2012``
        prepared as ArrayRecord, read through ``tfds.data_source``; --data-dir is TFDS's
        data directory, by default its own) or ``synthetic`` (random images of
        ``synthetic_classes`` classes at the image size, as many as ImageNet has, with no
        host-side crop or RandAugment: to measure the device's throughput).
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
      image_size: side of the square training crops of the image datasets (``None``: the
        model's row of ``nfnet_specs.VARIANTS`` for DeepMind's networks, else 224);
        Fashion-MNIST, MNIST and CIFAR-10 keep their own size and ignore it.
      eval_image_size: side of the evaluation crops of the image datasets (``None``: the
        row's test size for DeepMind's networks, else ``image_size``).
      eval_preprocessing: the evaluation crop of ``image_folder`` and ``tfds``, as
        DeepMind's ``eval_preproc``: ``crop_resize`` (the centre square leaving 32 pixels
        of border at the test size, resized) or ``resize_crop`` (the image resized to the
        test size + 32, then its centre square).
      randaugment: RandAugment in the host's loaders of ``image_folder`` and ``tfds``, as
        DeepMind's level string: ``405`` = 4 layers at magnitude 5 (NFNet-F0), ``410``,
        ``415``; ``None``: none.
      mixing: MixUp and CutMix on device, each image with its neighbour in the batch, soft
        targets: ``none``, ``mixup``, ``cutmix`` or ``mixup_cutmix`` (half of each batch
        each, as DeepMind's NFNet recipe).
      mixup_alpha: α of MixUp's Beta(α, α) weights.
      ema_decay: keep an exponential moving average of the parameters with decay
        ``min(ema_decay, (1 + step) / (10 + step))`` (DeepMind's ``tf1_ema``) and evaluate it
        beside them; 0: no average.
      data_workers: grain worker processes that read, decode and crop the images of
        ``image_folder`` and ``tfds`` (0: in the training process, with threads). A resumed
        run continues its data stream exactly only with the same number.
      on_corrupt: what a file of ``image_folder`` or ``tfds`` that cannot be decoded does:
        ``skip`` (a warning names it; it is left out, or masked out of evaluation) or
        ``raise`` (the run stops with an error naming it).
      synthetic_classes: the number of classes of ``--dataset synthetic``.
    """

    dataset: str = dataclasses.field(default="fashion_mnist",
                                     metadata={"choices": DATASET_CHOICES})
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
    image_size: int | None = None
    eval_image_size: int | None = None
    eval_preprocessing: str = dataclasses.field(
        default="crop_resize", metadata={"choices": ("crop_resize", "resize_crop")})
    randaugment: str | None = None
    mixing: str = dataclasses.field(default="none", metadata={"choices": MIXING_CHOICES})
    mixup_alpha: float = 0.2
    ema_decay: float = 0.0
    data_workers: int = 0
    on_corrupt: str = dataclasses.field(default="skip", metadata={"choices": ("skip", "raise")})
    synthetic_classes: int = 1000


def _check_data(config: TrainConfig) -> None:
    if config.dataset == "image_folder" and config.data_dir is None:
        raise errors.UserError("--dataset image_folder needs --data-dir DIR, the folder holding "
                               "train/<class>/*.jpg and val/<class>/*.jpg.")
    if config.randaugment is not None:
        if config.dataset not in FILE_DATASETS:
            raise errors.UserError(
                f"--randaugment {config.randaugment}: RandAugment runs in the image loaders of "
                f"--dataset {' or '.join(FILE_DATASETS)}, not with --dataset {config.dataset}; "
                "pass --randaugment none.")
        try:
            randaugment.parse_level(config.randaugment)
        except ValueError as e:
            raise errors.UserError(f"--randaugment: {e}") from e
    for name in ("image_size", "eval_image_size"):
        value = getattr(config, name)
        if value is not None and value < 8:
            raise errors.UserError(f"{errors.flag(name)} {value}: must be at least 8 pixels "
                                   "(or none for the model's size).")


def _check_ranges(config: TrainConfig) -> None:
    if "mixup" in config.mixing and not 0 < config.mixup_alpha < float("inf"):
        raise errors.UserError(f"--mixup-alpha {config.mixup_alpha}: must be > 0 with "
                               f"--mixing {config.mixing}.")
    if not 0 <= config.ema_decay < 1:
        raise errors.UserError(f"--ema-decay {config.ema_decay}: must be in [0, 1) "
                               "(0: no moving average).")
    if config.data_workers < 0:
        raise errors.UserError(f"--data-workers {config.data_workers}: must be ≥ 0 "
                               "(0: decode in the training process).")
    if config.synthetic_classes < 1:
        raise errors.UserError(f"--synthetic-classes {config.synthetic_classes}: must be "
                               "at least 1.")


def validate(config: TrainConfig) -> None:
    """Checks a run's configuration before anything is loaded or compiled.

    The shared checks (:func:`examples.common.errors.validate`), then those of the fields
    above: an ``image_folder`` run names its --data-dir, RandAugment is asked of a dataset
    whose loaders apply it and has a valid level, image sizes, MixUp's α, the EMA decay,
    the worker count and the synthetic class count are in range. Mixing is allowed with
    every dataset (it runs on device).

    Args:
      config: the run's configuration.

    Raises:
      UserError: naming the first flag at fault and what it accepts.
    """
    errors.validate(config)
    _check_data(config)
    _check_ranges(config)


def has_batch_statistics(model: str) -> bool:
    """Whether ``model`` normalizes with batch statistics (the BatchNorm ResNets).

    Such a model's result depends on the fields that ``examples.common.config`` marks
    ``batch_statistics`` (the microbatch split), which are otherwise execution-only.
    """
    spec = models.VARIANTS.get(model)
    return spec is not None and spec.normalization == "batch"
