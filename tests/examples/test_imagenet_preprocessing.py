"""DeepMind's ImageNet crops on the host: windows by hand, decoding, determinism."""

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from examples.nf_resnet import imagenet_preprocessing as pre
from examples.nf_resnet.imagenet_preprocessing import Box


def encode(pixels: np.ndarray, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format)
    return buffer.getvalue()


def coordinates(height: int, width: int) -> np.ndarray:
    """An image whose red channel is the row and green channel the column of each pixel."""
    rows, columns = np.mgrid[:height, :width]
    return np.stack([rows, columns, np.full_like(rows, 7)], -1).astype(np.uint8)


def test_normalisation_constants_are_imagenet_rgb():
    assert pre.IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert pre.IMAGENET_STD == (0.229, 0.224, 0.225)


@pytest.mark.parametrize(("height", "width", "size", "expected"), [
    # scale = min(60, 100) / (28 + 32) = 1: a 28-pixel square, margins 32 and 72 halved.
    (60, 100, 28, Box(16, 36, 28, 28)),
    # scale = 2: side 56; offsets (120 - 56 + 1) // 2 = 32 and (200 - 56 + 1) // 2 = 72.
    (120, 200, 28, Box(32, 72, 56, 56)),
    # A typical ImageNet photo: scale = 375 / 256, side int(328.125) = 328.
    (375, 500, 224, Box(24, 86, 328, 328)),
    # Portrait: scale = 300 / 256, side int(262.5) = 262; (400 - 262 + 1) // 2 = 69.
    (400, 300, 224, Box(69, 19, 262, 262)),
])
def test_center_crop_box_by_hand(height, width, size, expected):
    assert pre.center_crop_box(height, width, size) == expected


def test_crop_resize_is_exactly_the_centred_window():
    image = coordinates(60, 100)
    out = pre.eval_image(pre.decode(encode(image)), 28, "crop_resize")
    np.testing.assert_array_equal(out, image[16:44, 36:64])


def test_resize_crop_takes_the_centre_of_the_image_resized_to_size_plus_32():
    image = coordinates(60, 60)  # Already 28 + 32 on each side: the resize is the identity.
    out = pre.eval_image(pre.decode(encode(image)), 28, "resize_crop")
    np.testing.assert_array_equal(out, image[16:44, 16:44])


def test_resize_crop_ignores_the_aspect_ratio():
    image = np.zeros((50, 200, 3), np.uint8)
    image[:, :100] = 255  # Left half white: after squashing, the left half of the square.
    out = pre.eval_image(pre.decode(encode(image)), 28, "resize_crop")
    assert out.shape == (28, 28, 3)
    np.testing.assert_array_equal(out[:, :10], 255)
    np.testing.assert_array_equal(out[:, -10:], 0)


def test_unknown_eval_method_is_named():
    with pytest.raises(ValueError, match="'center'"):
        pre.eval_image(pre.decode(encode(coordinates(8, 8))), 4, "center")


@settings(max_examples=200, deadline=None)
@given(height=st.integers(1, 600), width=st.integers(1, 600), seed=st.integers(0, 2**32 - 1))
def test_random_crop_box_satisfies_deepmind_constraints_or_falls_back(height, width, seed):
    box = pre.random_crop_box(np.random.default_rng(seed), height, width, 224)
    assert 0 <= box.top and box.top + box.height <= height
    assert 0 <= box.left and box.left + box.width <= width
    if box == pre.center_crop_box(height, width, 224):
        return
    area = box.height * box.width
    assert 0.1 * height * width <= area < height * width  # min_object_covered; never whole
    # width = round(aspect · height), aspect in [3/4, 4/3].
    assert 3 / 4 * box.height - 0.5 <= box.width <= 4 / 3 * box.height + 0.5


def test_random_crop_areas_and_aspect_ratios_span_their_ranges():
    rng = np.random.default_rng(0)
    boxes = [pre.random_crop_box(rng, 375, 500, 224) for _ in range(2000)]
    area = np.array([b.height * b.width for b in boxes]) / (375 * 500)
    aspect = np.array([b.width / b.height for b in boxes])
    assert area.min() >= 0.1 and area.min() < 0.12 and area.max() > 0.95
    assert aspect.min() < 0.77 and aspect.max() > 1.3
    assert len({(b.top, b.left) for b in boxes}) > 1500  # Offsets vary too.


def test_train_image_shape_dtype_and_determinism():
    data = pre.decode(encode(np.random.default_rng(0).integers(0, 256, (90, 120, 3), np.uint8),
                             "JPEG"))
    out = pre.train_image(data, np.random.default_rng(5), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, pre.train_image(data, np.random.default_rng(5), 32))
    assert not np.array_equal(out, pre.train_image(data, np.random.default_rng(6), 32))


def test_train_image_flips_about_half_of_the_time():
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, :20] = 255  # Left half white; any crop keeps some of both halves or one half.
    data = pre.decode(encode(image))
    left_brighter = [
        (lambda out: out[:, 0].mean() > out[:, -1].mean())(
            pre.train_image(data, np.random.default_rng(seed), 16))
        for seed in range(200)
    ]
    assert 0.3 < np.mean(left_brighter) < 0.7


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_decode_converts_every_mode_to_rgb(mode):
    image = Image.new(mode, (6, 4))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if mode == "CMYK" else "PNG")
    assert np.asarray(pre.decode(buffer.getvalue())).shape == (4, 6, 3)


def test_truncated_jpeg_fails_at_decode():
    data = encode(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8), "JPEG")
    with pytest.raises(OSError, match="truncated"):
        pre.decode(data[: len(data) // 2])
