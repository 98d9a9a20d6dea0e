"""MixUp and CutMix: images against a float64 NumPy reference, soft targets, determinism."""

import functools

import jax
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.nf_resnet import mixing

N, H, W, C = 8, 12, 16, 3


@functools.partial(jax.jit, static_argnames=("num_classes", "method"))
def mix(rng, images, labels, num_classes, method):
    return mixing.mix(rng, images, labels, num_classes, method)


def batch(seed=0, n=N):
    images = np.random.default_rng(seed).normal(size=(n, H, W, C)).astype(np.float32)
    return images, np.arange(n, dtype=np.int32)  # Distinct labels: a target names its weights.


def own_weights(targets, labels):
    return np.asarray(targets)[np.arange(len(labels)), labels].astype(np.float64)


@pytest.mark.parametrize("method", ["mixup", "cutmix", "mixup_cutmix"])
def test_shapes_target_sums_and_determinism(method):
    images, labels = batch()
    key = jax.random.key(3)
    mixed, targets = mix(key, images, labels, N, method)  # N classes: shares compilations.
    assert mixed.shape == images.shape and mixed.dtype == np.float32
    assert targets.shape == (N, N) and targets.dtype == np.float32
    np.testing.assert_allclose(np.asarray(targets).sum(axis=1), 1.0, atol=1e-6)
    assert (np.asarray(targets) >= 0).all()
    again = mix(key, images, labels, N, method)
    np.testing.assert_array_equal(mixed, again[0])
    np.testing.assert_array_equal(targets, again[1])
    other = mix(jax.random.key(4), images, labels, N, method)
    assert not np.array_equal(mixed, other[0])


def test_mixup_is_the_weighted_sum_with_the_previous_example():
    images, labels = batch()
    mixed, targets = mix(jax.random.key(0), images, labels, N, "mixup")
    weight = own_weights(targets, labels)[:, None, None, None]
    x = images.astype(np.float64)
    expected = weight * x + (1 - weight) * np.roll(x, 1, axis=0)
    np.testing.assert_allclose(mixed, expected, atol=1e-5)
    partner = np.asarray(targets)[np.arange(N), np.roll(labels, 1)]
    np.testing.assert_allclose(partner, 1 - weight.ravel(), atol=1e-6)


def test_mixup_weights_follow_beta_of_alpha_0_2():
    weights = np.asarray(mixing.mixup_weights(jax.random.key(0), 4000))
    assert scipy.stats.kstest(weights, scipy.stats.beta(0.2, 0.2).cdf).pvalue > 0.01


def test_cutmix_pastes_a_rectangle_of_the_previous_example_and_weights_by_area():
    images, labels = batch()
    mixed, targets = mix(jax.random.key(1), images, labels, N, "cutmix")
    mixed, partner = np.asarray(mixed), np.roll(images, 1, axis=0)
    for i in range(N):
        from_partner = (mixed[i] == partner[i]).all(-1)
        from_own = (mixed[i] == images[i]).all(-1)
        assert (from_partner ^ from_own).all()  # Every pixel is one image's, unblended.
        rows, columns = from_partner.any(1), from_partner.any(0)
        np.testing.assert_array_equal(from_partner, np.outer(rows, columns))  # A rectangle.
        for line in (rows, columns):  # ... of contiguous rows and columns.
            if line.any():
                assert np.diff(np.flatnonzero(line)).max(initial=1) == 1
        np.testing.assert_allclose(own_weights(targets, labels)[i], 1 - from_partner.mean(),
                                   atol=1e-6)


def test_cutmix_boxes_by_their_definition():
    # The same draws as cutmix_masks: centre uniform over pixels, U uniform; the box spans
    # rows [cy - r, cy + r) with r = ⌊√(1 - U)·H⌋ // 2 (and columns alike), cut to the image.
    n, height, width = 50, 12, 20
    masks = np.asarray(mixing.cutmix_masks(jax.random.key(7), n, height, width))
    centre_key, area_key = jax.random.split(jax.random.key(7))
    centre = np.floor(np.asarray(jax.random.uniform(centre_key, (n, 2)), np.float64)
                      * [height, width])
    side = np.sqrt(1.0 - np.asarray(jax.random.uniform(area_key, (n,)), np.float64))
    for i in range(n):
        half_rows, half_columns = int(side[i] * height) // 2, int(side[i] * width) // 2
        expected = np.zeros((height, width))
        top, left = int(centre[i, 0]) - half_rows, int(centre[i, 1]) - half_columns
        expected[max(top, 0):max(top + 2 * half_rows, 0),
                 max(left, 0):max(left + 2 * half_columns, 0)] = 1
        np.testing.assert_array_equal(masks[i, ..., 0], expected, err_msg=f"box {i}")


def test_cutmix_box_areas_are_uniform_before_clipping():
    masks = np.asarray(mixing.cutmix_masks(jax.random.key(0), 2000, 64, 64))
    area = masks.mean(axis=(1, 2, 3))
    # Clipping only shrinks boxes: the area is below 1 - U, whose mean is 1/2.
    assert 0.2 < area.mean() < 0.5 and area.max() > 0.8 and area.min() == 0.0


def test_mixup_cutmix_splits_the_batch_in_halves():
    images, labels = batch()
    mixed, _ = mix(jax.random.key(2), images, labels, N, "mixup_cutmix")
    mixed, partner = np.asarray(mixed), np.roll(images, 1, axis=0)
    unblended = (mixed == images) | (mixed == partner)
    assert not unblended[: N // 2].all(axis=(1, 2, 3)).any()  # MixUp blends every pixel.
    assert unblended[N // 2:].all()  # CutMix copies pixels.


def test_unknown_method_is_named():
    images, labels = batch()
    with pytest.raises(ValueError, match="'mixcut'"):
        mixing.mix(jax.random.key(0), images, labels, N, "mixcut")


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (5, 3, 7, 1)])  # Odd batch, 1-pixel images.
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), labels=st.lists(st.integers(0, 2), min_size=5,
                                                        max_size=5))
def test_targets_are_distributions_for_any_key_and_labels(shape, seed, labels):
    labels = np.array(labels[: shape[0]], np.int32)
    _, targets = mix(jax.random.key(seed), np.zeros(shape, np.float32), labels, 3,
                     "mixup_cutmix")
    targets = np.asarray(targets)
    assert (targets >= 0).all()
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)
