"""Class-folder datasets: listing, labels, batches, sharding, resumption and corrupt files.

Every generated image is one solid colour that names it: red = 20·(its index) + 10, green =
60·(its label) + 30, so a batch says which images it holds and whether labels match them.
"""

import json
import logging
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from examples.nf_resnet import image_folder
from examples.nf_resnet.image_folder import ImageFolder, ImageFolderError

CLASSES = ("bird", "cat", "dog")  # Sorted; written to disk in another order below.


def make_tree(root: pathlib.Path, split: str = "train", per_class: int = 4,
              classes=("dog", "bird", "cat")) -> dict[int, int]:
    """Writes solid-colour PNG/JPEG images; returns {image id: label}."""
    truth, index = {}, 0
    for name in classes:
        label = sorted(classes).index(name)
        folder = root / split / name
        folder.mkdir(parents=True)
        for k in range(per_class):
            colour = (20 * index + 10, 60 * label + 30, 128)
            suffix = (".png", ".JPG", ".jpeg", ".PNG")[k % 4]
            Image.new("RGB", (48 + 8 * k, 40), colour).save(
                folder / f"{k}{suffix}", format="PNG" if "png" in suffix.lower() else "JPEG",
                quality=100)
            truth[index] = label
            index += 1
    return truth


def identify(batch) -> tuple[list[int], list[int]]:
    """(image ids, labels read from the pixels) of a batch of solid-colour images."""
    centre = batch["image"][:, 8, 8].astype(float)
    return (np.round((centre[:, 0] - 10) / 20).astype(int).tolist(),
            np.round((centre[:, 1] - 30) / 60).astype(int).tolist())


def take(iterator, k):
    return [next(iterator) for _ in range(k)]


def test_scan_sorts_classes_and_labels_files_by_their_folder(tmp_path):
    make_tree(tmp_path)
    folder = ImageFolder.scan(tmp_path, "train")
    assert folder.classes == CLASSES and folder.num_classes == 3 and len(folder) == 12
    for path, label in (folder[i] for i in range(len(folder))):
        assert pathlib.Path(path).parent.name == CLASSES[label]
    assert {pathlib.Path(p).suffix for p in folder.paths} == {".png", ".JPG", ".jpeg", ".PNG"}


def test_scan_reports_files_it_ignores(tmp_path, caplog):
    make_tree(tmp_path)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("x")
    (tmp_path / "train" / "README").write_text("x")
    with caplog.at_level(logging.WARNING):
        folder = ImageFolder.scan(tmp_path, "train")
    assert len(folder) == 12
    assert "notes.txt" in caplog.text and "README" in caplog.text


def test_validation_split_keeps_the_training_labels(tmp_path):
    make_tree(tmp_path)
    make_tree(tmp_path, "val", per_class=1, classes=("dog",))
    train = ImageFolder.scan(tmp_path, "train")
    val = ImageFolder.scan(tmp_path, "val", classes=train.classes)
    assert val.classes == CLASSES and val.labels.tolist() == [2]
    with pytest.raises(ImageFolderError, match="not among the 1 given classes"):
        ImageFolder.scan(tmp_path, "train", classes=("dog",))
    train, val = image_folder.train_and_eval_folders(tmp_path)
    assert train.classes == val.classes == CLASSES and len(val) == 1
    with pytest.raises(ImageFolderError, match="test: no such directory"):
        image_folder.train_and_eval_folders(tmp_path, eval_split="test")


@pytest.mark.parametrize(("prepare", "message"), [
    (lambda root: None, "train: no such directory"),
    (lambda root: (root / "train").mkdir(), "train: no class folders"),
    (lambda root: (root / "train" / "cat").mkdir(parents=True), "cat: no .jpg/.jpeg/.png"),
])
def test_empty_or_malformed_trees_are_named(tmp_path, prepare, message):
    prepare(tmp_path)
    with pytest.raises(ImageFolderError, match=message):
        ImageFolder.scan(tmp_path, "train")


def test_train_batches_have_the_size_dtype_and_labels_of_their_images(tmp_path):
    truth = make_tree(tmp_path)
    loader = image_folder.train_loader(ImageFolder.scan(tmp_path, "train"), global_batch_size=4,
                                       image_size=16, seed=0, read_threads=1)
    for batch in take(iter(loader), 6):
        assert batch["image"].shape == (4, 16, 16, 3) and batch["image"].dtype == np.uint8
        assert batch["label"].dtype == np.int32
        ids, pixel_labels = identify(batch)
        assert batch["label"].tolist() == pixel_labels == [truth[i] for i in ids]


def epoch_ids(loader, batches):
    return [i for batch in take(iter(loader), batches) for i in identify(batch)[0]]


