"""The NF-ResNet example trains on ImageNet-format data: class folders, synthetic images,
MixUp/CutMix targets, the EMA of the weights and top-5 evaluation.

The trees are generated here (JPEGs of random pixels); the expected EMA and top-5 values are
written from their definitions in float64 NumPy.
"""

import dataclasses
import functools
import json
import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

from examples.common import input_pipeline
from examples.nf_resnet import configs, main, train

CLASSES = ("cat", "dog", "fox", "owl")


def make_tree(root: pathlib.Path, train_per_class: int = 36, val_per_class: int = 6) -> None:
    """``root/{train,val}/<class>/*.jpg``: 4 classes of 72 × 80 random-pixel JPEGs."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(count):
                pixels = rng.integers(0, 64, (72, 80, 3)) + 48 * label
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{k}.jpg")


@pytest.mark.slow
def test_the_smoke_preset_trains_on_a_generated_class_folder_tree(tmp_path):
    make_tree(tmp_path / "tree")
    (tmp_path / "tree" / "train" / "cat" / "broken.jpg").write_bytes(b"not an image")
    argv = ["--preset", "smoke", "--dataset", "image_folder", "--data-dir",
            str(tmp_path / "tree"), "--workdir", str(tmp_path / "run")]
    assert main.main(argv) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # 144 images (the broken one skipped) in batches of 128: one step per epoch, 3 epochs.
    assert summary["steps"] == 3 and not summary["diverged"]
    assert summary["config"]["dataset"] == "image_folder"
    evals = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()
             if "test_accuracy" in line]
    assert len(evals) == 3
    # Four classes: the top 5 holds every label.
    assert all(e["test_top5_accuracy"] == 1.0 for e in evals)
    assert all(0.0 <= e["test_accuracy"] <= 1.0 for e in evals)


def test_synthetic_images_train_at_the_models_size(tmp_path):
    argv = ["--preset", "smoke", "--dataset", "synthetic", "--train-examples", "256",
            "--test-examples", "128", "--steps", "2", "--image-size", "32",
            "--eval-image-size", "32", "--synthetic-classes", "10",
            "--workdir", str(tmp_path / "run")]
    assert main.main(argv) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["config"]["dataset"] == "synthetic"
    assert summary["final_test_accuracy"] is not None


def tiny_state(**overrides):
    config = dataclasses.replace(configs.get_config("smoke"), crop_padding=0, flip=False,
                                 clipping=0.0, **overrides)
    return train.create_train_state(
        config, num_classes=10, in_features=3, mean=np.full(3, 0.5, np.float32),
        std=np.full(3, 0.25, np.float32), total_steps=10, steps_per_epoch=5)


def batch(n: int = 8, side: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8),
            "label": rng.integers(0, 10, n).astype(np.int32)}


def test_the_ema_follows_deepminds_warm_up_and_evaluation_uses_it():
    state, static = tiny_state(ema_decay=0.999)
    step = jax.jit(functools.partial(train.train_step, static=static))
    ema = {k: np.asarray(v, np.float64) for k, v in
           jax.tree_util.tree_flatten_with_path(state.ema_params)[0]}
    for t in range(3):  # decay_t = min(0.999, (1 + t) / (10 + t)): 0.1, 0.1818…, 0.25
        state, _ = step(state, batch(seed=t))
        decay = min(0.999, (1 + t) / (10 + t))
        params = dict(jax.tree_util.tree_flatten_with_path(state.params)[0])
        ema = {k: decay * ema[k] + (1 - decay) * np.asarray(params[k], np.float64)
               for k in ema}
    for path, value in jax.tree_util.tree_flatten_with_path(state.ema_params)[0]:
        np.testing.assert_allclose(value, ema[path], rtol=1e-5, atol=1e-7)
    # Evaluation scores the EMA: swapping the raw weights for it changes nothing.
    data = batch(seed=9) | {"mask": np.ones(8, np.float32)}
    evaluate = jax.jit(functools.partial(train.eval_step, static=static))
    swapped = state._replace(params=state.ema_params)
    np.testing.assert_allclose(evaluate(state, data)["loss"], evaluate(swapped, data)["loss"])
    without = dataclasses.replace(static, config=dataclasses.replace(static.config,
                                                                     ema_decay=0.0))
    assert not np.allclose(evaluate(state, data)["loss"],
                           jax.jit(functools.partial(train.eval_step, static=without))(
                               state, data)["loss"])


def test_without_ema_the_state_keeps_none():
    state, _ = tiny_state()
    assert jax.tree.leaves(state.ema_params) == []


def test_top5_counts_a_label_among_the_five_largest_logits():
    state, static = tiny_state()
    data = batch(n=16, seed=3) | {"mask": np.float32([1] * 12 + [0] * 4)}
    got = jax.jit(functools.partial(train.eval_step, static=static))(state, data)
    model = static.model(state.params, state.batch_stats)
    images = input_pipeline.normalize(data["image"], static.mean, static.std)
    logits = np.asarray(model(images), np.float64)
    top5 = np.argsort(-logits, axis=-1)[:, :5]
    hits = (top5 == data["label"][:, None]).any(axis=-1)
    assert float(got["correct_top5"]) == float(np.sum(hits * data["mask"]))
    assert float(got["count"]) == 12.0


@pytest.mark.parametrize("method", ["mixup", "cutmix", "mixup_cutmix"])
def test_mixed_batches_have_soft_targets_that_sum_to_one(method):
    _, static = tiny_state(mixing=method)
    images, targets = jax.jit(functools.partial(train.prepare_batch, static=static))(
        batch(), jax.random.key(0))
    assert images.shape == (8, 16, 16, 3) and targets.shape == (8, 10)
    np.testing.assert_allclose(np.sum(targets, axis=-1), 1.0, rtol=1e-6)
    assert np.any((np.asarray(targets) > 0) & (np.asarray(targets) < 1))  # Really mixed.
    _, plain = tiny_state()
    _, one_hot = train.prepare_batch(batch(), jax.random.key(0), plain)
    assert set(np.unique(np.asarray(one_hot))) == {0.0, 1.0}
