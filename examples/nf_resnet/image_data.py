"""The image datasets of ImageNet-scale runs, behind one interface the training loop calls.

``--dataset image_folder`` (a class-folder tree, :mod:`examples.nf_resnet.image_folder`),
``tfds`` (TFDS ``imagenet2012`` as ArrayRecord, :mod:`examples.nf_resnet.tfds_source`) and
``synthetic`` (random images, :mod:`examples.nf_resnet.synthetic`) all come out of
:func:`load` as one :class:`ImageData`::

    data = image_data.load(config, jax.process_index(), jax.process_count())
    batches = data.train_batches(config.seed)            # or (seed, stored state) to resume
    batch = next(batches)    # {"image": uint8 (B, S, S, 3), "label": int32 (B,)}
    state = batches.get_state()                           # a small JSON-able dict
    for batch in data.eval_batches():   # + "mask": float32 (B,), 1 = a real image
        ...

The interface, precisely:

- ``B`` is this process's share of a global batch: ``config.batch_size // process_count``
  for training, ``config.eval_batch_size // process_count`` for evaluation. Process ``p``
  reads only its own records (every ``process_count``-th, from ``p``), so the processes'
  batches together are one global batch; stack them with
  ``jax.make_array_from_process_local_data``.
- Images are uint8 NHWC RGB, not normalised: the device computes
  ``(image / 255 - MEAN) / STD`` with :data:`MEAN` and :data:`STD` (ImageNet's, in [0, 1]
  units), then mixes (``config.mixing``) if asked. Training images are already cropped
  (Inception-style random crop, random flip, RandAugment if ``config.randaugment``) at
  ``ImageData.image_size``; evaluation images are centre crops at ``eval_image_size``
  (``config.eval_preprocessing``). Synthetic images are random pixels at those sizes.
- :meth:`ImageData.train_batches` is endless (a fresh shuffle each epoch) and returns a
  grain iterator with ``get_state()`` / ``set_state()``: checkpoint its state and pass it
  back to continue the stream exactly (with the same ``config.data_workers``). The loop
  makes ``config.steps`` or ``config.epochs · num_train_examples // batch_size`` steps.
- :meth:`ImageData.eval_batches` is one pass over ``num_eval_examples`` images; every
  process yields the same number of batches; the last global batch is padded, and
  ``mask`` is 0.0 for padding and for a skipped corrupt file (whose image and label are
  zeros). Sum ``mask · correct`` and ``mask`` over all processes for the accuracy.
- ``config.train_examples`` / ``test_examples`` keep an evenly spaced subset of the records
  (every class in proportion, as a class-folder listing is sorted by class), not the
  first ones.
- Decoding runs in ``config.data_workers`` grain worker processes (0: threads of this
  process). A file that cannot be decoded is named in a warning and skipped, or, with
  ``config.on_corrupt == "raise"``, raises
  :class:`~examples.nf_resnet.image_folder.ImageFolderError` naming it; a tree that is mostly
  corrupt raises rather than hang.
"""

import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import grain
import jax
import numpy as np

from examples.common import datasets, devices, errors, input_pipeline
from examples.nf_resnet import (
    image_folder,
    imagenet_preprocessing,
    nfnet_specs,
    synthetic,
    tfds_source,
)
from examples.nf_resnet.configs.base import IMAGE_DATASETS, TrainConfig

MEAN = np.asarray(imagenet_preprocessing.IMAGENET_MEAN, np.float32)
STD = np.asarray(imagenet_preprocessing.IMAGENET_STD, np.float32)
DEFAULT_IMAGE_SIZE = 224
TFDS_NAME = "imagenet2012"
TFDS_SPLITS = ("train", "validation")
# ImageNet-1k's sizes (DeepMind's ``Split.TRAIN_AND_VALID`` and ``Split.TEST``), which the
# synthetic dataset copies so that epochs and schedules mean what they do on ImageNet.
IMAGENET_TRAIN_EXAMPLES = 1_281_167
IMAGENET_EVAL_EXAMPLES = 50_000
logger = logging.getLogger(__name__)


def is_image_dataset(dataset: str) -> bool:
    """Whether ``--dataset`` is one this module loads (else :mod:`examples.common.datasets`)."""
    return dataset in IMAGE_DATASETS


def image_sizes(config: TrainConfig) -> tuple[int, int]:
    """The training and evaluation image sides of a run.

    Args:
      config: ``image_size`` and ``eval_image_size`` (``None``: from ``config.model``'s row
        of :data:`~examples.nf_resnet.nfnet_specs.VARIANTS`, else 224 and the train size).

    Returns:
      ``(train side, eval side)``.
    """
    row = nfnet_specs.VARIANTS.get(config.model)
    train = config.image_size or (row.train_imsize if row else DEFAULT_IMAGE_SIZE)
    return train, config.eval_image_size or (row.test_imsize if row else train)


