"""The BatchNorm baseline: a standard pre-activation ResNet with the NF-ResNets' layout.

A block computes ``shortcut + f(h)`` where every convolution of ``f`` is preceded by
BatchNorm and the activation (``BN → act → conv``, twice or three times), and the
shortcut is ``h`` or, at a transition, a 1×1 conv of the first ``act(BN(h))``. The
convolutions are plain (no weight standardisation, no bias: the next BatchNorm has one),
there are no scalar gains and no skip gains; the last residual stream passes a final
BatchNorm and activation before the average pool. Widths, depths, strides, stem and
classifier are those of the NF-ResNet of the same size (:func:`models.block_layouts`,
:class:`models.ResNet`).

In training (``use_running_average=False``) BatchNorm normalizes with the statistics of
the batch it sees, computed in float32 whatever the compute dtype, and updates its running
averages (``nnx.BatchStat``); in evaluation (``nnx.view(model, use_running_average=True)``)
it normalizes with the running averages. Under ``jax.jit`` with the batch sharded over
devices, the batch statistics are those of the global batch: XLA inserts the all-reduce.

References:
  Ioffe, Szegedy, *Batch Normalization*, ICML 2015, arXiv:1502.03167.
  He, Zhang, Ren, Sun, *Identity Mappings in Deep Residual Networks*, ECCV 2016,
  arXiv:1603.05027.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from examples.nf_resnet import layers, models

# PyTorch's default (Flax's 0.99 would leave 9% of the initial statistics in the running
# averages after the 240 steps of a short run).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def _cast_input_only(args: tuple[Any, ...], /, *, dtype: Any = None,
                     inexact: bool = True) -> tuple[Any, ...]:
    """BatchNorm's ``promote_dtype``: the input takes the compute dtype, the rest stays.

    Flax's default also casts the running averages, scale and bias to the compute dtype,
    so a bfloat16 model would normalize with bfloat16 statistics in evaluation. Keeping
    them float32 makes ``(x − mean) · rsqrt(var + ε) · scale + bias`` a float32
    computation whose result is cast back to the compute dtype.
    """
    del inexact  # Part of the promote_dtype signature; the input is a float array.
    x, *rest = args
    return (x if dtype is None else jnp.asarray(x, dtype), *rest)


def batch_norm(features: int, dtype: jnp.dtype | None, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """Returns a BatchNorm over the channels of NHWC inputs with float32 statistics.

    Args:
      features: channels.
      dtype: compute dtype of the output; statistics, scale and bias stay float32.
      rngs: random streams (BatchNorm's initialisers are constant; Flax asks for them).

    Returns:
      The layer, in training mode (batch statistics).
    """
    return nnx.BatchNorm(
        features, use_running_average=False, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
        # Two-pass variance: E[x²] − E[x]² loses the variance of channels with a large mean.
        use_fast_variance=False, dtype=dtype, param_dtype=jnp.float32,
        promote_dtype=_cast_input_only, rngs=rngs,
    )


def conv(shape: models.ConvShape, dtype: jnp.dtype | None, rngs: nnx.Rngs) -> nnx.Conv:
    """Returns a plain bias-free HWIO convolution with He-normal initialisation."""
    return nnx.Conv(
        shape.in_features, shape.out_features, (shape.kernel_size, shape.kernel_size),
        strides=shape.stride, padding="SAME", use_bias=False,
        kernel_init=nnx.initializers.variance_scaling(2.0, "fan_in", "normal"),
        dtype=dtype, param_dtype=jnp.float32, rngs=rngs,
    )


class BNBlock(nnx.Module):
    """A pre-activation residual block with BatchNorm, basic or bottleneck."""

    def __init__(
        self,
        layout: models.BlockLayout,
        *,
        kind: str,
        bottleneck_ratio: float,
        activation: str,
        se_ratio: float | None,
        drop_path_rate: float,
        dtype: jnp.dtype | None,
        rngs: nnx.Rngs,
    ):
        """Creates the block.

        Args:
          layout: input and output channels and the stride of the block.
          kind: ``"basic"`` or ``"bottleneck"``.
          bottleneck_ratio: inner width of a bottleneck block relative to its output.
          activation: name of the (plain, unscaled) activation.
          se_ratio: squeeze-excite hidden width relative to the branch width; ``None`` for
            no squeeze-excite.
          drop_path_rate: probability of dropping the residual branch (stochastic depth).
          dtype: compute dtype.
          rngs: random streams for initialisers and stochastic depth.
        """
        shapes = models.branch_convs(kind, layout, bottleneck_ratio)
        self.norms = nnx.List([batch_norm(s.in_features, dtype, rngs) for s in shapes])
        self.convs = nnx.List([conv(s, dtype, rngs) for s in shapes])
        self.is_transition = layout.is_transition
        self.shortcut = (
            conv(models.ConvShape(layout.in_features, layout.out_features, 1, layout.stride),
                 dtype, rngs)
            if self.is_transition else None
        )
        self.squeeze_excite = models.squeeze_excite(layout.out_features, se_ratio, activation,
                                                    dtype, rngs)
        self.drop_path = models.drop_path(drop_path_rate, rngs)
        self.activation = layers.activation(activation)

    def __call__(self, h: jax.Array) -> jax.Array:
        """Applies the block to an NHWC batch."""
        out = self.activation(self.norms[0](h))
        shortcut = self.shortcut(out) if self.shortcut is not None else h
        for i, (norm, conv_i) in enumerate(zip(self.norms, self.convs, strict=True)):
            out = conv_i(out if i == 0 else self.activation(norm(out)))
        if self.squeeze_excite is not None:
            out = self.squeeze_excite(out)
        return shortcut + self.drop_path(out)


class BNResNet(models.ResNet):
    """A pre-activation ResNet with BatchNorm: the baseline NF-ResNets set out to match.

    References:
      arXiv:1603.05027 (the pre-activation ResNet).
    """

    def __init__(
        self,
        spec: models.ResNetSpec,
        num_classes: int,
        *,
        in_features: int = 3,
        activation: str = "relu",
        se_ratio: float | None = None,
        drop_path_rate: float = 0.0,
        dropout_rate: float = 0.0,
        dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
    ):
        """Builds the network.

        Args:
          spec: the layout, e.g. ``models.VARIANTS["bn_resnet_cpu"]``.
          num_classes: outputs of the classifier.
          in_features: channels of the input images.
          activation: name of the activation (plain: BatchNorm sets the scale).
          se_ratio: squeeze-excite hidden width ratio, or ``None`` for no squeeze-excite.
          drop_path_rate: stochastic-depth rate of the last block; block ``i`` of ``n``
            drops its branch with probability ``drop_path_rate · i / n``.
          dropout_rate: dropout rate before the classifier.
          dtype: compute dtype; parameters and batch statistics are float32 whatever it is.
          rngs: random streams (``params`` and ``dropout``).
        """
        models.check_normalization(spec, "batch", "BNResNet")
        self.stem = conv(models.ConvShape(in_features, spec.stem_width, spec.stem_kernel,
                                          spec.stem_stride), dtype, rngs)
        self.blocks = nnx.List([
            BNBlock(layout, kind=spec.block, bottleneck_ratio=spec.bottleneck_ratio,
                    activation=activation, se_ratio=se_ratio, drop_path_rate=rate,
                    dtype=dtype, rngs=rngs)
            for layout, rate in zip(models.block_layouts(spec),
                                    models.drop_path_rates(spec, drop_path_rate), strict=True)
        ])
        width = spec.widths[-1]
        self.init_head(spec, width, num_classes, final_norm=batch_norm(width, dtype, rngs),
                       activation=layers.activation(activation), dropout_rate=dropout_rate,
                       dtype=dtype, rngs=rngs)
