"""TFDS datasets prepared as ArrayRecord (``imagenet2012``) as a record source, without TensorFlow.

``tfds.data_source`` reads ArrayRecord files by random access and parses their examples
with TFDS's own protocol buffers, so TensorFlow is not imported (TFDS 4.9). The images are
left encoded (``SkipDecoding``): :mod:`examples.nf_resnet.image_folder`'s loaders decode and
crop them in grain workers, exactly as they do files of a class-folder tree.

``tensorflow_datasets`` and ``array_record`` are imported only when :func:`tfds_source` is
called; the dataset must already be prepared in ``data_dir`` (ImageNet cannot be
downloaded by TFDS: its ``download_and_prepare`` reads the archives you put in
``data_dir/downloads/manual``).
"""

import dataclasses
from typing import Any

from examples.nf_resnet.image_folder import ImageFolderError

INSTALL = "pip install tensorflow-datasets array_record"


@dataclasses.dataclass(frozen=True)
class TfdsImages:
    """A TFDS data source as ``(encoded image bytes, label)`` records.

    Attributes:
      source: the ``tfds.data_source`` result (random access, picklable).
      name: the dataset's name, for messages.
      split: the split, for messages.
      classes: class names from the dataset's ``label`` feature.
      image_key: the feature holding the encoded image.
      label_key: the feature holding the label.
    """

    source: Any
    name: str
    split: str
    classes: tuple[str, ...]
    image_key: str = "image"
    label_key: str = "label"

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[bytes, int]:
        """Returns the encoded image and the label of record ``index``."""
        example = self.source[index]
        return bytes(example[self.image_key]), int(example[self.label_key])

    def describe(self, index: int) -> str:
        """Names record ``index`` as ``name/split[index]``."""
        return f"{self.name}/{self.split}[{index}]"


def tfds_source(name: str = "imagenet2012", split: str = "train",
                data_dir: str | None = None) -> TfdsImages:
    """Opens a prepared TFDS dataset of encoded images and integer labels.

    Args:
      name: the TFDS name (``"imagenet2012"``; any dataset with ``image`` and ``label``
        features works).
      split: a TFDS split (``"train"``, ``"validation"``, ``"train[:10000]"``).
      data_dir: where the dataset was prepared (``file_format="array_record"``); by default
        TFDS's own (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).

    Returns:
      A record source for :func:`~examples.nf_resnet.image_folder.train_loader` and
      :func:`~examples.nf_resnet.image_folder.eval_loader`.

    Raises:
      ImportError: when ``tensorflow_datasets`` is not installed (the message says how).
      ImageFolderError: when the dataset is not prepared in ``data_dir``.
    """
    try:
        import tensorflow_datasets as tfds  # Optional and heavy: imported on use.
    except ImportError as e:
        raise ImportError(f"Reading TFDS datasets needs tensorflow_datasets: {INSTALL} "
                          "(TensorFlow itself is not needed).") from e
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                                  decoders={"image": tfds.decode.SkipDecoding()})
    except (AssertionError, FileNotFoundError, NotImplementedError, ValueError) as e:
        raise ImageFolderError(
            f"TFDS {name!r} split {split!r} in {data_dir or 'the default data_dir'}: cannot be "
            f"opened ({e}); prepare it as ArrayRecord first "
            f"(tfds.builder({name!r}).download_and_prepare(file_format='array_record')).") from e
    classes = tuple(builder.info.features["label"].names)
    return TfdsImages(source, name, split, classes)
