"""``examples.nf_resnet.image_data``: class folders, synthetic images and TFDS behind ``load``.

Every generated image is one solid colour that names it: red and blue encode its id
(``16·(id mod 16) + 8`` and ``16·(id div 16) + 8``), green its label (``60·label + 30``), so
a batch says which images it holds, after any crop or flip, and whether labels match them.
"""

import dataclasses
import logging
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

from examples.common import errors
from examples.nf_resnet import image_data
from examples.nf_resnet.configs import TrainConfig
from examples.nf_resnet.image_folder import ImageFolderError

CLASSES = ("bird", "cat", "dog")  # Sorted; written in another order below.


def make_tree(root: pathlib.Path, split: str, per_class: int, first_id: int = 0) -> int:
    """Writes solid-colour JPEGs of varied shapes; returns the next free image id."""
    image_id = first_id
    for name in ("dog", "bird", "cat"):
        label = CLASSES.index(name)
        folder = root / split / name
        folder.mkdir(parents=True)
        for k in range(per_class):
            colour = (16 * (image_id % 16) + 8, 60 * label + 30, 16 * (image_id // 16) + 8)
            Image.new("RGB", (40 + 6 * k, 48 - 2 * k), colour).save(
                folder / f"{image_id}.jpg", quality=100)
            image_id += 1
    return image_id


def identify(batch) -> tuple[list[int], list[int]]:
    """(image ids, labels) read from the pixels of a batch of solid-colour images."""
    centre = batch["image"][:, 4, 4].astype(float)
    ids = np.round((centre[:, 0] - 8) / 16) + 16 * np.round((centre[:, 2] - 8) / 16)
    return ids.astype(int).tolist(), np.round((centre[:, 1] - 30) / 60).astype(int).tolist()


@pytest.fixture
def tree(tmp_path) -> pathlib.Path:
    """8 training and 2 validation images per class; train ids 0-23, val ids 24-29."""
    next_id = make_tree(tmp_path, "train", 8)
    make_tree(tmp_path, "val", 2, first_id=next_id)
    return tmp_path


def folder_config(root: pathlib.Path, **overrides) -> TrainConfig:
    fields = dict(dataset="image_folder", data_dir=str(root), model="nf_resnet_nano",
                  batch_size=6, eval_batch_size=4, image_size=24, eval_image_size=20)
    return TrainConfig(**{**fields, **overrides})


def test_class_folders_give_labels_by_folder_name_and_images_at_the_configured_sizes(tree):
    data = image_data.load(folder_config(tree))
    assert data.classes == CLASSES and data.num_classes == 3
    assert (data.num_train_examples, data.num_eval_examples) == (24, 6)
    assert (data.image_size, data.eval_image_size) == (24, 20)
    batch = next(data.train_batches(seed=0))
    assert batch["image"].shape == (6, 24, 24, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int32
    ids, labels = identify(batch)
    assert batch["label"].tolist() == labels and all(0 <= i < 24 for i in ids)
    evaluation = list(data.eval_batches())
    assert [b["image"].shape for b in evaluation] == [(4, 20, 20, 3)] * 2
    assert np.concatenate([b["mask"] for b in evaluation]).tolist() == [1] * 6 + [0] * 2
    ids, labels = identify({"image": np.concatenate([b["image"] for b in evaluation])[:6]})
    assert sorted(ids) == list(range(24, 30))
    assert labels == np.concatenate([b["label"] for b in evaluation])[:6].tolist()
    np.testing.assert_allclose(data.mean, [0.485, 0.456, 0.406])
    np.testing.assert_allclose(data.std, [0.229, 0.224, 0.225])


def test_image_sizes_default_to_the_models_row_else_224():
    assert image_data.image_sizes(TrainConfig(model="nfnet_f0")) == (192, 256)
    assert image_data.image_sizes(TrainConfig(model="nfnet_f3")) == (320, 416)
    assert image_data.image_sizes(TrainConfig(model="nf_resnet_50")) == (224, 224)
    assert image_data.image_sizes(TrainConfig(model="nf_resnet_nano")) == (224, 224)
    assert image_data.image_sizes(TrainConfig(model="nf_resnet_nano", image_size=64)) == (64, 64)
    assert image_data.image_sizes(TrainConfig(model="nfnet_f0", image_size=128,
                                              eval_image_size=160)) == (128, 160)


def test_a_restored_stream_continues_exactly(tree):
    data = image_data.load(folder_config(tree))
    batches = data.train_batches(seed=3)
    next(batches)
    state = batches.get_state()
    expected = [identify(next(batches))[0] for _ in range(3)]
    resumed = data.train_batches(seed=3, data_state=state)
    assert [identify(next(resumed))[0] for _ in range(3)] == expected
    assert identify(next(data.train_batches(seed=4)))[0] != identify(
        next(data.train_batches(seed=3)))[0]


def test_two_processes_read_disjoint_shards_that_cover_the_tree(tree):
    seen = []
    for process in (0, 1):
        data = image_data.load(folder_config(tree), process_index=process, process_count=2)
        batches = data.train_batches(seed=0)
        epoch = [i for _ in range(4) for i in identify(next(batches))[0]]  # 12 = one shard
        assert next(batches)["image"].shape[0] == 3  # half of the global batch of 6
        seen.append(set(epoch))
        assert len(epoch) == 12 == len(seen[-1])
        masks = [b["mask"] for b in data.eval_batches()]
        assert [len(m) for m in masks] == [2, 2]
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(24))


def test_two_processes_evaluate_every_image_once(tree):
    ids = []
    for process in (0, 1):
        data = image_data.load(folder_config(tree), process_index=process, process_count=2)
        for batch in data.eval_batches():
            real = batch["mask"] == 1
            ids += identify({"image": batch["image"][real]})[0]
    assert sorted(ids) == list(range(24, 30))


def test_example_counts_keep_an_evenly_spaced_subset_of_every_class(tree):
    data = image_data.load(folder_config(tree, train_examples=12, test_examples=3))
    assert (data.num_train_examples, data.num_eval_examples) == (12, 3)
    batches = data.train_batches(seed=0)
    labels = [label for _ in range(2) for label in identify(next(batches))[1]]
    assert sorted(labels) == [0] * 4 + [1] * 4 + [2] * 4
    evaluated = [b["label"][b["mask"] == 1] for b in data.eval_batches()]
    assert sorted(np.concatenate(evaluated).tolist()) == [0, 1, 2]


def corrupt(tree: pathlib.Path) -> pathlib.Path:
    path = tree / "train" / "cat" / "broken.jpg"
    path.write_bytes(b"\xff\xd8 not really a jpeg")
    return path


def test_a_corrupt_file_is_skipped_with_its_path_in_a_warning(tree, caplog):
    broken = corrupt(tree)
    data = image_data.load(folder_config(tree))
    assert data.num_train_examples == 25
    batches = data.train_batches(seed=0)
    with caplog.at_level(logging.WARNING):
        ids = [i for _ in range(4) for i in identify(next(batches))[0]]
    assert sorted(ids) == list(range(24))  # one epoch: every good image, nothing else
    assert str(broken) in caplog.text and "skipped" in caplog.text


def test_a_corrupt_file_can_be_fatal_naming_its_path(tree):
    broken = corrupt(tree)
    data = image_data.load(folder_config(tree, on_corrupt="raise"))
    batches = data.train_batches(seed=0)
    with pytest.raises(ImageFolderError, match=str(broken)):
        for _ in range(5):
            next(batches)


@pytest.mark.slow  # starts worker processes
def test_worker_processes_decode_an_epoch_of_every_image_once(tree):
    def epoch(workers):  # 4 batches of 6: the 24 training images
        batches = image_data.load(folder_config(tree, data_workers=workers)).train_batches(0)
        return [next(batches) for _ in range(4)]

    in_workers = epoch(2)
    assert all(b["image"].shape == (6, 24, 24, 3) for b in in_workers)
    ids, labels = zip(*(identify(b) for b in in_workers), strict=True)
    assert sorted(i for batch in ids for i in batch) == list(range(24))
    assert [b["label"].tolist() for b in in_workers] == list(labels)
    # Each worker reads its own slice of the stream: the order depends on the worker count.
    assert list(ids) != [identify(b)[0] for b in epoch(0)]


def test_batches_larger_than_the_data_or_not_dividing_are_user_errors(tree):
    with pytest.raises(ImageFolderError, match=r"24 training images.*--batch-size"):
        image_data.load(folder_config(tree, batch_size=32), process_count=2)
    with pytest.raises(errors.UserError, match="--eval-batch-size 5 does not divide"):
        image_data.load(folder_config(tree, eval_batch_size=5), process_count=2)
    with pytest.raises(ImageFolderError, match="no such directory"):
        image_data.load(folder_config(tree / "missing"))


def test_tfds_without_tensorflow_datasets_is_a_user_error_saying_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(errors.UserError, match=r"--dataset tfds: .*pip install tensorflow-d"):
        image_data.load(TrainConfig(dataset="tfds"))


def test_in_memory_datasets_are_not_loaded_here():
    assert not image_data.is_image_dataset("fashion_mnist")
    with pytest.raises(ValueError, match="not an image dataset"):
        image_data.load(TrainConfig(dataset="fashion_mnist"))


def synthetic_config(**overrides) -> TrainConfig:
    fields = dict(dataset="synthetic", model="nfnet_f0", batch_size=4, eval_batch_size=4,
                  test_examples=10, synthetic_classes=7, seed=1)
    return TrainConfig(**{**fields, **overrides})


def test_synthetic_images_come_at_the_models_size_with_imagenets_counts():
    data = image_data.load(synthetic_config())
    assert (data.image_size, data.eval_image_size, data.num_classes) == (192, 256, 7)
    assert (data.num_train_examples, data.num_eval_examples) == (1_281_167, 10)
    batch = next(data.train_batches(seed=1))
    assert batch["image"].shape == (4, 192, 192, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int32 and 0 <= batch["label"].min()
    assert batch["label"].max() < 7 and batch["image"].std() > 50  # random pixels
    evaluation = list(data.eval_batches())
    assert [b["image"].shape for b in evaluation] == [(4, 256, 256, 3)] * 3
    assert sum(b["mask"].sum() for b in evaluation) == 10


def test_synthetic_batches_are_reproducible_and_each_process_has_its_share():
    data = image_data.load(synthetic_config())
    first, again = next(data.train_batches(seed=1)), next(data.train_batches(seed=1))
    np.testing.assert_array_equal(first["image"], again["image"])
    assert not np.array_equal(first["image"], next(data.train_batches(seed=2))["image"])
    masks, shares = [], []
    for process in (0, 1):
        share = image_data.load(synthetic_config(), process_index=process, process_count=2)
        shares.append(next(share.train_batches(seed=1))["image"])
        masks += [b["mask"] for b in share.eval_batches()]
    assert shares[0].shape[0] == 2 and not np.array_equal(*shares)  # each its own images
    assert sum(m.sum() for m in masks) == 10


def test_synthetic_train_examples_set_the_epoch_length():
    data = image_data.load(dataclasses.replace(synthetic_config(), train_examples=4096))
    assert data.num_train_examples == 4096
