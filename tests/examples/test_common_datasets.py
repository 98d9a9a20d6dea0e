"""The NF-ResNet example's dataset readers, locations and download, on generated files."""

import gzip
import hashlib
import pathlib
import pickle
import tarfile

import numpy as np
import pytest

from examples.common import datasets


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dataset(directory: pathlib.Path, n_train=12, n_test=5, compress=True, seed=0):
    """Writes the four IDX files of an MNIST-like dataset; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, (n_train,)),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, (n_test,)),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if compress:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return arrays


@pytest.fixture
def no_default_locations(tmp_path, monkeypatch):
    """Points the cache to an empty directory and hides $AGC_OPTAX_DATA and system dirs."""
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setattr(datasets, "CACHE_ROOT", tmp_path / "cache")
    for name, source in datasets.SOURCES.items():
        monkeypatch.setitem(datasets.SOURCES, name,
                            datasets.DatasetSource(source.format, source.files, source.urls))
    return tmp_path / "cache"


@pytest.mark.parametrize("compress", [True, False])
def test_reads_idx_files_gzip_or_not(tmp_path, compress, no_default_locations):
    arrays = write_idx_dataset(tmp_path / "fm", compress=compress)
    data = datasets.load("fashion_mnist", str(tmp_path / "fm"))
    np.testing.assert_array_equal(data.train_images[..., 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.test_labels, arrays["t10k-labels-idx1-ubyte"])
    assert data.train_images.shape == (12, 28, 28, 1) and data.train_images.dtype == np.uint8
    assert data.train_labels.dtype == np.int32 and data.num_classes == 10


def test_truncated_idx_file_is_named_in_the_error(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((4, 28, 28)))[:-100])
    with pytest.raises(datasets.DataFileError, match=r"train-images-idx3-ubyte.*truncated"):
        datasets.read_idx(path, 3)


def test_truncated_gzip_is_named_in_the_error(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 28, 28))))[:-20])
    with pytest.raises(datasets.DataFileError, match=r"train-images-idx3-ubyte.gz.*decompress"):
        datasets.read_idx(path, 3)


def test_corrupt_gzip_is_named_in_the_error(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(datasets.DataFileError, match=r"t10k-labels-idx1-ubyte.gz"):
        datasets.read_idx(path, 1)


def test_wrong_magic_number_is_reported(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(np.zeros((3, 2, 2))))  # Images where labels are expected.
    with pytest.raises(datasets.DataFileError, match="magic number"):
        datasets.read_idx(path, 1)


def test_label_and_image_counts_must_agree(tmp_path, no_default_locations):
    write_idx_dataset(tmp_path / "fm")
    (tmp_path / "fm" / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros((7,)))))
    with pytest.raises(datasets.DataFileError, match="12 images but 7 labels"):
        datasets.load("fashion_mnist", str(tmp_path / "fm"))


def write_cifar_batches(directory: pathlib.Path, per_batch=4, seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, per_batch).tolist()}
        (directory / name).write_bytes(pickle.dumps(batch))
        batches[name] = batch
    return batches


def test_reads_cifar_pickle_batches(tmp_path, no_default_locations):
    batches = write_cifar_batches(tmp_path / "c" / "cifar-10-batches-py")
    data = datasets.load("cifar10", str(tmp_path / "c"))
    assert data.train_images.shape == (20, 32, 32, 3) and data.test_images.shape == (4, 32, 32, 3)
    first = batches["data_batch_1"][b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(data.train_images[0], first)
    np.testing.assert_array_equal(data.test_labels, batches["test_batch"][b"labels"])


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"\x80\x04not a pickle", "not a CIFAR pickle"),
     (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "shape"),
     (pickle.dumps({b"labels": [0]}), "not a CIFAR pickle")],
)
def test_corrupt_cifar_batch_is_named_in_the_error(tmp_path, content, match):
    path = tmp_path / "data_batch_3"
    path.write_bytes(content)
    with pytest.raises(datasets.DataFileError, match=match) as error:
        datasets.read_cifar_batch(path)
    assert "data_batch_3" in str(error.value)


def test_truncated_cifar_batch_is_named_in_the_error(tmp_path):
    write_cifar_batches(tmp_path)
    path = tmp_path / "test_batch"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(datasets.DataFileError, match="test_batch"):
        datasets.read_cifar_batch(path)


def test_locations_are_searched_in_order(tmp_path, monkeypatch, no_default_locations):
    write_idx_dataset(tmp_path / "env" / "mnist", seed=1)
    write_idx_dataset(no_default_locations / "mnist", seed=2)
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    from_env = datasets.load("mnist")
    write_idx_dataset(tmp_path / "flag", seed=3)
    from_flag = datasets.load("mnist", str(tmp_path / "flag"))
    monkeypatch.delenv(datasets.ENV_VAR)
    from_cache = datasets.load("mnist")
    firsts = [d.train_labels[:6].tolist() for d in (from_env, from_flag, from_cache)]
    expected = [np.random.default_rng(s).integers(0, 256, (12, 28, 28)) for s in (1, 3, 2)]
    for data, images in zip((from_env, from_flag, from_cache), expected, strict=True):
        np.testing.assert_array_equal(data.train_images[..., 0], images)
    assert len(firsts) == 3


def serve_as_file_urls(monkeypatch, dataset: str, files: dict[str, pathlib.Path],
                       sha_override: str | None = None):
    """Replaces the dataset's download URLs by file:// URLs of local files."""
    urls = {path.as_uri(): sha_override or hashlib.sha256(path.read_bytes()).hexdigest()
            for path in files.values()}
    source = datasets.SOURCES[dataset]
    monkeypatch.setitem(datasets.SOURCES, dataset,
                        datasets.DatasetSource(source.format, source.files, urls))


