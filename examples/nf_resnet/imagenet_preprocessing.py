"""ImageNet preprocessing on the host: Inception-style crops for training, centre crops for test.

What DeepMind's NFNet code does (``nfnets/dataset.py``), written for PIL and NumPy so that
it runs in grain's worker processes:

- training (:func:`train_image`): a random crop covering 8 % to 100 % of the image (at least
  10 % in effect, as the crop must cover 10 % of the whole-image box) with an aspect ratio
  in [3/4, 4/3], 10 attempts, falling back to the centre crop of :func:`center_crop_box`;
  a random left-right flip; a bicubic resize to the train size.
- test (:func:`eval_image`), two methods, as DeepMind's ``eval_preproc``:
  ``"crop_resize"`` (the NF-ResNet default) takes the centre square that leaves 32 pixels
  of border at the test size and resizes it; ``"resize_crop"`` (the NFNet recipe's
  ``resize_crop_32``) resizes the whole image to ``size + 32`` on each side, then takes the
  centre ``size`` square.

Differences from DeepMind's TensorFlow code, by design: images stay uint8 (TF's bicubic
resize returns unclamped floats), PIL's bicubic filter antialiases when it shrinks (TF's
default does not), and a crop's offset may reach the last row and column.
Normalisation by :data:`IMAGENET_MEAN` and :data:`IMAGENET_STD` happens on device.

References:
  Szegedy et al., *Going deeper with convolutions*, CVPR 2015, arXiv:1409.4842 (the crops).
  Brock, De, Smith, Simonyan, *High-Performance Large-Scale Image Recognition Without
  Normalization*, ICML 2021, arXiv:2102.06171.
"""

import io
import math
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image

# ImageNet's per-channel mean and standard deviation in RGB, in [0, 1] units.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# DeepMind's random-crop parameters (``_decode_and_random_crop``).
AREA_RANGE = (0.08, 1.0)
ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
MIN_OBJECT_COVERED = 0.1
MAX_ATTEMPTS = 10
# Pixels of border, at the test size, that the test-time crops leave out.
EVAL_PADDING = 32

EvalMethod = Literal["crop_resize", "resize_crop"]


class Box(NamedTuple):
    """A crop window in pixels."""

    top: int
    left: int
    height: int
    width: int


def decode(data: bytes) -> Image.Image:
    """Decodes JPEG or PNG bytes into a fully loaded RGB image.

    Args:
      data: the file's bytes.

    Returns:
      An RGB ``PIL.Image`` (grayscale, palette, RGBA and CMYK files are converted).

    Raises:
      OSError or ValueError: PIL's error for bytes that are not a complete image (a
        truncated JPEG fails here rather than later, as the pixels are loaded now).
    """
    image = Image.open(io.BytesIO(data))
    image.load()
    return image if image.mode == "RGB" else image.convert("RGB")


