"""RandAugment's operations against PIL's and against their definitions; layers and levels."""

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from examples.nf_resnet import randaugment as ra


def photo(seed=0, height=24, width=32):
    """Smooth random colours: a histogram with gaps and a range short of 0–255."""
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 220, (height // 4, width // 4, 3), np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR))


@pytest.mark.parametrize(("level", "expected"), [("405", (4, 5)), ("410", (4, 10)),
                                                 ("415", (4, 15)), ("10", (2, 10))])
def test_deepmind_levels(level, expected):
    assert ra.parse_level(level) == expected


def test_bad_level_is_named():
    with pytest.raises(ValueError, match="'4x5'"):
        ra.parse_level("4x5")


@pytest.mark.parametrize("magnitude", [5, 10, 15])
def test_every_operation_keeps_shape_and_dtype(magnitude):
    image = photo()
    for name, op in ra.operations(magnitude).items():
        out = op(image, np.random.default_rng(0))
        assert out.shape == image.shape and out.dtype == np.uint8, name


def test_equalize_and_autocontrast_match_pil():
    image = photo(1)
    np.testing.assert_array_equal(ra.equalize(image),
                                  np.asarray(ImageOps.equalize(Image.fromarray(image))))
    np.testing.assert_allclose(ra.autocontrast(image),
                               np.asarray(ImageOps.autocontrast(Image.fromarray(image))),
                               atol=1)


@pytest.mark.parametrize("factor", [0.1, 1.9, 2.8])
def test_enhancements_match_pil(factor):
    image = photo(2)
    pil = Image.fromarray(image)
    ops = ra.operations((factor - 0.1) / 1.8 * ra.MAX_LEVEL)
    for name, enhancer in [("Color", ImageEnhance.Color), ("Brightness", ImageEnhance.Brightness),
                           ("Sharpness", ImageEnhance.Sharpness)]:
        expected = np.asarray(enhancer(pil).enhance(factor)).astype(int)
        out = ops[name](image, None).astype(int)
        assert np.abs(out - expected).max() <= 2, name


def test_pixel_operations_by_their_definitions():
    image = photo(3).astype(np.int64)
    ops = ra.operations(10)  # Posterize 4 bits, Solarize at 256 (none), SolarizeAdd 110.
    np.testing.assert_array_equal(ops["Invert"](image.astype(np.uint8), None), 255 - image)
    np.testing.assert_array_equal(ops["Posterize"](image.astype(np.uint8), None), image & 0xF0)
    np.testing.assert_array_equal(ops["Solarize"](image.astype(np.uint8), None), image)
    np.testing.assert_array_equal(ops["SolarizeAdd"](image.astype(np.uint8), None),
                                  np.where(image < 128, np.minimum(image + 110, 255), image))
    # Magnitude 5 keeps int(0.5 · 4) = 2 bits (DeepMind's map, not PIL's usual 4 to 8).
    np.testing.assert_array_equal(ra.operations(5)["Posterize"](image.astype(np.uint8), None),
                                  image & 0xC0)
    np.testing.assert_array_equal(ra.operations(5)["Solarize"](image.astype(np.uint8), None),
                                  np.where(image < 128, image, 255 - image))
    np.testing.assert_array_equal(ops["Brightness"](image.astype(np.uint8), None),
                                  np.minimum(np.floor(1.9 * image), 255))


def test_magnitude_5_enhancements_are_the_identity_as_in_deepmind_code():
    image = photo(4)
    ops = ra.operations(5)  # factor 5/10 · 1.8 + 0.1 = 1.0
    for name in ("Color", "Contrast", "Brightness", "Sharpness"):
        np.testing.assert_array_equal(ops[name](image, None), image, err_msg=name)


def test_translate_shifts_by_level_times_100_pixels_and_fills_grey():
    image = photo(5, 24, 40)
    out = ra.operations(1)["TranslateX"](image, np.random.default_rng(0))  # ±10 pixels
    left, right = out[:, :30], out[:, 10:]
    if np.array_equal(left, image[:, 10:]):
        np.testing.assert_array_equal(out[:, 30:], 128)
    else:
        np.testing.assert_array_equal(right, image[:, :30])
        np.testing.assert_array_equal(out[:, :10], 128)


def test_cutout_greys_a_square_of_side_twice_level_times_40():
    image = np.zeros((64, 64, 3), np.uint8)
    outs = [ra.operations(2.5)["Cutout"](image, np.random.default_rng(s)) for s in range(50)]
    grey = [(o[..., 0] == 128) for o in outs]
    for g in grey:
        rows, columns = g.any(1), g.any(0)
        np.testing.assert_array_equal(g, np.outer(rows, columns))
        assert rows.sum() <= 20 and columns.sum() <= 20  # pad = int(0.25 · 40) = 10
    assert max(g.sum() for g in grey) == 400


def test_randaugment_is_deterministic_for_a_seed():
    image = photo(6)
    a = ra.randaugment(image, np.random.default_rng(1), 4, 10)
    np.testing.assert_array_equal(a, ra.randaugment(image, np.random.default_rng(1), 4, 10))
    others = [ra.randaugment(image, np.random.default_rng(s), 4, 10) for s in range(2, 6)]
    assert any(not np.array_equal(a, o) for o in others)
    assert a.shape == image.shape and a.dtype == np.uint8