def test_each_epoch_is_a_fresh_permutation_and_seeds_are_reproducible(tmp_path):
    make_tree(tmp_path)
    folder = ImageFolder.scan(tmp_path, "train")
    make = lambda seed: image_folder.train_loader(  # noqa: E731
        folder, global_batch_size=4, image_size=16, seed=seed, read_threads=1)
    ids = epoch_ids(make(0), 6)
    assert sorted(ids[:12]) == sorted(ids[12:]) == list(range(12))
    assert ids[:12] != ids[12:]
    first, again = take(iter(make(0)), 2), take(iter(make(0)), 2)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    assert epoch_ids(make(1), 3) != ids[:12]


def test_crops_differ_between_epochs(tmp_path):
    folder_root = tmp_path
    (folder_root / "train" / "a").mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    Image.fromarray(noise).save(folder_root / "train" / "a" / "x.png")
    loader = image_folder.train_loader(ImageFolder.scan(folder_root, "train"),
                                       global_batch_size=1, image_size=16, seed=0)
    first, second = take(iter(loader), 2)
    assert not np.array_equal(first["image"], second["image"])


def test_restored_iterator_continues_exactly(tmp_path):
    make_tree(tmp_path)
    loader = image_folder.train_loader(ImageFolder.scan(tmp_path, "train"), global_batch_size=4,
                                       image_size=16, seed=2, read_threads=1)
    reference = take(iter(loader), 8)
    iterator = iter(loader)
    take(iterator, 5)
    resumed = iter(loader)
    resumed.set_state(iterator.get_state())
    for a, b in zip(take(resumed, 3), reference[5:], strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])


def test_two_processes_read_disjoint_shards_that_cover_the_set(tmp_path):
    make_tree(tmp_path)
    folder = ImageFolder.scan(tmp_path, "train")
    shards = [
        epoch_ids(image_folder.train_loader(folder, global_batch_size=4, image_size=16, seed=0,
                                            process_index=p, process_count=2,
                                            read_threads=1), 3)
        for p in range(2)
    ]
    assert all(len(s) == 6 == len(set(s)) for s in shards)
    assert set(shards[0]).isdisjoint(shards[1])
    assert set(shards[0]) | set(shards[1]) == set(range(12))


def test_randaugment_runs_in_the_loader_and_changes_the_images(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 256, (48, 48, 3), np.uint8)
    for k in range(4):
        Image.fromarray(noise).save(tmp_path / "train" / "a" / f"{k}.png")
    folder = ImageFolder.scan(tmp_path, "train")
    make = lambda level: next(iter(image_folder.train_loader(  # noqa: E731
        folder, global_batch_size=4, image_size=16, seed=0, randaugment_level=level)))
    plain, augmented = make(None), make("410")
    assert augmented["image"].shape == (4, 16, 16, 3) and augmented["image"].dtype == np.uint8
    assert not np.array_equal(plain["image"], augmented["image"])


def test_batch_must_divide_and_fit(tmp_path):
    make_tree(tmp_path)
    folder = ImageFolder.scan(tmp_path, "train")
    with pytest.raises(ValueError, match="divide by 3 processes"):
        image_folder.train_loader(folder, global_batch_size=4, image_size=8, seed=0,
                                  process_count=3)
    with pytest.raises(ValueError, match="fewer than the batch of 16"):
        image_folder.train_loader(folder, global_batch_size=16, image_size=8, seed=0)
    with pytest.raises(ValueError, match="method 'centre'"):
        image_folder.eval_loader(folder, global_batch_size=4, image_size=8, method="centre")
    with pytest.raises(ValueError, match="on_corrupt='ignore'"):
        image_folder.train_loader(folder, global_batch_size=4, image_size=8, seed=0,
                                  on_corrupt="ignore")


def test_evaluation_covers_every_image_once_over_two_processes(tmp_path):
    truth = make_tree(tmp_path, "val", per_class=3)  # 9 images, global batch 4: 3 batches.
    folder = ImageFolder.scan(tmp_path, "val")
    seen, batches = [], []
    for p in range(2):
        loader = image_folder.eval_loader(folder, global_batch_size=4, image_size=16,
                                          process_index=p, process_count=2, read_threads=1)
        batches.append(list(loader))
        for batch in batches[-1]:
            assert batch["image"].shape == (2, 16, 16, 3)
            real = batch["mask"] == 1
            ids, pixel_labels = identify({"image": batch["image"][real]})
            assert batch["label"][real].tolist() == pixel_labels == [truth[i] for i in ids]
            np.testing.assert_array_equal(batch["image"][~real], 0)
            seen += ids
    assert len(batches[0]) == len(batches[1]) == 3
    assert sorted(seen) == list(range(9))
    assert sum(b["mask"].sum() for bs in batches for b in bs) == 9