@dataclasses.dataclass(frozen=True)
class _Subset:
    """Records ``indices`` of a record source (``train_examples``, ``test_examples``)."""

    source: image_folder.RecordSource
    indices: np.ndarray

    @property
    def classes(self) -> tuple[str, ...]:
        return self.source.classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[str | bytes, int]:
        return self.source[int(self.indices[index])]

    def describe(self, index: int) -> str:
        return self.source.describe(int(self.indices[index]))


def evenly_spaced(source: Any, count: int | None) -> Any:
    """``count`` records spread evenly over ``source`` (all of them for ``None`` or more)."""
    if count is None or count >= len(source):
        return source
    return _Subset(source, np.linspace(0, len(source), count, endpoint=False).astype(np.int64))


@dataclasses.dataclass(frozen=True)
class ImageData:
    """A loaded image dataset: its sizes and this process's batches (see the module doc).

    Attributes:
      name: what was loaded, for logs (``image_folder DIR``, ``tfds imagenet2012``, …).
      num_classes: the number of classes (labels are ``0 … num_classes - 1``).
      num_train_examples: training images over all processes (for epochs and schedules).
      num_eval_examples: evaluation images over all processes (padding excluded).
      image_size: side of the training images.
      eval_image_size: side of the evaluation images.
      classes: class names, label ``i`` being ``classes[i]``.
    """

    name: str
    num_classes: int
    num_train_examples: int
    num_eval_examples: int
    image_size: int
    eval_image_size: int
    classes: tuple[str, ...]
    make_train: Callable[[int], grain.IterDataset] = dataclasses.field(repr=False)
    make_eval: Callable[[], Any] = dataclasses.field(repr=False)
    mean: np.ndarray = dataclasses.field(default_factory=lambda: MEAN, repr=False)
    std: np.ndarray = dataclasses.field(default_factory=lambda: STD, repr=False)
    in_features: int = 3  # RGB.

    def train_batches(self, seed: int, data_state: dict[str, Any] | None = None) -> Any:
        """This process's endless stream of training batches.

        Args:
          seed: seeds the shuffle, the crops and RandAugment (``config.seed``).
          data_state: a ``get_state()`` of an earlier iterator of the same run, to continue
            from; ``None`` starts afresh.

        Returns:
          A grain iterator of ``{"image": uint8 (B, S, S, 3), "label": int32 (B,)}`` with
          ``get_state()`` and ``set_state()``.
        """
        iterator = iter(self.make_train(seed))
        if data_state is not None:
            iterator.set_state(data_state)
        return iterator

    def eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """One pass over this process's evaluation batches, with ``mask`` (see the module doc)."""
        return iter(self.make_eval())


def _local(global_batch_size: int, process_count: int, flag: str) -> int:
    if global_batch_size % process_count:
        raise errors.UserError(f"{flag} {global_batch_size} does not divide by the "
                               f"{process_count} processes; pass a multiple of it.")
    return global_batch_size // process_count


@dataclasses.dataclass(frozen=True)
class _SyntheticEval:
    """Evaluation batch ``k`` of random images, masked where past ``num_examples``."""

    images: np.ndarray
    labels: np.ndarray
    positions: np.ndarray
    num_examples: int

    def __call__(self, k: int) -> dict[str, np.ndarray]:
        size = len(self.images)
        positions = self.positions[int(k) * size:(int(k) + 1) * size]
        return {"image": self.images, "label": self.labels,
                "mask": (positions < self.num_examples).astype(np.float32)}