def center_crop_box(height: int, width: int, image_size: int,
                    padding: int = EVAL_PADDING) -> Box:
    """The centre crop that, resized to ``image_size``, leaves ``padding`` pixels of border.

    Args:
      height: image height.
      width: image width.
      image_size: the output's side.
      padding: border at the output size; the crop is the largest square of side
        ``s·image_size`` with ``s = min(height, width) / (image_size + padding)``.

    Returns:
      The square window, its offsets rounded up when the margin is odd (as DeepMind's).
    """
    scale = min(height / (image_size + padding), width / (image_size + padding))
    side = max(1, int(scale * image_size))
    return Box((height - side + 1) // 2, (width - side + 1) // 2, side, side)


def _crop_at_aspect_ratio(rng: np.random.Generator, height: int, width: int,
                          aspect_ratio: float, area_range: tuple[float, float]) -> Box | None:
    """One attempt of TF's ``sample_distorted_bounding_box``: a height uniform in its bounds."""
    min_area, max_area = (a * height * width for a in area_range)
    low = round(math.sqrt(min_area / aspect_ratio))
    high = min(round(math.sqrt(max_area / aspect_ratio)), height,
               math.floor(width / aspect_ratio))
    if high < 1:
        return None
    rows = int(rng.integers(min(low, high), high + 1))
    columns = round(rows * aspect_ratio)
    if not (min_area <= rows * columns <= max_area and 1 <= columns <= width):
        return None
    top = int(rng.integers(0, height - rows + 1))
    left = int(rng.integers(0, width - columns + 1))
    return Box(top, left, rows, columns)


def random_crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    image_size: int,
    *,
    area_range: tuple[float, float] = AREA_RANGE,
    aspect_ratio_range: tuple[float, float] = ASPECT_RATIO_RANGE,
    min_object_covered: float = MIN_OBJECT_COVERED,
    max_attempts: int = MAX_ATTEMPTS,
) -> Box:
    """Samples an Inception-style crop window, as DeepMind's ``_decode_and_random_crop``.

    Each attempt draws an aspect ratio (width / height) uniformly from
    ``aspect_ratio_range`` and a height uniformly among the integers that keep the area in
    ``area_range`` (fractions of the image) and the crop inside the image; it succeeds when
    the crop covers at least ``min_object_covered`` of the image. The first success is
    taken; after ``max_attempts`` failures, or when the crop is the whole image, the
    window is :func:`center_crop_box`.

    Args:
      rng: the generator to draw from.
      height: image height.
      width: image width.
      image_size: the train size (for the fall-back centre crop).
      area_range: bounds of the crop's area as a fraction of the image's.
      aspect_ratio_range: bounds of the crop's width / height.
      min_object_covered: least fraction of the image the crop must cover.
      max_attempts: attempts before falling back.

    Returns:
      The crop window.
    """
    for _ in range(max_attempts):
        aspect_ratio = float(rng.uniform(*aspect_ratio_range))
        box = _crop_at_aspect_ratio(rng, height, width, aspect_ratio, area_range)
        if box is not None and box.height * box.width >= min_object_covered * height * width:
            if (box.height, box.width) == (height, width):
                break  # DeepMind's code takes a whole-image crop for a failed sample.
            return box
    return center_crop_box(height, width, image_size)


def _resize(image: Image.Image, box: Box, image_size: int) -> np.ndarray:
    """Crops ``box`` out of ``image`` and resizes it bicubically to a square uint8 array."""
    pil_box = (box.left, box.top, box.left + box.width, box.top + box.height)
    resized = image.resize((image_size, image_size), Image.Resampling.BICUBIC, box=pil_box)
    return np.asarray(resized, np.uint8)


def train_image(image: Image.Image, rng: np.random.Generator, image_size: int) -> np.ndarray:
    """Applies the training crop, flip and resize.

    Args:
      image: a decoded RGB image (:func:`decode`).
      rng: the generator for the crop and the flip (deterministic given its seed).
      image_size: the train size.

    Returns:
      uint8 ``(image_size, image_size, 3)``.
    """
    box = random_crop_box(rng, image.height, image.width, image_size)
    pixels = _resize(image, box, image_size)
    return pixels[:, ::-1].copy() if rng.random() < 0.5 else pixels


def eval_image(image: Image.Image, image_size: int,
               method: EvalMethod = "crop_resize") -> np.ndarray:
    """Applies the test-time crop and resize.

    Args:
      image: a decoded RGB image (:func:`decode`).
      image_size: the test size.
      method: ``"crop_resize"``: centre crop (:func:`center_crop_box`), then resize;
        ``"resize_crop"``: resize to ``image_size + 32`` squared (aspect ratio not kept,
        as DeepMind's), then centre crop.

    Returns:
      uint8 ``(image_size, image_size, 3)``.
    """
    if method == "crop_resize":
        return _resize(image, center_crop_box(image.height, image.width, image_size), image_size)
    if method == "resize_crop":
        side = image_size + EVAL_PADDING
        resized = image.resize((side, side), Image.Resampling.BICUBIC)
        offset = (side - image_size + 1) // 2
        return np.asarray(resized, np.uint8)[offset:offset + image_size,
                                              offset:offset + image_size]
    raise ValueError(f"eval method {method!r}: use 'crop_resize' or 'resize_crop'.")
