"""The NF-ResNet example's input pipeline: grain batches, resumption, device augmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from examples.common import input_pipeline

N = 100


def fake_data(n=N):
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 1), np.uint8)
    return images, np.arange(n, dtype=np.int32)  # Label = example index.


def take(iterator, k):
    return [next(iterator)["label"] for _ in range(k)]


def test_batches_are_full_and_every_epoch_is_a_fresh_permutation():
    images, labels = fake_data()
    ds = input_pipeline.train_dataset(images, labels, global_batch_size=16, seed=0)
    steps = input_pipeline.steps_per_epoch(N, 16)
    assert steps == 6
    first, second = (np.concatenate(e) for e in np.split(np.array(take(input_pipeline.iterate(ds),
                                                                           2 * steps)), 2))
    assert len(set(first.tolist())) == 96 and len(set(second.tolist())) == 96
    assert not np.array_equal(first, second)
    batch = next(input_pipeline.iterate(ds))
    np.testing.assert_array_equal(batch["image"][:, 0, 0, 0], batch["label"])


def test_same_seed_same_order_other_seed_other_order():
    images, labels = fake_data()
    make = lambda seed: input_pipeline.iterate(  # noqa: E731
        input_pipeline.train_dataset(images, labels, global_batch_size=10, seed=seed))
    np.testing.assert_array_equal(take(make(3), 4), take(make(3), 4))
    assert not np.array_equal(take(make(3), 4), take(make(4), 4))


def test_iterator_state_resumes_mid_epoch_exactly():
    images, labels = fake_data()
    ds = input_pipeline.train_dataset(images, labels, global_batch_size=8, seed=1)
    reference = take(input_pipeline.iterate(ds), 20)
    iterator = input_pipeline.iterate(ds)
    take(iterator, 7)
    state = iterator.get_state()
    resumed = input_pipeline.iterate(ds, state)
    np.testing.assert_array_equal(take(resumed, 13), reference[7:])


def test_processes_get_disjoint_shards_of_each_global_batch():
    images, labels = fake_data()
    shards = [
        next(input_pipeline.iterate(input_pipeline.train_dataset(
            images, labels, global_batch_size=20, seed=0, process_index=i, process_count=4)))
        for i in range(4)
    ]
    seen = np.concatenate([s["label"] for s in shards])
    assert all(len(s["label"]) == 5 for s in shards)
    assert len(set(seen.tolist())) == 20
    for i, shard in enumerate(shards):
        assert set((shard["label"] % 4).tolist()) == {i}


def test_batch_must_divide_by_processes_and_fit_the_data():
    images, labels = fake_data()
    with pytest.raises(ValueError, match="divide"):
        input_pipeline.train_dataset(images, labels, global_batch_size=10, seed=0,
                                     process_count=3)
    with pytest.raises(ValueError, match="fewer than the batch"):
        input_pipeline.train_dataset(images, labels, global_batch_size=128, seed=0)


def test_eval_batches_cover_the_test_set_once_with_padding_masked():
    images, labels = fake_data(23)
    batches = list(input_pipeline.eval_batches(images, labels, global_batch_size=10))
    assert [b.image.shape[0] for b in batches] == [10, 10, 10]
    mask = np.concatenate([b.mask for b in batches])
    np.testing.assert_array_equal(np.concatenate([b.label for b in batches])[mask == 1], labels)
    assert mask.sum() == 23
    halves = [list(input_pipeline.eval_batches(images, labels, global_batch_size=10,
                                                process_index=i, process_count=2))
              for i in range(2)]
    np.testing.assert_array_equal(
        np.concatenate([halves[0][1].label, halves[1][1].label]), batches[1].label)


def test_normalize_gives_zero_mean_unit_variance_per_channel():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    mean, std = input_pipeline.channel_stats(images)
    x = np.asarray(input_pipeline.normalize(jnp.asarray(images), mean, std))
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1.0, atol=1e-5)


def test_augment_without_crop_or_flip_is_the_identity():
    x = jax.random.normal(jax.random.key(0), (4, 6, 6, 2))
    y = jax.jit(input_pipeline.augment, static_argnums=(2, 3))(jax.random.key(1), x, 0, False)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


def test_augment_flips_some_images_and_crops_are_shifted_windows():
    x = jax.random.normal(jax.random.key(0), (64, 6, 6, 1))
    flipped = np.asarray(input_pipeline.augment(jax.random.key(1), x, 0, True))
    original = np.asarray(x)
    pairs = list(zip(flipped, original, strict=True))
    is_flipped = np.array([np.array_equal(f, o[:, ::-1]) for f, o in pairs])
    is_same = np.array([np.array_equal(f, o) for f, o in pairs])
    assert np.all(is_flipped | is_same) and 10 < is_flipped.sum() < 54
    cropped = np.asarray(input_pipeline.augment(jax.random.key(2), x, 2, False))
    padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
    for c, p in zip(cropped, padded, strict=True):
        windows = [p[i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
        assert any(np.array_equal(c, w) for w in windows)


def test_device_prefetcher_yields_the_batches_and_their_resume_states():
    images, labels = fake_data()
    ds = input_pipeline.train_dataset(images, labels, global_batch_size=10, seed=0)
    sharding = NamedSharding(jax.sharding.Mesh(np.array(jax.devices()), ("data",)), P("data"))
    prefetcher = input_pipeline.DevicePrefetcher(input_pipeline.iterate(ds), sharding)
    try:
        got = [next(prefetcher) for _ in range(3)]
    finally:
        prefetcher.close()
    expected = take(input_pipeline.iterate(ds), 4)
    for (batch, _), labels_ in zip(got, expected, strict=False):
        assert isinstance(batch["label"], jax.Array)
        np.testing.assert_array_equal(np.asarray(batch["label"]), labels_)
    resumed = input_pipeline.iterate(ds, got[1][1])
    np.testing.assert_array_equal(next(resumed)["label"], expected[2])


def test_erase_replaces_exactly_each_images_rectangle():
    images = np.random.default_rng(0).normal(size=(3, 7, 9, 2)).astype(np.float32)
    fill = np.random.default_rng(1).normal(size=images.shape).astype(np.float32)
    boxes = np.array([[1, 2, 3, 4], [0, 0, 7, 9], [5, 6, 0, 3]])  # The last is empty.
    expected = images.copy()
    for i, (top, left, rows, columns) in enumerate(boxes):
        expected[i, top:top + rows, left:left + columns] = fill[i, top:top + rows,
                                                                left:left + columns]
    got = input_pipeline.erase(jnp.asarray(images), jnp.asarray(boxes), jnp.asarray(fill))
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_erase_boxes_fit_the_image_with_the_drawn_area_and_aspect():
    boxes = np.asarray(input_pipeline.erase_boxes(jax.random.key(0), 4000, 28, 20, 0.3))
    top, left, rows, columns = boxes.T
    erased = rows > 0
    assert abs(erased.mean() - 0.3) < 0.03
    assert np.all(top >= 0) and np.all(left >= 0)
    assert np.all(top + rows <= 28) and np.all(left + columns <= 20)
    area = rows[erased] * columns[erased] / (28 * 20)
    # Rounding the sides moves the area by at most about a side's length.
    assert 0.01 < area.min() < 0.03 and 0.35 < area.max() < 0.45
    aspect = rows[erased] / columns[erased]
    assert 0.2 < aspect.min() < 0.45 and 2.2 < aspect.max() < 4.5
    # Positions spread over the image: rectangles touch every border.
    assert top.min() == 0 and left.min() == 0
    assert (top + rows).max() == 28 and (left + columns).max() == 20
    # On a flat image a tall rectangle would not fit: it is cut to the image's height.
    top, left, rows, columns = np.asarray(
        input_pipeline.erase_boxes(jax.random.key(1), 1000, 4, 28, 1.0)).T
    assert rows.max() == 4 and np.all(top + rows <= 4) and np.all(left + columns <= 28)


def test_erasing_keeps_crops_and_flips_and_changes_one_rectangle_per_image():
    x = jax.random.normal(jax.random.key(0), (64, 12, 12, 1))
    plain = np.asarray(input_pipeline.augment(jax.random.key(1), x, 2, True))
    erased = np.asarray(input_pipeline.augment(jax.random.key(1), x, 2, True, 1.0))
    for p, e in zip(plain, erased, strict=True):
        rows, columns = np.nonzero((p != e)[..., 0])
        assert rows.size > 0  # Noise equals no pixel it replaces.
        box = (slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1))
        assert rows.size == (p[box] != e[box]).size  # The changed pixels fill a rectangle.
