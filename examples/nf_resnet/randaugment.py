"""RandAugment on the host (NumPy and PIL), with the operations and magnitudes of DeepMind's NFNets.

``N`` layers each apply one of 16 operations drawn uniformly, at the shared magnitude ``M``
(on a scale whose reference maximum is 10; NFNet-F0 uses ``"405"``: N = 4, M = 5; F1–F2
``"410"``; F3 and up ``"415"``). The operations and their magnitude-to-argument maps follow
DeepMind's ``nfnets/autoaugment.py`` (itself the TPU RandAugment of Cubuk et al.):
geometric operations use nearest-neighbour sampling and fill with grey 128, rotations,
shears and translations take a random sign, Cutout is a ``2·pad``-sided grey square.

Differences, by design: the images are augmented in grain workers after the crop and
flip, before MixUp/CutMix (the NFNet recipe applies it after mixing:
``augment_before_mix=False``); Contrast blends towards the image's mean grey level, as PIL's
``ImageEnhance.Contrast`` does (DeepMind's TF port uses the pixel count / 256 instead).

References:
  Cubuk, Zoph, Shlens, Le, *RandAugment: Practical automated data augmentation with a
  reduced search space*, NeurIPS 2020, arXiv:1909.13719.
"""

from collections.abc import Callable

import numpy as np
from PIL import Image

MAX_LEVEL = 10.0
FILL = 128
TRANSLATE_CONST = 100
CUTOUT_CONST = 40
_GREY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140])


def parse_level(level: str) -> tuple[int, int]:
    """DeepMind's level string: ``"405"`` → 4 layers at magnitude 5; ``"10"`` → 2 at 10."""
    if not level.isdigit():
        raise ValueError(f"RandAugment level {level!r}: use digits, e.g. '405' (4 layers at "
                         "magnitude 5) or '10' (2 layers at magnitude 10).")
    value = int(level)
    layers = value // 100 if value > 100 else 2
    return layers, value - 100 * layers if value > 100 else value


def blend(image1: np.ndarray, image2: np.ndarray, factor: float) -> np.ndarray:
    """``image1 + factor·(image2 - image1)``, clipped to [0, 255] and truncated to uint8."""
    mixed = image1.astype(np.float64) + factor * (image2.astype(np.float64) - image1)
    return np.clip(mixed, 0, 255).astype(np.uint8)


def grey(image: np.ndarray) -> np.ndarray:
    """The luma of an RGB image (ITU-R 601 weights, as TF's), rounded, as uint8 (H, W)."""
    return np.floor(image @ _GREY_WEIGHTS + 0.5).clip(0, 255).astype(np.uint8)


def autocontrast(image: np.ndarray) -> np.ndarray:
    """Stretches each channel's range to [0, 255]; a constant channel is left alone."""
    low = image.min(axis=(0, 1), keepdims=True).astype(np.float64)
    high = image.max(axis=(0, 1), keepdims=True).astype(np.float64)
    scale = 255.0 / np.where(high > low, high - low, 1.0)
    stretched = np.clip((image - low) * scale, 0, 255).astype(np.uint8)
    return np.where(high > low, stretched, image)


