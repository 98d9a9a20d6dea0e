"""Class-folder image datasets (``DIR/<split>/<class>/*.jpg``) as grain loaders.

:class:`ImageFolder` lists a split's files, with classes sorted by folder name; it is a
random-access grain data source of ``(path, label)`` records. :func:`train_loader` and
:func:`eval_loader` read, decode and crop the images in grain worker processes (each JAX
process reads only its own shard) and yield uint8 NHWC batches; the device normalises
them (:data:`~examples.nf_resnet.imagenet_preprocessing.IMAGENET_MEAN`).

A file that cannot be read or decoded is reported by its path. With ``on_corrupt="skip"``
(the default) a warning names it and the example is left out: a training batch is filled
from the next files, an evaluation example is masked out (``mask`` 0); should more than
:data:`MAX_SKIPPED_FRACTION` of 1000 consecutive training images be skipped, the loader
raises rather than search on. With ``on_corrupt="raise"`` the loader raises
:class:`ImageFolderError` naming the file.
"""

import dataclasses
import logging
import pathlib
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import grain
import numpy as np
from absl import flags as absl_flags
from PIL import UnidentifiedImageError

from examples.common import datasets
from examples.nf_resnet import imagenet_preprocessing, randaugment

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
OnCorrupt = Literal["skip", "raise"]
_SHOWN = 5  # Paths listed in a message about many files.
# Above this fraction of skipped files (over windows of 1000) the training loader raises.
MAX_SKIPPED_FRACTION = 0.5
logger = logging.getLogger(__name__)


class ImageFolderError(datasets.DataFileError):
    """A class-folder tree that is empty or malformed, or an image that cannot be decoded."""


