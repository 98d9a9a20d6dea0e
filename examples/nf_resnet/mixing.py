"""MixUp and CutMix on device: each image mixed with its neighbour in the batch, soft targets.

As in DeepMind's NFNet recipe (``my_mixup_cutmix`` in ``nfnets/dataset.py``), the first
half of a batch gets MixUp and the second half CutMix; every example's target is
``λ·onehot(own label) + (1 - λ)·onehot(partner's label)``, which sums to 1. The partner
of example ``i`` is example ``i - 1`` (cyclically): the loader already shuffled the batch,
so this pairs examples at random without a gather. Everything is drawn from one PRNG key,
so a step's mixing is reproducible.

- MixUp: ``λ ~ Beta(α, α)`` per example (α = 0.2, DeepMind's default); the image is
  ``λ·own + (1 - λ)·partner``.
- CutMix: a box of area fraction ``1 - U``, ``U ~ Uniform(0, 1)`` (the paper's
  Beta(1, 1)), with sides in the image's proportions, centred at a uniform pixel and
  clipped to the image; the partner's pixels fill the box, and ``λ`` is the fraction of
  the image left to the own example, counted after clipping.

References:
  Zhang, Cisse, Dauphin, Lopez-Paz, *mixup: Beyond Empirical Risk Minimization*, ICLR
  2018, arXiv:1710.09412.
  Yun, Han, Oh, Chun, Choe, Yoo, *CutMix: Regularization Strategy to Train Strong
  Classifiers with Localizable Features*, ICCV 2019, arXiv:1905.04899.
"""

from typing import Literal

import jax
import jax.numpy as jnp

Method = Literal["mixup", "cutmix", "mixup_cutmix"]
MIXUP_ALPHA = 0.2


def mixup_weights(rng: jax.Array, n: int, alpha: float = MIXUP_ALPHA) -> jax.Array:
    """Draws ``n`` MixUp weights ``λ ~ Beta(α, α)`` (float32)."""
    return jax.random.beta(rng, alpha, alpha, (n,), jnp.float32)


def cutmix_masks(rng: jax.Array, n: int, height: int, width: int) -> jax.Array:
    """Draws ``n`` CutMix boxes as masks, 1 inside the box (where the partner goes).

    Args:
      rng: a PRNG key.
      n: number of masks.
      height: image height.
      width: image width.

    Returns:
      float32 ``(n, height, width, 1)``: a box of sides ``⌊√(1 - U)·height⌋`` by
      ``⌊√(1 - U)·width⌋`` (``U`` uniform), centred at a uniform pixel, clipped to the
      image (its area can be smaller than drawn, even empty).
    """
    centre_rng, area_rng = jax.random.split(rng)
    centre = jax.random.uniform(centre_rng, (n, 2)) * jnp.array([height, width])
    centre = jnp.floor(centre).astype(jnp.int32)
    side_fraction = jnp.sqrt(1.0 - jax.random.uniform(area_rng, (n,)))
    half_rows = (side_fraction * height).astype(jnp.int32) // 2
    half_columns = (side_fraction * width).astype(jnp.int32) // 2
    rows = jnp.arange(height)[None, :, None]
    columns = jnp.arange(width)[None, None, :]
    inside = ((rows >= centre[:, 0, None, None] - half_rows[:, None, None])
              & (rows < centre[:, 0, None, None] + half_rows[:, None, None])
              & (columns >= centre[:, 1, None, None] - half_columns[:, None, None])
              & (columns < centre[:, 1, None, None] + half_columns[:, None, None]))
    return inside[..., None].astype(jnp.float32)


def mix(
    rng: jax.Array,
    images: jax.Array,
    labels: jax.Array,
    num_classes: int,
    method: Method = "mixup_cutmix",
    mixup_alpha: float = MIXUP_ALPHA,
) -> tuple[jax.Array, jax.Array]:
    """Mixes every image with its neighbour in the batch and returns soft targets.

    Args:
      rng: a PRNG key; the same key gives the same mixing.
      images: NHWC float images (normalised or not: mixing commutes with per-channel
        normalisation, as the weights sum to 1).
      labels: integer labels ``(N,)``.
      num_classes: the number of classes.
      method: ``"mixup"``, ``"cutmix"`` or ``"mixup_cutmix"`` (first ``N // 2`` examples
        MixUp, the rest CutMix).
      mixup_alpha: α of MixUp's Beta(α, α).

    Returns:
      ``(mixed images, targets)``; targets are float32 ``(N, num_classes)`` and each row
      sums to 1.
    """
    if method not in ("mixup", "cutmix", "mixup_cutmix"):
        raise ValueError(f"method {method!r}: use 'mixup', 'cutmix' or 'mixup_cutmix'.")
    n, height, width, _ = images.shape
    mixup_rng, cutmix_rng = jax.random.split(rng)
    partner_images = jnp.roll(images, 1, axis=0)
    partner_labels = jnp.roll(labels, 1, axis=0)
    masks = cutmix_masks(cutmix_rng, n, height, width)
    cutmix_images = images * (1 - masks) + partner_images * masks
    cutmix_weights = 1.0 - masks.mean(axis=(1, 2, 3))
    weights = mixup_weights(mixup_rng, n, mixup_alpha)
    mixup_images = (weights[:, None, None, None] * images
                    + (1 - weights[:, None, None, None]) * partner_images)
    if method == "mixup_cutmix":
        use_mixup = jnp.arange(n) < n // 2
    else:
        use_mixup = jnp.full((n,), method == "mixup")
    mixed = jnp.where(use_mixup[:, None, None, None], mixup_images, cutmix_images)
    weights = jnp.where(use_mixup, weights, cutmix_weights)
    targets = (weights[:, None] * jax.nn.one_hot(labels, num_classes)
               + (1 - weights[:, None]) * jax.nn.one_hot(partner_labels, num_classes))
    return mixed.astype(images.dtype), targets
