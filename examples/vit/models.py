"""A Vision Transformer (ViT) in Flax NNX, sized for small grayscale images.

The image is cut into non-overlapping ``p × p`` patches, each linearly embedded (a
convolution with kernel and stride ``p``) and added to a learned position embedding;
variants with ``shifted_patches`` first stack the image with four diagonally shifted copies
(shifted patch tokenization, Lee et al. 2021), so that each token also sees the pixels
around its patch, at the cost of a 5× larger patch embedding and no more tokens. A
stack of pre-LayerNorm encoder blocks follows, each ``x + attention(norm(x))`` then
``x + mlp(norm(x))``; a final LayerNorm, a mean over the tokens and a linear ``head``
give the logits. Variants are rows of :data:`VARIANTS`.

Every parameter path of the model (``blocks/0/attention/query/kernel``, ``head/kernel``,
...) starts with one of ``patch_embed``, ``position_embedding``, ``blocks``,
``final_norm`` and ``head``, so the anchored pattern ``"^head/"`` selects the classifier
and nothing else.

References:
  Dosovitskiy et al., *An Image is Worth 16x16 Words: Transformers for Image Recognition
  at Scale*, ICLR 2021, arXiv:2010.11929.
  Lee, Lee, Song, *Vision Transformer for Small-Size Datasets*, 2021, arXiv:2112.13492
  (shifted patch tokenization; locality self-attention, whose masked diagonal the
  ``diagonal_mask`` variants take).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from examples.common import devices, errors
from examples.vit import optim

_KERNEL_INIT = nnx.initializers.xavier_uniform()


@dataclasses.dataclass(frozen=True)
class ViTSpec:
    """The layout of one ViT variant.

    Attributes:
      patch_size: side of the square patches; must divide the image side.
      width: the token (model) dimension.
      depth: number of encoder blocks.
      num_heads: attention heads per block; must divide ``width``.
      mlp_dim: hidden width of each block's MLP.
      shifted_patches: cut the patches from the image stacked with its four copies
        shifted diagonally by half a patch (shifted patch tokenization), so each token
        also sees the pixels around its patch; the token count is unchanged.
      diagonal_mask: no token attends to itself, so attention mixes in only the other
        tokens (the diagonal masking of locality self-attention).
      qk_norm: layer-normalize each head's queries and keys (``normalize_qk`` of
        ``nnx.MultiHeadAttention``); their learned scales set the attention's temperature.
    """

    patch_size: int
    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    shifted_patches: bool = False
    diagonal_mask: bool = False
    qk_norm: bool = False


_VIT_CPU = ViTSpec(patch_size=7, width=96, depth=4, num_heads=4, mlp_dim=192)

VARIANTS: dict[str, ViTSpec] = {
    # 20K parameters, 16 tokens of 7×7 pixels: unit tests and the smoke preset.
    "vit_nano": ViTSpec(patch_size=7, width=32, depth=2, num_heads=2, mlp_dim=64),
    # 0.3M parameters, 16 tokens: sized for the CPU preset (a width-64 ViT on the 49 tokens
    # of 4×4 patches trained three times slower per image in a one-off XLA:CPU timing).
    "vit_cpu": _VIT_CPU,
    # 0.14M parameters, 49 tokens of 4×4 pixels: the CPU preset's re-tuning probe
    # (experiment vit_cpu_preset_retune); about 1.5× vit_cpu's multiply-adds per image.
    "vit_cpu_p4": ViTSpec(patch_size=4, width=64, depth=4, num_heads=4, mlp_dim=128),
    # vit_cpu with shifted patch tokenization: 16 tokens that each see a 13×13 window.
    "vit_cpu_spt": dataclasses.replace(_VIT_CPU, shifted_patches=True),
    # vit_cpu_spt whose tokens do not attend to themselves, without and with QK-norm: the
    # diagonal mask and a learned temperature, as in locality self-attention.
    "vit_cpu_spt_dm": dataclasses.replace(_VIT_CPU, shifted_patches=True, diagonal_mask=True),
    "vit_cpu_spt_dm_qkn": dataclasses.replace(_VIT_CPU, shifted_patches=True,
                                              diagonal_mask=True, qk_norm=True),
    # 4.8M parameters, 49 tokens of 4×4 pixels: for an accelerator.
    "vit_small": ViTSpec(patch_size=4, width=256, depth=6, num_heads=8, mlp_dim=1024),
}


_DIAGONAL_SHIFTS = ((-1, -1), (-1, 1), (1, -1), (1, 1))


def shift_diagonally(images: jax.Array, shift: int) -> jax.Array:
    """Stacks NHWC images with their four diagonal shifts along the channel axis.

    Args:
      images: ``(batch, height, width, channels)``.
      shift: pixels to shift by in each direction; a neighbour beyond the border takes the
        value of the nearest border pixel.

    Returns:
      ``(batch, height, width, 5 * channels)``: the images, then four copies whose pixel
      ``(i, j)`` is the image's pixel ``(i - s, j - s)``, ``(i - s, j + s)``,
      ``(i + s, j - s)`` and ``(i + s, j + s)``, ``s`` the shift.

    References:
      Lee, Lee, Song, *Vision Transformer for Small-Size Datasets*, 2021,
      arXiv:2112.13492 (shifted patch tokenization; the paper also layer-normalizes each
      flattened patch, which this model does not).
    """
    _, height, width, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
    shifted = [padded[:, shift + dy * shift:shift + dy * shift + height,
                      shift + dx * shift:shift + dx * shift + width] for dy, dx in _DIAGONAL_SHIFTS]
    return jnp.concatenate([images, *shifted], axis=-1)


class Mlp(nnx.Module):
    """The feed-forward half of an encoder block: ``output(gelu(hidden(x)))``."""

    def __init__(self, width: int, mlp_dim: int, *, dtype: jnp.dtype | None, rngs: nnx.Rngs):
        """Creates the two linear layers.

        Args:
          width: input and output features.
          mlp_dim: hidden features.
          dtype: compute dtype.
          rngs: random streams for the initialisers.
        """
        self.hidden = nnx.Linear(width, mlp_dim, kernel_init=_KERNEL_INIT, dtype=dtype, rngs=rngs)
        self.output = nnx.Linear(mlp_dim, width, kernel_init=_KERNEL_INIT, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the MLP to the last axis of ``x``."""
        return self.output(jax.nn.gelu(self.hidden(x)))