class RecordSource(Protocol):
    """What the loaders read: ``(path or encoded bytes, label)`` records, and class names."""

    classes: tuple[str, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[str | bytes, int]: ...

    def describe(self, index: int) -> str:
        """Names record ``index`` in messages (its path, or its place in a file)."""
        ...


def _listing(paths: Sequence[pathlib.Path]) -> str:
    more = f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else ""
    return ", ".join(str(p) for p in paths[:_SHOWN]) + more


def _class_dirs(split_dir: pathlib.Path) -> list[pathlib.Path]:
    if not split_dir.is_dir():
        raise ImageFolderError(f"{split_dir}: no such directory; expected one folder per class "
                               f"in it, as {split_dir}/<class>/<image>.jpg.")
    entries = sorted(split_dir.iterdir())
    loose = [p for p in entries if not p.is_dir()]
    if loose:
        logger.warning("%s: %d files outside class folders are ignored: %s",
                        split_dir, len(loose), _listing(loose))
    class_dirs = [p for p in entries if p.is_dir()]
    if not class_dirs:
        raise ImageFolderError(f"{split_dir}: no class folders; put each class's images in "
                               f"{split_dir}/<class>/.")
    return class_dirs


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """The images of ``root/split/<class>/``, labelled by the class folders' sorted names.

    Attributes:
      root: the dataset directory.
      split: the split's folder name (``"train"``, ``"val"``).
      classes: class names; label ``i`` is ``classes[i]``.
      paths: every image file, sorted by class then by name.
      labels: int32 labels, one per path.
    """

    root: pathlib.Path
    split: str
    classes: tuple[str, ...]
    paths: tuple[str, ...]
    labels: np.ndarray

    @classmethod
    def scan(cls, root: str | pathlib.Path, split: str,
             classes: Sequence[str] | None = None) -> "ImageFolder":
        """Lists ``root/split/<class>/*`` (``.jpg``, ``.jpeg``, ``.png``, any case).

        Args:
          root: the dataset directory.
          split: the split's folder.
          classes: the class names that labels index, e.g. the training split's, so that
            a validation split without some class keeps the same labels; by default the
            split's own folders.

        Returns:
          The dataset. Files with other extensions are reported in a warning and left out.

        Raises:
          ImageFolderError: naming the directory, when the split is missing or has no
            class folders, a class folder has no images, or a folder is not in
            ``classes``.
        """
        split_dir = pathlib.Path(root).expanduser() / split
        class_dirs = _class_dirs(split_dir)
        names = tuple(classes) if classes is not None else tuple(d.name for d in class_dirs)
        unknown = [d for d in class_dirs if d.name not in names]
        if unknown:
            raise ImageFolderError(f"{_listing(unknown)}: not among the {len(names)} given "
                                   "classes; remove the folders or pass those classes.")
        paths, labels, others = [], [], []
        for class_dir in class_dirs:
            files = sorted(p for p in class_dir.rglob("*") if p.is_file())
            images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
            others += [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
            if not images:
                raise ImageFolderError(f"{class_dir}: no {'/'.join(IMAGE_EXTENSIONS)} files; "
                                       "add images or remove the folder.")
            paths += [str(p) for p in images]
            labels += [names.index(class_dir.name)] * len(images)
        if others:
            logger.warning("%s: %d files without a %s extension are ignored: %s", split_dir,
                            len(others), "/".join(IMAGE_EXTENSIONS), _listing(others))
        return cls(pathlib.Path(root), split, names, tuple(paths), np.asarray(labels, np.int32))

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[str, int]:
        """Returns ``(path, label)`` of image ``index``."""
        return self.paths[index], int(self.labels[index])

    def describe(self, index: int) -> str:
        """Returns the path of image ``index``."""
        return self.paths[index]


def train_and_eval_folders(data_dir: str | pathlib.Path, train_split: str = "train",
                           eval_split: str = "val") -> tuple[ImageFolder, ImageFolder]:
    """Scans ``data_dir/train`` and ``data_dir/val``, the latter labelled by the former's classes.

    Args:
      data_dir: the dataset directory (``--data-dir``).
      train_split: the training split's folder.
      eval_split: the evaluation split's folder.

    Returns:
      ``(train, eval)`` with the same ``classes``.

    Raises:
      ImageFolderError: as :meth:`ImageFolder.scan`, naming the directory at fault.
    """
    train = ImageFolder.scan(data_dir, train_split)
    return train, ImageFolder.scan(data_dir, eval_split, classes=train.classes)


def _read(record: str | bytes) -> bytes:
    if isinstance(record, bytes):
        return record
    with open(record, "rb") as f:
        return f.read()


@dataclasses.dataclass(frozen=True)
class _Decode:
    """Reads and preprocesses one record; returns ``None`` for a skipped corrupt file."""

    image_size: int
    on_corrupt: OnCorrupt
    eval_method: imagenet_preprocessing.EvalMethod | None = None  # None: training
    randaugment: tuple[int, float] | None = None

    def __call__(self, described: tuple[str, tuple[str | bytes, int]],
                 rng: np.random.Generator | None = None) -> dict[str, Any] | None:
        description, (record, label) = described
        try:
            decoded = imagenet_preprocessing.decode(_read(record))
        except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three.
            reason = "not a JPEG or PNG image" if isinstance(e, UnidentifiedImageError) else e
            message = f"{description}: cannot be read as an image ({reason})"
            if self.on_corrupt == "raise":
                raise ImageFolderError(message + "; fix or delete the file, or pass "
                                       "on_corrupt='skip'.") from e
            logger.warning("%s; skipped.", message)
            return None
        if self.eval_method is not None:
            image = imagenet_preprocessing.eval_image(decoded, self.image_size, self.eval_method)
        else:
            image = imagenet_preprocessing.train_image(decoded, rng, self.image_size)
            if self.randaugment:
                image = randaugment.randaugment(image, rng, *self.randaugment)
        return {"image": image, "label": np.int32(label)}


@dataclasses.dataclass(frozen=True)
class _Lookup:
    """Maps a record index to ``(description, record)``, so that messages name the record."""

    source: RecordSource

    def __call__(self, index: int) -> tuple[str, tuple[str | bytes, int]]:
        return self.source.describe(int(index)), self.source[int(index)]


def _is_present(example: dict[str, Any] | None) -> bool:
    return example is not None


def _check_on_corrupt(on_corrupt: str) -> None:
    if on_corrupt not in ("skip", "raise"):
        raise ValueError(f"on_corrupt={on_corrupt!r}: use 'skip' or 'raise'.")


def _local_batch_size(global_batch_size: int, process_count: int) -> int:
    if global_batch_size % process_count:
        raise ValueError(f"Batch size {global_batch_size} does not divide by "
                         f"{process_count} processes.")
    return global_batch_size // process_count


def _prefetch(dataset: grain.IterDataset, worker_count: int) -> grain.IterDataset:
    if worker_count:
        # grain's worker start-up reads absl flags; the examples parse theirs with argparse.
        if not absl_flags.FLAGS.is_parsed():
            absl_flags.FLAGS.mark_as_parsed()
        return dataset.mp_prefetch(grain.multiprocessing.MultiprocessingOptions(
            num_workers=worker_count, per_worker_buffer_size=2))
    return dataset


def train_loader(
    source: RecordSource,
    *,
    global_batch_size: int,
    image_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    worker_count: int = 0,
    read_threads: int = 4,
    on_corrupt: OnCorrupt = "skip",
    randaugment_level: str | None = None,
) -> grain.IterDataset:
    """An endless, shuffled, augmented stream of this process's training batches.

    Process ``p`` reads only records ``p, p + process_count, …``, reshuffled every epoch.
    Each image gets an Inception-style crop and flip
    (:func:`~examples.nf_resnet.imagenet_preprocessing.train_image`) drawn from ``seed`` and
    its position in the stream, so a run is reproducible and a restored iterator
    (``get_state`` / ``set_state``) continues exactly, for a fixed ``worker_count``.

    Args:
      source: an :class:`ImageFolder` or any :class:`RecordSource`.
      global_batch_size: examples per step over all processes.
      image_size: the train size (square).
      seed: seed of the shuffle and the augmentation.
      process_index: this process (``jax.process_index()``).
      process_count: the number of processes (``jax.process_count()``).
      worker_count: grain worker processes that read and decode; 0 decodes in this
        process (with ``read_threads`` threads).
      read_threads: threads per process (or worker) reading and decoding.
      on_corrupt: ``"skip"`` (warn with the path, leave the file out) or ``"raise"``.
      randaugment_level: DeepMind's RandAugment level (``"405"``: 4 operations at
        magnitude 5; :mod:`examples.nf_resnet.randaugment`) applied after the crop and flip;
        ``None`` for none.

    Returns:
      A grain ``IterDataset`` of ``{"image": uint8 (B, S, S, 3), "label": int32 (B,)}``
      with ``B = global_batch_size // process_count``; ``iter()`` it.
    """
    _check_on_corrupt(on_corrupt)
    augment = randaugment.parse_level(randaugment_level) if randaugment_level else None
    local_batch_size = _local_batch_size(global_batch_size, process_count)
    shard = grain.MapDataset.range(len(source))[process_index::process_count]
    if len(shard) < local_batch_size:
        raise ValueError(f"{len(shard)} training images per process, fewer than the batch "
                         f"of {local_batch_size}.")
    decoded = (shard.shuffle(seed=seed).repeat(None).map(_Lookup(source))
               .random_map(_Decode(image_size, on_corrupt, randaugment=augment), seed=seed))
    options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=2 * read_threads)
    batches = (decoded.to_iter_dataset(options).filter(_is_present)
               .batch(local_batch_size, drop_remainder=True))
    guarded = grain.experimental.WithOptionsIterDataset(batches, grain.experimental.DatasetOptions(
        filter_raise_threshold_ratio=MAX_SKIPPED_FRACTION))
    return _prefetch(guarded, worker_count)


@dataclasses.dataclass(frozen=True)
class _EvalExample:
    """Decodes the record at a position, or a masked-out blank for padding and bad files."""

    source: RecordSource
    decode: _Decode

    def __call__(self, position: int) -> dict[str, Any]:
        position = int(position)
        decoded = None
        if position < len(self.source):
            decoded = self.decode(_Lookup(self.source)(position))
        if decoded is None:
            size = self.decode.image_size
            return {"image": np.zeros((size, size, 3), np.uint8), "label": np.int32(0),
                    "mask": np.float32(0.0)}
        return {**decoded, "mask": np.float32(1.0)}


def eval_positions(num_examples: int, global_batch_size: int, process_index: int,
                   process_count: int) -> np.ndarray:
    """This process's record indices over all evaluation batches; ``num_examples`` pads.

    Global batch ``b`` holds records ``b·G … (b+1)·G - 1`` (``G = global_batch_size``),
    the last one padded; process ``p`` takes its ``p``-th slice of ``G / process_count``
    of every global batch, so all processes yield the same number of batches and every
    record is read exactly once by one of them.

    Returns:
      int64 positions; those ``≥ num_examples`` are padding.
    """
    local = _local_batch_size(global_batch_size, process_count)
    num_batches = -(-num_examples // global_batch_size)
    positions = np.arange(num_batches * global_batch_size).reshape(num_batches, process_count,
                                                                   local)
    return positions[:, process_index].ravel()


def eval_loader(
    source: RecordSource,
    *,
    global_batch_size: int,
    image_size: int,
    method: imagenet_preprocessing.EvalMethod = "crop_resize",
    process_index: int = 0,
    process_count: int = 1,
    worker_count: int = 0,
    read_threads: int = 4,
    on_corrupt: OnCorrupt = "skip",
) -> grain.IterDataset:
    """One pass over every evaluation image, split over processes, the last batch padded.

    Args:
      source: an :class:`ImageFolder` or any :class:`RecordSource`.
      global_batch_size: examples per batch over all processes.
      image_size: the test size (square).
      method: the test-time crop (:func:`~examples.nf_resnet.imagenet_preprocessing.eval_image`).
      process_index: this process.
      process_count: the number of processes.
      worker_count: grain worker processes; 0 decodes in this process.
      read_threads: threads per process (or worker) reading and decoding.
      on_corrupt: ``"skip"`` (warn, mask the example out) or ``"raise"``.

    Returns:
      A grain ``IterDataset`` of ``{"image", "label", "mask"}`` batches of
      ``global_batch_size // process_count``; ``mask`` is 1.0 for a real image and 0.0 for
      padding or a skipped file, whose image and label are zeros. Sum ``mask`` over all
      processes to count the images evaluated.
    """
    _check_on_corrupt(on_corrupt)
    if method not in ("crop_resize", "resize_crop"):
        raise ValueError(f"method {method!r}: use 'crop_resize' or 'resize_crop'.")
    local = _local_batch_size(global_batch_size, process_count)
    positions = eval_positions(len(source), global_batch_size, process_index, process_count)
    example = _EvalExample(source, _Decode(image_size, on_corrupt, eval_method=method))
    options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=2 * read_threads)
    batches = grain.MapDataset.source(positions).map(example).batch(local)
    return _prefetch(batches.to_iter_dataset(options), worker_count)