def test_eval_positions_by_hand():
    # 5 records, global batch 4 over 2 processes: batches [0 1 | 2 3], [4 5 | 6 7].
    np.testing.assert_array_equal(image_folder.eval_positions(5, 4, 0, 2), [0, 1, 4, 5])
    np.testing.assert_array_equal(image_folder.eval_positions(5, 4, 1, 2), [2, 3, 6, 7])


def add_corrupt_files(root: pathlib.Path) -> list[pathlib.Path]:
    truncated = root / "train" / "cat" / "truncated.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    Image.fromarray(noise).save(truncated, format="JPEG")
    truncated.write_bytes(truncated.read_bytes()[:2000])
    text = root / "train" / "dog" / "text.jpg"
    text.write_text("this is not an image")
    return [truncated, text]


def test_corrupt_files_are_skipped_with_their_paths_in_a_warning(tmp_path, caplog):
    make_tree(tmp_path)
    bad = add_corrupt_files(tmp_path)
    folder = ImageFolder.scan(tmp_path, "train")
    assert len(folder) == 14
    loader = image_folder.train_loader(folder, global_batch_size=4, image_size=16, seed=0,
                                       read_threads=1)
    with caplog.at_level(logging.WARNING):
        ids = epoch_ids(loader, 6)  # 14 records, 12 good: one epoch is 3 batches.
    assert sorted(ids[:12]) == list(range(12))
    for path in bad:
        assert f"{path}: cannot be read as an image" in caplog.text


def test_corrupt_files_can_be_fatal(tmp_path):
    make_tree(tmp_path)
    add_corrupt_files(tmp_path)
    folder = ImageFolder.scan(tmp_path, "train")
    loader = image_folder.train_loader(folder, global_batch_size=4, image_size=16, seed=0,
                                       read_threads=1, on_corrupt="raise")
    with pytest.raises(ImageFolderError, match=r"(truncated|text)\.jpg: cannot be read"):
        take(iter(loader), 6)


def test_a_tree_of_corrupt_files_raises_instead_of_searching_forever(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    for k in range(4):
        (tmp_path / "train" / "a" / f"{k}.jpg").write_text("not an image")
    loader = image_folder.train_loader(ImageFolder.scan(tmp_path, "train"),
                                       global_batch_size=2, image_size=8, seed=0)
    logging.disable(logging.WARNING)  # 1000 warnings, one per attempt.
    try:
        with pytest.raises(ValueError, match=r"skipped 100\.00 %"):
            next(iter(loader))
    finally:
        logging.disable(logging.NOTSET)


def test_corrupt_evaluation_images_are_masked_out(tmp_path, caplog):
    make_tree(tmp_path, per_class=1)
    bad = add_corrupt_files(tmp_path)
    loader = image_folder.eval_loader(ImageFolder.scan(tmp_path, "train"), global_batch_size=8,
                                      image_size=16, read_threads=1)
    with caplog.at_level(logging.WARNING):
        (batch,) = list(loader)
    assert batch["mask"].tolist() == [1, 1, 0, 1, 0, 0, 0, 0]  # bird, cat, truncated, dog, text
    assert all(str(path) in caplog.text for path in bad)


WORKER_SCRIPT = """
import json, sys
import numpy as np
from examples.nf_resnet import image_folder
folder = image_folder.ImageFolder.scan(sys.argv[1], "train")
loader = image_folder.train_loader(folder, global_batch_size=4, image_size=16, seed=0,
                                   worker_count=2, on_corrupt=sys.argv[2])
iterator = iter(loader)
batches = [next(iterator) for _ in range(6)]
state = iterator.get_state()
batches += [next(iterator) for _ in range(3)]
iterator.close()
resumed = iter(loader)
resumed.set_state(state)
again = [next(resumed) for _ in range(3)]
resumed.close()
same = all(np.array_equal(a["image"], b["image"]) for a, b in zip(again, batches[6:]))
print(json.dumps({"batches": len(batches), "resumed_exactly": same}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("on_corrupt", ["skip", "raise"])
def test_worker_processes_skip_or_raise_never_hang_and_resume(tmp_path, on_corrupt):
    make_tree(tmp_path)
    bad = add_corrupt_files(tmp_path)
    result = subprocess.run([sys.executable, "-c", WORKER_SCRIPT, str(tmp_path), on_corrupt],
                            capture_output=True, text=True, timeout=240,
                            cwd=pathlib.Path(__file__).parents[2])
    if on_corrupt == "skip":
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"batches": 9, "resumed_exactly": True}
        assert all(str(path) in result.stderr for path in bad)
    else:
        assert result.returncode != 0
        assert "cannot be read as an image" in result.stderr
        assert any(str(path) in result.stderr for path in bad)
