"""DeepMind's NFNets and NF-ResNets in Flax NNX, built from a row of ``nfnet_specs``.

:class:`NFNet` builds any :class:`~examples.nf_resnet.nfnet_specs.NFNetSpec`: the NFNet
F-series (deep stem, grouped bottlenecks with two 3×3 convs, squeeze-excite, average-pool
shortcuts, a final 1×1 conv) and DeepMind's pre-activation NF-ResNets (7×7 stem and max
pool, plain bottlenecks, strided 1×1 shortcuts) are rows of one table. In evaluation mode
it computes what DeepMind's Haiku ``NFNet`` and ``NF_ResNet`` compute, up to float32
rounding (``tests/examples/test_pretrained.py`` checks both against DeepMind's own outputs).

Each block computes ``shortcut + α · skip_gain · branch(act(h) / β)`` with β the expected
standard deviation of its input ``h``: it starts at 1, grows as ``β² ← β² + α²`` per block
and is reset to ``1 + α²`` after the first block of every stage, whose shortcut is a
convolution of the unit-variance ``act(h) / β``. The activation is applied *before* the
division by β, as in the NFNets code. Parameter paths are ``stem/convs/<i>/kernel``,
``blocks/<i>/convs/<j>/kernel``, ``blocks/<i>/shortcut/…``, ``blocks/<i>/squeeze_excite/
{reduce,expand}/…``, ``blocks/<i>/skip_gain``, ``final_conv/…`` and ``head/{kernel,bias}``.

References:
  arXiv:2101.08692 (NF-ResNets); arXiv:2102.06171 (NFNets, figure 5 and appendix C).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from examples.nf_resnet.layers import SqueezeExcite, StochasticDepth, WSConv, scaled_activation
from examples.nf_resnet.nfnet_specs import NFNetSpec

# (output channels, stride) of the deep stem's first three 3×3 convs (arXiv:2102.06171).
DEEP_STEM = ((16, 2), (32, 1), (64, 1))
# The classifier's kernel starts as N(0, 0.01²), as in the NFNets code.
HEAD_INIT = nnx.initializers.normal(0.01)


class Stem(nnx.Module):
    """The stem: four 3×3 WS convs (``"deep"``) or a 7×7 conv and a max pool (``"resnet"``)."""

    def __init__(self, spec: NFNetSpec, in_features: int, *, dtype: jnp.dtype | None,
                 rngs: nnx.Rngs):
        """Creates the stem.

        Args:
          spec: the network's row (its ``stem``, ``stem_width`` and ``activation``).
          in_features: channels of the input images.
          dtype: compute dtype.
          rngs: random streams for the initialisers.
        """
        if spec.stem == "deep":
            shapes = [*DEEP_STEM, (spec.stem_width, 2)]
            kernel = 3
        else:
            shapes, kernel = [(spec.stem_width, 2)], 7
        convs, width = [], in_features
        for out, stride in shapes:
            convs.append(WSConv(width, out, kernel, strides=stride, dtype=dtype, rngs=rngs))
            width = out
        self.convs = nnx.List(convs)
        self.max_pool = spec.stem == "resnet"
        self.activation = scaled_activation(spec.activation)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the stem to NHWC images (no activation after its last conv)."""
        for i, conv in enumerate(self.convs):
            x = conv(x if i == 0 else self.activation(x))
        if self.max_pool:
            x = nnx.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="SAME")
        return x


def inner_width(spec: NFNetSpec, stage: int, in_features: int, out_features: int
                ) -> tuple[int, int]:
    """Returns ``(width, groups)`` of a block's inner convs.

    The width is ``expansion × (out if big_width else in)``, rounded down to a multiple
    of the stage's group width (one group when it is ``None``).
    """
    base = out_features if spec.big_widths[stage] else in_features
    width = int(base * spec.expansions[stage])
    group_width = spec.group_widths[stage]
    if group_width is None:
        return width, 1
    groups = width // group_width
    if groups < 1:
        raise ValueError(f"NFNetSpec stage {stage}: inner width {width} is below the group "
                         f"width {group_width}; widen the stage or shrink its group width.")
    return group_width * groups, groups