def test_downloads_into_the_cache_and_checks_sha256(tmp_path, monkeypatch,
                                                    no_default_locations):
    write_idx_dataset(tmp_path / "server")
    serve_as_file_urls(monkeypatch, "fashion_mnist",
                       {p.name: p for p in (tmp_path / "server").iterdir()})
    data = datasets.load("fashion_mnist")
    assert data.train_images.shape == (12, 28, 28, 1)
    assert sorted(p.name for p in (no_default_locations / "fashion_mnist").iterdir()) == sorted(
        p.name for p in (tmp_path / "server").iterdir())


def test_download_with_a_wrong_sha256_is_rejected_and_not_kept(tmp_path, monkeypatch,
                                                               no_default_locations):
    write_idx_dataset(tmp_path / "server")
    serve_as_file_urls(monkeypatch, "mnist", {p.name: p for p in (tmp_path / "server").iterdir()},
                       sha_override="0" * 64)
    with pytest.raises(datasets.DataFileError, match="SHA-256"):
        datasets.load("mnist")
    assert not list((no_default_locations / "mnist").glob("*.gz"))


def test_cifar_archive_download_is_extracted(tmp_path, monkeypatch, no_default_locations):
    write_cifar_batches(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    serve_as_file_urls(monkeypatch, "cifar10", {"archive": archive})
    data = datasets.load("cifar10")
    assert data.train_images.shape == (20, 32, 32, 3)
    assert not (no_default_locations / "cifar10" / "cifar-10-python.tar.gz").exists()


def test_without_files_or_network_the_error_names_every_option(tmp_path, monkeypatch,
                                                               no_default_locations):
    serve_as_file_urls(monkeypatch, "fashion_mnist",
                       {"x": tmp_path / "missing" / "train-images-idx3-ubyte.gz"},
                       sha_override="0" * 64)
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(datasets.DatasetNotFoundError) as error:
        datasets.load("fashion_mnist")
    message = str(error.value)
    for option in ("--data-dir", datasets.ENV_VAR, str(tmp_path / "env"),
                   str(no_default_locations / "fashion_mnist"), "dataset-fashion-mnist",
                   "missing/train-images-idx3-ubyte.gz"):
        assert option in message
    assert len(message.splitlines()) == 2  # A command line prints it without a traceback.


def test_a_data_dir_without_the_files_is_an_error_not_a_fall_back(tmp_path, monkeypatch,
                                                                   no_default_locations):
    write_idx_dataset(tmp_path / "env" / "mnist")
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    (tmp_path / "flag").mkdir()
    with pytest.raises(datasets.DatasetNotFoundError,
                       match=f"--data-dir {tmp_path / 'flag'} does not hold the mnist files"):
        datasets.load("mnist", str(tmp_path / "flag"))
    assert datasets.load("mnist").train_images.shape == (12, 28, 28, 1)


def test_official_sources_are_pinned():
    for source in datasets.SOURCES.values():
        assert source.urls
        for url, sha256 in source.urls.items():
            assert url.startswith(("https://", "http://")) and len(sha256) == 64
    assert datasets.SOURCES["fashion_mnist"].system_dirs == ("/usr/share/datasets/fashion-mnist",)
