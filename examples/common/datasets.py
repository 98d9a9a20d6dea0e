"""Finding, downloading and reading the image-classification datasets of the example.

Fashion-MNIST and MNIST are read from IDX files (gzip-compressed or not), CIFAR-10 from
its python pickle batches. :func:`load` reads them from ``data_dir`` when one is given (and
only there: a wrong ``--data-dir`` is an error, not a silent fall-back); otherwise it looks,
in order, in ``$AGC_OPTAX_DATA``, ``~/.cache/agc_optax/<dataset>`` and, for Fashion-MNIST,
Debian's ``/usr/share/datasets/fashion-mnist``, and failing that downloads them from the
dataset's official location into the cache, checking their SHA-256.
"""

import dataclasses
import gzip
import hashlib
import logging
import os
import pathlib
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request
from typing import NamedTuple

import numpy as np

ENV_VAR = "AGC_OPTAX_DATA"
CACHE_ROOT = pathlib.Path("~/.cache/agc_optax")


class DataFileError(ValueError):
    """A dataset file is truncated, corrupt or not what its name says."""


class DatasetNotFoundError(FileNotFoundError):
    """No copy of a dataset was found and none could be downloaded."""


class ImageDataset(NamedTuple):
    """A train/test split of images (uint8, NHWC) with integer labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int


@dataclasses.dataclass(frozen=True)
class DatasetSource:
    """Where a dataset's files come from.

    Attributes:
      format: ``"idx"`` or ``"cifar_pickle"``.
      files: file names that must be present (IDX: without the ``.gz`` suffix).
      urls: download address of each downloaded file, mapped to its SHA-256.
      system_dirs: read-only directories where a system package installs the files.
    """

    format: str
    files: tuple[str, ...]
    urls: dict[str, str]
    system_dirs: tuple[str, ...] = ()


_IDX_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# yann.lecun.com no longer serves MNIST; this is the mirror TFDS and others use.
_MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_CIFAR10_DIR = "cifar-10-batches-py"

SOURCES: dict[str, DatasetSource] = {
    "fashion_mnist": DatasetSource(
        "idx", _IDX_FILES,
        {
            _FASHION_URL + "train-images-idx3-ubyte.gz":
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            _FASHION_URL + "train-labels-idx1-ubyte.gz":
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            _FASHION_URL + "t10k-images-idx3-ubyte.gz":
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            _FASHION_URL + "t10k-labels-idx1-ubyte.gz":
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
    "mnist": DatasetSource(
        "idx", _IDX_FILES,
        {
            _MNIST_URL + "train-images-idx3-ubyte.gz":
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            _MNIST_URL + "train-labels-idx1-ubyte.gz":
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            _MNIST_URL + "t10k-images-idx3-ubyte.gz":
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            _MNIST_URL + "t10k-labels-idx1-ubyte.gz":
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    ),
    "cifar10": DatasetSource(
        "cifar_pickle",
        (*(f"{_CIFAR10_DIR}/data_batch_{i}" for i in range(1, 6)), f"{_CIFAR10_DIR}/test_batch"),
        {
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz":
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        },
    ),
}

_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: str | os.PathLike, expected_ndim: int) -> np.ndarray:
    """Reads an IDX file of unsigned bytes, gzip-compressed or not.

    Args:
      path: the file; a ``.gz`` suffix means gzip.
      expected_ndim: 3 for images, 1 for labels.

    Returns:
      The array, with the shape the header declares.

    Raises:
      DataFileError: naming the file and what is wrong with it.
    """
    path = pathlib.Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip raises both for truncated or corrupt streams
        raise DataFileError(f"{path}: cannot be decompressed ({e}); delete it and retry.") from e
    if len(raw) < 4:
        raise DataFileError(f"{path}: {len(raw)} bytes, too short for an IDX header.")
    zero, dtype_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or dtype_code not in _IDX_DTYPES or ndim != expected_ndim:
        raise DataFileError(
            f"{path}: bad IDX magic number {raw[:4].hex()} (expected 0000080{expected_ndim})."
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataFileError(f"{path}: truncated IDX header.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) + header_len
    if len(raw) != expected:
        raise DataFileError(
            f"{path}: {len(raw)} bytes but its header {shape} needs {expected}; "
            "the file is truncated or corrupt."
        )
    return np.frombuffer(raw, _IDX_DTYPES[dtype_code], offset=header_len).reshape(shape)


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads one CIFAR python pickle batch.

    Args:
      path: a ``data_batch_*`` or ``test_batch`` file.

    Returns:
      ``(images, labels)``: uint8 ``(N, 32, 32, 3)`` and int64 ``(N,)``.

    Raises:
      DataFileError: naming the file and what is wrong with it.
    """
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data, labels = batch[b"data"], batch[b"labels"]
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
        raise DataFileError(f"{path}: not a CIFAR pickle batch ({e!r}).") from e
    data = np.asarray(data, np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != data.shape[0]:
        raise DataFileError(
            f"{path}: data of shape {data.shape} with {len(labels)} labels; expected "
            "(N, 3072) with N labels."
        )
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, np.asarray(labels, np.int64)


def candidate_dirs(dataset: str, data_dir: str | None = None) -> list[pathlib.Path]:
    """Returns the directories searched for ``dataset``, in order."""
    dirs = []
    if data_dir:
        dirs.append(pathlib.Path(data_dir).expanduser())
    if os.environ.get(ENV_VAR):
        root = pathlib.Path(os.environ[ENV_VAR]).expanduser()
        dirs += [root / dataset, root]
    dirs.append(cache_dir(dataset))
    dirs += [pathlib.Path(d) for d in SOURCES[dataset].system_dirs]
    return dirs


def cache_dir(dataset: str) -> pathlib.Path:
    """Returns ``~/.cache/agc_optax/<dataset>``, where downloads go."""
    return CACHE_ROOT.expanduser() / dataset


def _find_file(directory: pathlib.Path, name: str, fmt: str) -> pathlib.Path | None:
    suffixes = (".gz", "") if fmt == "idx" else ("",)
    for suffix in suffixes:
        path = directory / (name + suffix)
        if path.is_file():
            return path
    return None


def locate(dataset: str, data_dir: str | None = None) -> dict[str, pathlib.Path] | None:
    """Returns the paths of the dataset's files in the first directory holding all of them.

    A given ``data_dir`` is the only directory searched.
    """
    source = SOURCES[dataset]
    directories = [pathlib.Path(data_dir).expanduser()] if data_dir else candidate_dirs(dataset)
    for directory in directories:
        paths = {name: _find_file(directory, name, source.format) for name in source.files}
        if all(paths.values()):
            return paths  # type: ignore[return-value]
    return None


def sha256sum(path: pathlib.Path) -> str:
    """Returns the hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, destination: pathlib.Path, sha256: str) -> pathlib.Path:
    """Downloads ``url`` to ``destination`` and checks its SHA-256.

    Args:
      url: any address ``urllib`` opens (``https://``, ``http://``, ``file://``).
      destination: the file to write; written atomically.
      sha256: expected hex digest.

    Returns:
      ``destination``.

    Raises:
      DataFileError: the downloaded bytes do not have the expected digest.
      urllib.error.URLError: the address cannot be reached.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as f:
        shutil.copyfileobj(response, f)
    digest = sha256sum(partial)
    if digest != sha256:
        partial.unlink()
        raise DataFileError(f"{url}: SHA-256 {digest}, expected {sha256}; download corrupt.")
    partial.replace(destination)
    return destination


def fetch(dataset: str) -> dict[str, pathlib.Path]:
    """Downloads ``dataset`` into its cache directory and returns its files' paths."""
    source, target = SOURCES[dataset], cache_dir(dataset)
    for url, sha256 in source.urls.items():
        archive = download(url, target / url.rsplit("/", 1)[-1], sha256)
        if archive.name.endswith(".tar.gz"):
            with tarfile.open(archive) as tar:
                tar.extractall(target, filter="data")
            archive.unlink()
    paths = locate(dataset, str(target))
    if paths is None:
        raise DataFileError(f"{target}: the download lacks some of {source.files}.")
    return paths


def _not_found_message(dataset: str, reason: Exception) -> str:
    """Two lines: where the files were looked for and fetched from, then every way to fix it."""
    dirs = ", ".join(map(str, candidate_dirs(dataset)))
    return (
        f"Dataset {dataset!r} ({', '.join(SOURCES[dataset].files)}) is not in {dirs}, and its "
        f"download from {', '.join(SOURCES[dataset].urls)} failed ({reason}).\n"
        f"Pass --data-dir, set ${ENV_VAR}, put the files in {cache_dir(dataset)}"
        + (", or install Debian's dataset-fashion-mnist" if dataset == "fashion_mnist" else "")
        + "."
    )


def load(dataset: str, data_dir: str | None = None, *, train_examples: int | None = None,
         test_examples: int | None = None) -> ImageDataset:
    """Finds (or downloads) and reads a dataset.

    Args:
      dataset: ``"fashion_mnist"``, ``"mnist"`` or ``"cifar10"``.
      data_dir: the directory holding the files (``None``: search the usual places).
      train_examples: keep only the first this many training examples (``None``: all).
      test_examples: keep only the first this many test examples (``None``: all).

    Returns:
      The train and test images (uint8 NHWC) and labels (int32).

    Raises:
      DatasetNotFoundError: ``data_dir`` lacks the files, or no copy was found and the
        download failed; the message names every option.
      DataFileError: a file is truncated or corrupt; the message names it.
    """
    if dataset not in SOURCES:
        raise ValueError(f"Unknown dataset {dataset!r}; choose from {sorted(SOURCES)}.")
    paths = locate(dataset, data_dir)
    if paths is None and data_dir:
        raise DatasetNotFoundError(
            f"--data-dir {data_dir} does not hold the {dataset} files "
            f"{list(SOURCES[dataset].files)} (IDX files may end in .gz); point it at the folder "
            "holding them, or leave it out to search the usual places.")
    if paths is None:
        logging.info("Dataset %s not found locally; downloading it.", dataset)
        try:
            paths = fetch(dataset)
        except (urllib.error.URLError, OSError) as e:
            raise DatasetNotFoundError(_not_found_message(dataset, e)) from e
    if SOURCES[dataset].format == "idx":
        images = [read_idx(paths[n], 3)[..., None] for n in _IDX_FILES[::2]]
        labels = [read_idx(paths[n], 1) for n in _IDX_FILES[1::2]]
        num_classes = 10
    else:
        batches = [read_cifar_batch(paths[n]) for n in SOURCES[dataset].files]
        images = [np.concatenate([b[0] for b in batches[:-1]]), batches[-1][0]]
        labels = [np.concatenate([b[1] for b in batches[:-1]]), batches[-1][1]]
        num_classes = 10
    for split, x, y in zip(("train", "test"), images, labels, strict=True):
        if len(x) != len(y):
            raise DataFileError(f"{dataset} {split}: {len(x)} images but {len(y)} labels.")
    train, test = slice(train_examples), slice(test_examples)
    return ImageDataset(images[0][train], labels[0][train].astype(np.int32), images[1][test],
                        labels[1][test].astype(np.int32), num_classes)