class NFNetBlock(nnx.Module):
    """One residual block: ``shortcut + α · skip_gain · branch(act(h) / β)``.

    The branch is a 1×1 conv, one or two grouped 3×3 convs (the first strided), a 1×1
    conv, with the activation before every conv but the first, then optionally
    squeeze-excite (×2) and stochastic depth.
    """

    def __init__(self, spec: NFNetSpec, stage: int, in_features: int, out_features: int, *,
                 stride: int, beta: float, drop_path_rate: float, dtype: jnp.dtype | None,
                 rngs: nnx.Rngs):
        """Creates the block.

        Args:
          spec: the network's row.
          stage: the block's stage (index into the per-stage fields).
          in_features: input channels.
          out_features: output channels.
          stride: the block's stride (on its first 3×3 conv and its shortcut).
          beta: β, the expected standard deviation of the block's input.
          drop_path_rate: probability of dropping the branch in training.
          dtype: compute dtype.
          rngs: random streams (``params`` and ``dropout``).
        """
        width, groups = inner_width(spec, stage, in_features, out_features)
        convs = [WSConv(in_features, width, 1, dtype=dtype, rngs=rngs),
                 WSConv(width, width, 3, strides=stride, groups=groups, dtype=dtype, rngs=rngs)]
        if spec.two_convs:
            convs.append(WSConv(width, width, 3, groups=groups, dtype=dtype, rngs=rngs))
        convs.append(WSConv(width, out_features, 1, dtype=dtype, rngs=rngs))
        self.convs = nnx.List(convs)
        self.pool_shortcut = spec.pool_shortcut and stride > 1
        self.is_transition = stride > 1 or in_features != out_features
        self.shortcut = (WSConv(in_features, out_features, 1,
                                strides=1 if self.pool_shortcut else stride, dtype=dtype,
                                rngs=rngs)
                         if self.is_transition else None)
        self.squeeze_excite = (
            SqueezeExcite(out_features, max(1, int(out_features * spec.se_ratio)),
                          activation="relu", dtype=dtype, rngs=rngs)
            if spec.se_ratio else None)
        self.stochastic_depth = StochasticDepth(drop_path_rate, rngs=rngs)
        self.skip_gain = nnx.Param(jnp.zeros((), jnp.float32))
        self.activation = scaled_activation(spec.activation)
        self.alpha = spec.alpha
        self.beta = beta

    def __call__(self, h: jax.Array) -> jax.Array:
        """Applies the block to an NHWC batch."""
        out = self.activation(h) * (1.0 / self.beta)
        shortcut = h
        if self.pool_shortcut:
            shortcut = nnx.avg_pool(out, window_shape=(2, 2), strides=(2, 2), padding="SAME",
                                    count_include_pad=False)
        if self.shortcut is not None:
            shortcut = self.shortcut(out if not self.pool_shortcut else shortcut)
        for i, conv in enumerate(self.convs):
            out = conv(out if i == 0 else self.activation(out))
        if self.squeeze_excite is not None:
            out = self.squeeze_excite(out)
        out = self.stochastic_depth(out)
        return shortcut + out * (self.alpha * self.skip_gain[...]).astype(out.dtype)


def block_betas(spec: NFNetSpec) -> list[float]:
    """Returns β, the expected input standard deviation, of every block in order.

    β² starts at 1 and grows by α² per block; after a stage's first block it restarts
    from 1 (that block's shortcut sees a unit-variance input).
    """
    betas, variance = [], 1.0
    for depth in spec.depths:
        for index in range(depth):
            betas.append(variance**0.5)
            variance = (1.0 if index == 0 else variance) + spec.alpha**2
    return betas


class NFNet(nnx.Module):
    """A normalizer-free classifier of DeepMind's design, built from a spec row.

    References:
      arXiv:2102.06171 (NFNets); arXiv:2101.08692 (NF-ResNets).
    """

    def __init__(self, spec: NFNetSpec, num_classes: int = 1000, *, in_features: int = 3,
                 drop_path_rate: float | None = None, dropout_rate: float | None = None,
                 dtype: jnp.dtype | None = None, rngs: nnx.Rngs):
        """Builds the network.

        Args:
          spec: the row, e.g. ``nfnet_specs.VARIANTS["nfnet_f0"]``.
          num_classes: outputs of the classifier (1000: ImageNet).
          in_features: channels of the input images.
          drop_path_rate: stochastic-depth rate of the last block; block ``i`` of ``n``
            drops its branch with probability ``rate · i / n`` (``None``: the spec's).
          dropout_rate: dropout before the classifier (``None``: the spec's).
          dtype: compute dtype; parameters are float32 whatever it is.
          rngs: random streams (``params`` and ``dropout``).
        """
        drop_path_rate = spec.stochdepth_rate if drop_path_rate is None else drop_path_rate
        dropout_rate = spec.drop_rate if dropout_rate is None else dropout_rate
        self.stem = Stem(spec, in_features, dtype=dtype, rngs=rngs)
        blocks, width, betas = [], spec.stem_width, iter(block_betas(spec))
        num_blocks = sum(spec.depths)
        for stage, (out, depth, stride) in enumerate(zip(spec.widths, spec.depths,
                                                         spec.strides, strict=True)):
            for index in range(depth):
                blocks.append(NFNetBlock(
                    spec, stage, width, out, stride=stride if index == 0 else 1,
                    beta=next(betas), drop_path_rate=drop_path_rate * len(blocks) / num_blocks,
                    dtype=dtype, rngs=rngs))
                width = out
        self.blocks = nnx.List(blocks)
        final_conv = None
        if spec.final_conv_mult is not None:
            final = int(spec.final_conv_mult * width)
            final_conv = WSConv(width, final, 1, dtype=dtype, rngs=rngs)
            width = final
        self.final_conv = nnx.data(final_conv)
        self.activation = scaled_activation(spec.activation)
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
        self.head = nnx.Linear(width, num_classes, kernel_init=HEAD_INIT,
                               dtype=dtype, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Returns the pooled features the classifier sees, ``(N, head inputs)``."""
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        if self.final_conv is not None:
            h = self.final_conv(h)
        return jnp.mean(self.activation(h), axis=(1, 2))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Returns the float32 logits of NHWC images."""
        return self.head(self.dropout(self.features(x))).astype(jnp.float32)