def _synthetic(config: TrainConfig, process_index: int, process_count: int) -> ImageData:
    train_size, eval_size = image_sizes(config)
    num_train = min(config.train_examples or IMAGENET_TRAIN_EXAMPLES, IMAGENET_TRAIN_EXAMPLES)
    num_eval = min(config.test_examples or IMAGENET_EVAL_EXAMPLES, IMAGENET_EVAL_EXAMPLES)
    local = _local(config.eval_batch_size, process_count, "--eval-batch-size")
    positions = image_folder.eval_positions(num_eval, config.eval_batch_size, process_index,
                                            process_count)
    rng = np.random.default_rng([config.seed, process_index, 1])
    evaluate = _SyntheticEval(rng.integers(0, 256, (local, eval_size, eval_size, 3), np.uint8),
                              rng.integers(0, config.synthetic_classes, local).astype(np.int32),
                              positions, num_eval)
    make_eval = grain.MapDataset.range(len(positions) // local).map(evaluate)
    train = functools.partial(
        synthetic.synthetic_dataset, global_batch_size=config.batch_size,
        image_size=train_size, num_classes=config.synthetic_classes,
        process_index=process_index, process_count=process_count)
    return ImageData(
        name="synthetic", num_classes=config.synthetic_classes, num_train_examples=num_train,
        num_eval_examples=num_eval, image_size=train_size, eval_image_size=eval_size,
        classes=tuple(str(c) for c in range(config.synthetic_classes)),
        make_train=lambda seed: train(seed=seed).to_iter_dataset(),
        make_eval=lambda: make_eval)


def _sources(config: TrainConfig) -> tuple[str, Any, Any]:
    """``(name, train source, eval source)`` of ``image_folder`` or ``tfds``."""
    if config.dataset == "image_folder":
        train, evaluate = image_folder.train_and_eval_folders(config.data_dir)
        return f"image_folder {config.data_dir}", train, evaluate
    try:
        train, evaluate = (tfds_source.tfds_source(TFDS_NAME, split, config.data_dir)
                           for split in TFDS_SPLITS)
    except ImportError as e:
        raise errors.UserError(f"--dataset tfds: {e}") from e
    return f"tfds {TFDS_NAME}", train, evaluate


def _from_records(config: TrainConfig, process_index: int, process_count: int) -> ImageData:
    name, train, evaluate = _sources(config)
    train = evenly_spaced(train, config.train_examples)
    evaluate = evenly_spaced(evaluate, config.test_examples)
    train_size, eval_size = image_sizes(config)
    local = _local(config.batch_size, process_count, "--batch-size")
    _local(config.eval_batch_size, process_count, "--eval-batch-size")
    if len(train) // process_count < local:
        raise image_folder.ImageFolderError(
            f"{name}: {len(train)} training images, fewer than {process_count} process(es) "
            f"× a batch of {local}; lower --batch-size or add images.")
    shared = dict(process_index=process_index, process_count=process_count,
                  worker_count=config.data_workers, on_corrupt=config.on_corrupt)
    make_train = functools.partial(image_folder.train_loader, train,
                                   global_batch_size=config.batch_size, image_size=train_size,
                                   randaugment_level=config.randaugment, **shared)
    make_eval = functools.partial(image_folder.eval_loader, evaluate,
                                  global_batch_size=config.eval_batch_size,
                                  image_size=eval_size, method=config.eval_preprocessing,
                                  **shared)
    return ImageData(
        name=name, num_classes=len(train.classes), num_train_examples=len(train),
        num_eval_examples=len(evaluate), image_size=train_size, eval_image_size=eval_size,
        classes=tuple(train.classes), make_train=lambda seed: make_train(seed=seed),
        make_eval=make_eval)


def load(config: TrainConfig, process_index: int = 0, process_count: int = 1) -> ImageData:
    """Opens ``config.dataset`` (``image_folder``, ``tfds`` or ``synthetic``) for this process.

    Lists the files (or opens the TFDS source) now; reading and decoding start when the
    batches are iterated.

    Args:
      config: the run's configuration (``dataset``, ``data_dir``, the batch sizes, image
        sizes, ``eval_preprocessing``, ``randaugment``, ``data_workers``, ``on_corrupt``,
        ``train_examples``, ``test_examples``, ``synthetic_classes``).
      process_index: this process (``jax.process_index()``).
      process_count: the number of processes (``jax.process_count()``).

    Returns:
      The dataset's :class:`ImageData`.

    Raises:
      UserError: a batch size that does not divide by the processes, or ``tfds`` without
        ``tensorflow_datasets`` installed.
      ImageFolderError: (a user error too) a missing, empty or malformed tree, a dataset
        smaller than one batch per process, or an unprepared TFDS dataset, naming it.
    """
    if not is_image_dataset(config.dataset):
        raise ValueError(f"--dataset {config.dataset} is not an image dataset "
                         f"{IMAGE_DATASETS}; examples.common.datasets loads it.")
    if config.dataset == "synthetic":
        data = _synthetic(config, process_index, process_count)
    else:
        data = _from_records(config, process_index, process_count)
    logger.info("%s: %d classes, %d training images at %d px, %d evaluation images at %d px",
                data.name, data.num_classes, data.num_train_examples, data.image_size,
                data.num_eval_examples, data.eval_image_size)
    return data


def load_dataset(config: TrainConfig) -> Any:
    """The run's dataset, for this process: an image dataset or a small one held in memory.

    Returns:
      An :class:`ImageData` (:func:`load`) for ``image_folder``, ``tfds`` and ``synthetic``;
      else an :class:`~examples.common.input_pipeline.InMemoryData` of Fashion-MNIST, MNIST
      or CIFAR-10 (cut to ``train_examples`` and ``test_examples``). Both have the sizes,
      pixel statistics and batches the training loop reads.
    """
    if is_image_dataset(config.dataset):
        return load(config, jax.process_index(), jax.process_count())
    data = datasets.load(config.dataset, config.data_dir, train_examples=config.train_examples,
                         test_examples=config.test_examples)
    return input_pipeline.InMemoryData(
        config.dataset, data, config.batch_size,
        devices.eval_batch_size(config.eval_batch_size, len(data.test_images)))