def equalize(image: np.ndarray) -> np.ndarray:
    """Histogram equalisation per channel, as PIL's ``ImageOps.equalize``."""
    out = image.copy()
    for c in range(image.shape[-1]):
        histogram = np.bincount(image[..., c].ravel(), minlength=256)
        nonzero = histogram[histogram > 0]
        step = (nonzero.sum() - nonzero[-1]) // 255
        if step:
            lut = (np.cumsum(histogram) + step // 2) // step
            out[..., c] = np.clip(np.concatenate([[0], lut[:-1]]), 0, 255)[image[..., c]]
    return out


def sharpness(image: np.ndarray, factor: float) -> np.ndarray:
    """Blends with a 3×3 smoothing (centre weight 5 of 13) of the interior pixels."""
    x = image.astype(np.float64)
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13.0
    height, width = image.shape[:2]
    smooth = sum(kernel[i, j] * x[i:height - 2 + i, j:width - 2 + j]
                 for i in range(3) for j in range(3))
    degenerate = image.copy()
    degenerate[1:-1, 1:-1] = np.clip(smooth, 0, 255).astype(np.uint8)
    return blend(degenerate, image, factor)


def affine(image: np.ndarray, coefficients: tuple[float, ...]) -> np.ndarray:
    """Samples output pixel (x, y) at input ``(a·x + b·y + c, d·x + e·y + f)``, grey outside."""
    pil = Image.fromarray(image).transform(
        (image.shape[1], image.shape[0]), Image.Transform.AFFINE, coefficients,
        resample=Image.Resampling.NEAREST, fillcolor=(FILL,) * 3)
    return np.asarray(pil)


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotates about the centre, nearest neighbour, grey corners."""
    pil = Image.fromarray(image).rotate(degrees, resample=Image.Resampling.NEAREST,
                                        fillcolor=(FILL,) * 3)
    return np.asarray(pil)


def cutout(image: np.ndarray, rng: np.random.Generator, pad: int) -> np.ndarray:
    """Greys the square of half-side ``pad`` around a uniform pixel, cut to the image."""
    height, width = image.shape[:2]
    y, x = int(rng.integers(height)), int(rng.integers(width))
    out = image.copy()
    out[max(0, y - pad):y + pad, max(0, x - pad):x + pad] = FILL
    return out


def _signed(rng: np.random.Generator, value: float) -> float:
    return value if rng.random() < 0.5 else -value


def operations(magnitude: float) -> dict[str, Callable[[np.ndarray, np.random.Generator],
                                                        np.ndarray]]:
    """The 16 operations at ``magnitude``, each a function of (uint8 HWC image, generator)."""
    level = magnitude / MAX_LEVEL
    enhance = level * 1.8 + 0.1
    bits = int(level * 4)
    threshold = int(level * 256)
    addition = int(level * 110)

    def solarize_add(im, _):
        added = np.clip(im.astype(np.int64) + addition, 0, 255).astype(np.uint8)
        return np.where(im < 128, added, im)

    def contrast(im, _):
        return blend(np.full_like(im, int(grey(im).mean())), im, enhance)

    return {
        "AutoContrast": lambda im, _: autocontrast(im),
        "Equalize": lambda im, _: equalize(im),
        "Invert": lambda im, _: 255 - im,
        "Rotate": lambda im, rng: rotate(im, _signed(rng, level * 30)),
        "Posterize": lambda im, _: (im >> (8 - bits)) << (8 - bits) if bits < 8 else im,
        "Solarize": lambda im, _: np.where(im < threshold, im, 255 - im),
        "Color": lambda im, _: blend(np.repeat(grey(im)[..., None], 3, -1), im, enhance),
        "Contrast": contrast,
        "Brightness": lambda im, _: blend(np.zeros_like(im), im, enhance),
        "Sharpness": lambda im, _: sharpness(im, enhance),
        "ShearX": lambda im, rng: affine(im, (1, _signed(rng, level * 0.3), 0, 0, 1, 0)),
        "ShearY": lambda im, rng: affine(im, (1, 0, 0, _signed(rng, level * 0.3), 1, 0)),
        "TranslateX": lambda im, rng: affine(
            im, (1, 0, _signed(rng, level * TRANSLATE_CONST), 0, 1, 0)),
        "TranslateY": lambda im, rng: affine(
            im, (1, 0, 0, 0, 1, _signed(rng, level * TRANSLATE_CONST))),
        "Cutout": lambda im, rng: cutout(im, rng, int(level * CUTOUT_CONST)),
        "SolarizeAdd": solarize_add,
    }


def randaugment(image: np.ndarray, rng: np.random.Generator, num_layers: int,
                magnitude: float) -> np.ndarray:
    """Applies ``num_layers`` operations, each drawn uniformly from :func:`operations`.

    Args:
      image: uint8 ``(H, W, 3)``.
      rng: the generator for the choices and the operations' signs and positions.
      num_layers: N, the number of operations in a row.
      magnitude: M, shared by all operations (10 is the reference maximum; larger
        values extrapolate, as DeepMind's level 15 does).

    Returns:
      The augmented uint8 image, of the same shape.
    """
    ops = list(operations(magnitude).values())
    for _ in range(num_layers):
        image = ops[int(rng.integers(len(ops)))](image, rng)
    return np.ascontiguousarray(image, np.uint8)