class EncoderBlock(nnx.Module):
    """A pre-LayerNorm transformer encoder block with residual dropout."""

    def __init__(self, spec: ViTSpec, *, dropout_rate: float, dtype: jnp.dtype | None,
                 rngs: nnx.Rngs):
        """Creates the block.

        Args:
          spec: the variant's layout (width, heads, MLP width).
          dropout_rate: dropout on each residual branch's output.
          dtype: compute dtype.
          rngs: random streams for the initialisers and dropout.
        """
        self.attention_norm = nnx.LayerNorm(spec.width, dtype=dtype, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            spec.num_heads, spec.width, kernel_init=_KERNEL_INIT, dtype=dtype, decode=False,
            normalize_qk=spec.qk_norm, keep_rngs=False, rngs=rngs)
        self.diagonal_mask = spec.diagonal_mask
        self.mlp_norm = nnx.LayerNorm(spec.width, dtype=dtype, rngs=rngs)
        self.mlp = Mlp(spec.width, spec.mlp_dim, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the block to tokens ``(batch, tokens, width)``."""
        # True where a query may attend to a key: off the diagonal, or everywhere.
        mask = ~jnp.eye(x.shape[-2], dtype=bool) if self.diagonal_mask else None
        x = x + self.dropout(self.attention(self.attention_norm(x), mask=mask))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class ViT(nnx.Module):
    """A Vision Transformer classifier with mean pooling over the tokens."""

    def __init__(
        self,
        spec: ViTSpec,
        num_classes: int,
        *,
        image_size: int = 28,
        in_features: int = 1,
        dropout_rate: float = 0.0,
        dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
    ):
        """Builds the network.

        Args:
          spec: the layout, e.g. ``VARIANTS["vit_cpu"]``.
          num_classes: outputs of the classifier.
          image_size: side of the square input images.
          in_features: channels of the input images.
          dropout_rate: dropout on every residual branch and before the classifier.
          dtype: compute dtype; parameters are float32 whatever it is.
          rngs: random streams (``params`` and ``dropout``).

        Raises:
          ValueError: the patch size does not divide the image side, or the number of
            heads does not divide the width.
        """
        if image_size % spec.patch_size:
            raise ValueError(f"patch_size {spec.patch_size} must divide the image side "
                             f"{image_size}; pick a variant whose patches tile the image.")
        if spec.width % spec.num_heads:
            raise ValueError(f"num_heads {spec.num_heads} must divide width {spec.width}.")
        p = spec.patch_size
        self.shifted_patches = spec.shifted_patches
        self.patch_shift = p // 2  # Half a patch, rounded down: 3 pixels for 7×7 patches.
        patch_features = in_features * (len(_DIAGONAL_SHIFTS) + 1 if spec.shifted_patches else 1)
        self.patch_embed = nnx.Conv(patch_features, spec.width, (p, p), strides=(p, p),
                                    padding="VALID", kernel_init=_KERNEL_INIT, dtype=dtype,
                                    rngs=rngs)
        num_tokens = (image_size // p) ** 2
        self.position_embedding = nnx.Param(
            nnx.initializers.normal(0.02)(rngs.params(), (num_tokens, spec.width)))
        self.blocks = nnx.List([
            EncoderBlock(spec, dropout_rate=dropout_rate, dtype=dtype, rngs=rngs)
            for _ in range(spec.depth)
        ])
        self.final_norm = nnx.LayerNorm(spec.width, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
        self.head = nnx.Linear(spec.width, num_classes, kernel_init=nnx.initializers.zeros,
                               dtype=dtype, rngs=rngs)

    def tokens(self, x: jax.Array) -> jax.Array:
        """Embeds NHWC images as ``(batch, tokens, width)``, position embedding added."""
        if self.shifted_patches:
            x = shift_diagonally(x, self.patch_shift)
        patches = self.patch_embed(x)
        batch, height, width, features = patches.shape
        tokens = patches.reshape(batch, height * width, features)
        return tokens + self.position_embedding[...].astype(tokens.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Returns the logits (float32) for a batch of NHWC images."""
        h = self.tokens(x)
        for block in self.blocks:
            h = block(h)
        features = jnp.mean(self.final_norm(h), axis=1)
        return self.head(self.dropout(features)).astype(jnp.float32)


# (height, width, channels) of each dataset's images: the ViT's token grid depends on it.
IMAGE_SHAPES = {"fashion_mnist": (28, 28, 1), "mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
NUM_CLASSES = 10  # Of every dataset above.


def create_model(config: Any, num_classes: int, in_features: int,
                 rngs: nnx.Rngs) -> ViT:
    """Builds the configured ViT (float32 parameters, configured compute dtype).

    Raises:
      UserError: the model's patches do not tile the dataset's images.
    """
    if config.model not in VARIANTS:
        raise ValueError(f"Unknown model {config.model!r}; choose from {sorted(VARIANTS)}.")
    side, patch = IMAGE_SHAPES[config.dataset][0], VARIANTS[config.model].patch_size
    if side % patch:
        tiling = sorted(name for name, spec in VARIANTS.items()
                        if side % spec.patch_size == 0)
        raise errors.UserError(
            f"--model {config.model} cuts images into {patch}-pixel patches, which do not tile "
            f"{config.dataset}'s {side}×{side} images; pick one of {tiling}.")
    return ViT(VARIANTS[config.model], num_classes, image_size=side,
                      in_features=in_features, dropout_rate=config.dropout_rate,
                      dtype=devices.compute_dtype(config.dtype), rngs=rngs)


def unit_axes(config: Any) -> Any:
    """AGC's ``unit_axes`` for the configured model (``--agc-units``).

    ``infer`` traces the model's forward pass on an abstract copy of the model (no arrays
    are allocated) and reads each parameter's fan-in from it.
    """
    height, width, channels = IMAGE_SHAPES[config.dataset]
    model = nnx.eval_shape(lambda: create_model(config, NUM_CLASSES, channels, nnx.Rngs(0)))
    return optim.unit_axes_rule(config.agc_units, model, (1, height, width, channels))
