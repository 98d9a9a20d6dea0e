"""Normalizer-Free ResNets (NF-ResNets) in Flax NNX.

A pre-activation residual block computes ``h + α · skip_gain · f(h / β)``: β is the
*expected* standard deviation of the residual stream ``h``, tracked analytically as
``Var(h_{i+1}) = Var(h_i) + α²`` and reset to ``1 + α²`` at a transition block, whose
shortcut is a convolution of the activated ``h / β``. Every convolution is a scaled
weight-standardised :class:`~examples.nf_resnet.layers.WSConv`; there is no normalization
layer anywhere. Variants are rows of :data:`VARIANTS`, not subclasses.

References:
  Brock, De, Smith, *Characterizing signal propagation to close the performance gap in
  unnormalized ResNets*, ICLR 2021, arXiv:2101.08692.
  Brock, De, Smith, Simonyan, *High-Performance Large-Scale Image Recognition Without
  Normalization*, ICML 2021, arXiv:2102.06171.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from examples.nf_resnet.layers import SqueezeExcite, WSConv, scaled_activation


@dataclasses.dataclass(frozen=True)
class NFResNetSpec:
    """The layout of one NF-ResNet variant.

    Attributes:
      block: ``"basic"`` (two 3×3 convs) or ``"bottleneck"`` (1×1, 3×3, 1×1).
      depths: blocks per stage.
      widths: output channels per stage.
      strides: stride of each stage's first block.
      stem_width: channels of the stem convolution.
      stem_kernel: kernel size of the stem convolution.
      stem_stride: stride of the stem convolution.
      stem_pool: whether a 3×3 stride-2 max pool follows the stem (the ImageNet layout).
      bottleneck_ratio: width of a bottleneck's inner convs relative to its output.
    """

    block: str
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    stem_width: int
    stem_kernel: int = 3
    stem_stride: int = 1
    stem_pool: bool = False
    bottleneck_ratio: float = 0.25


VARIANTS: dict[str, NFResNetSpec] = {
    # 20K parameters: unit tests and the smoke preset.
    "nf_resnet_nano": NFResNetSpec(
        "basic", depths=(1, 1), widths=(16, 32), strides=(1, 2), stem_width=16, stem_stride=2
    ),
    # 300K parameters, sized for the CPU preset: a stride-2 stem keeps every conv at 14×14
    # or below (XLA:CPU's weight gradients of stride-1 convs at 28×28 are slow), and most of
    # the width sits in the cheap 7×7 stage.
    "nf_resnet_cpu": NFResNetSpec(
        "basic", depths=(1, 2), widths=(32, 96), strides=(1, 2), stem_width=32, stem_stride=2
    ),
    # 11M parameters: a CIFAR-style ResNet-18 layout for 28×28 and 32×32 inputs on an
    # accelerator.
    "nf_resnet_18": NFResNetSpec(
        "basic", depths=(2, 2, 2, 2), widths=(64, 128, 256, 512), strides=(1, 2, 2, 2),
        stem_width=64,
    ),
    # 23.5M parameters: the ImageNet NF-ResNet-50 layout (arXiv:2101.08692; ResNet-50
    # depths and widths, 7×7 stride-2 stem and max pool).
    "nf_resnet_50": NFResNetSpec(
        "bottleneck", depths=(3, 4, 6, 3), widths=(256, 512, 1024, 2048), strides=(1, 2, 2, 2),
        stem_width=64, stem_kernel=7, stem_stride=2, stem_pool=True,
    ),
}


class NFBlock(nnx.Module):
    """A pre-activation normalizer-free residual block, basic or bottleneck.

    Computes ``shortcut + α · skip_gain · f(act(h / β))`` where the shortcut is ``h``, or a
    1×1 conv of ``act(h / β)`` when the stride or the width changes (a transition).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        kind: str,
        stride: int,
        alpha: float,
        beta: float,
        bottleneck_ratio: float,
        activation: str,
        se_ratio: float | None,
        drop_path_rate: float,
        skip_gain_init: float,
        dtype: jnp.dtype | None,
        rngs: nnx.Rngs,
    ):
        """Creates the block.

        Args:
          in_features: input channels.
          out_features: output channels.
          kind: ``"basic"`` or ``"bottleneck"``.
          stride: spatial stride of the block.
          alpha: α, the rate at which the residual stream's variance grows.
          beta: β, the expected standard deviation of the block's input.
          bottleneck_ratio: inner width of a bottleneck block relative to ``out_features``.
          activation: name of the scaled activation.
          se_ratio: squeeze-excite hidden width relative to the branch width; ``None`` for
            no squeeze-excite.
          drop_path_rate: probability of dropping the residual branch (stochastic depth).
          skip_gain_init: initial value of the learnable scalar skip gain (0 is SkipInit).
          dtype: compute dtype.
          rngs: random streams for initialisers and stochastic depth.
        """
        conv = lambda i, o, k, s=1: WSConv(i, o, k, strides=s, dtype=dtype, rngs=rngs)  # noqa: E731
        if kind == "basic":
            self.convs = nnx.List([conv(in_features, out_features, 3, stride),
                                   conv(out_features, out_features, 3)])
        elif kind == "bottleneck":
            inner = max(1, int(out_features * bottleneck_ratio))
            self.convs = nnx.List([conv(in_features, inner, 1), conv(inner, inner, 3, stride),
                                   conv(inner, out_features, 1)])
        else:
            raise ValueError(f"Unknown block kind {kind!r}; use 'basic' or 'bottleneck'.")
        self.is_transition = stride > 1 or in_features != out_features
        self.shortcut = conv(in_features, out_features, 1, stride) if self.is_transition else None
        self.squeeze_excite = (
            SqueezeExcite(out_features, max(1, int(out_features * se_ratio)),
                          activation=activation, dtype=dtype, rngs=rngs)
            if se_ratio else None
        )
        # Dropout broadcast over H, W and C drops whole examples' branches: stochastic depth.
        self.drop_path = nnx.Dropout(drop_path_rate, broadcast_dims=(1, 2, 3), rngs=rngs)
        self.skip_gain = nnx.Param(jnp.full((), skip_gain_init, jnp.float32))
        self.activation = scaled_activation(activation)
        self.alpha = alpha
        self.beta = beta

    def __call__(self, h: jax.Array) -> jax.Array:
        """Applies the block to an NHWC batch."""
        out = self.activation(h / self.beta)
        shortcut = self.shortcut(out) if self.shortcut is not None else h
        for i, conv in enumerate(self.convs):
            out = conv(out if i == 0 else self.activation(out))
        if self.squeeze_excite is not None:
            out = self.squeeze_excite(out)
        out = self.drop_path(out)
        return shortcut + (self.alpha * self.skip_gain[...]).astype(out.dtype) * out


class NFResNet(nnx.Module):
    """A Normalizer-Free ResNet classifier.

    References:
      arXiv:2101.08692 (NF-ResNets); arXiv:2102.06171 (SkipInit gains, stochastic depth,
      dropout before the classifier).
    """

    def __init__(
        self,
        spec: NFResNetSpec,
        num_classes: int,
        *,
        in_features: int = 3,
        alpha: float = 0.2,
        activation: str = "relu",
        se_ratio: float | None = None,
        drop_path_rate: float = 0.0,
        dropout_rate: float = 0.0,
        skip_gain_init: float = 0.0,
        dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
    ):
        """Builds the network.

        Args:
          spec: the layout, e.g. ``VARIANTS["nf_resnet_50"]``.
          num_classes: outputs of the classifier.
          in_features: channels of the input images.
          alpha: α of every residual block.
          activation: name of the scaled activation.
          se_ratio: squeeze-excite hidden width ratio, or ``None`` for no squeeze-excite.
          drop_path_rate: stochastic-depth rate of the last block; block ``i`` of ``n``
            drops its branch with probability ``drop_path_rate · i / n``.
          dropout_rate: dropout rate before the classifier.
          skip_gain_init: initial skip gain of every block (0 is SkipInit; the
            signal-propagation test uses 1 so the branches contribute).
          dtype: compute dtype; parameters are float32 whatever it is.
          rngs: random streams (``params`` and ``dropout``).
        """
        self.stem = WSConv(in_features, spec.stem_width, spec.stem_kernel,
                           strides=spec.stem_stride, dtype=dtype, rngs=rngs)
        self.stem_pool = spec.stem_pool
        num_blocks = sum(spec.depths)
        blocks = []
        expected_var = 1.0  # The stem's WS conv keeps an N(0, 1) input's unit variance.
        width = spec.stem_width
        for depth, out_width, stage_stride in zip(
            spec.depths, spec.widths, spec.strides, strict=True
        ):
            for i in range(depth):
                stride = stage_stride if i == 0 else 1
                block = NFBlock(
                    width, out_width, kind=spec.block, stride=stride, alpha=alpha,
                    beta=expected_var**0.5, bottleneck_ratio=spec.bottleneck_ratio,
                    activation=activation, se_ratio=se_ratio,
                    drop_path_rate=drop_path_rate * len(blocks) / num_blocks,
                    skip_gain_init=skip_gain_init, dtype=dtype, rngs=rngs,
                )
                # A transition's shortcut sees the unit-variance act(h / β): the variance resets.
                expected_var = (1.0 if block.is_transition else expected_var) + alpha**2
                blocks.append(block)
                width = out_width
        self.blocks = nnx.List(blocks)
        self.activation = scaled_activation(activation)
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
        self.head = nnx.Linear(width, num_classes, kernel_init=nnx.initializers.zeros,
                               dtype=dtype, rngs=rngs)

    def residual_stream(self, x: jax.Array) -> list[jax.Array]:
        """Returns the residual stream after the stem and after every block.

        This makes signal propagation observable (the ``signal_metrics`` of the NFNets code):
        at initialisation, on N(0, 1) inputs, the average channel variance of entry ``i + 1``
        should follow :meth:`expected_variances`.

        Args:
          x: NHWC images.

        Returns:
          ``len(blocks) + 1`` NHWC activations.
        """
        h = self.stem(x)
        if self.stem_pool:
            h = nnx.max_pool(h, window_shape=(3, 3), strides=(2, 2), padding="SAME")
        stream = [h]
        for block in self.blocks:
            h = block(h)
            stream.append(h)
        return stream

    def expected_variances(self) -> list[float]:
        """Returns the analytic variance of the residual stream after every block."""
        return [block.beta**2 for block in self.blocks[1:]] + [self._last_expected_var()]

    def _last_expected_var(self) -> float:
        last = self.blocks[-1]
        return (1.0 if last.is_transition else last.beta**2) + last.alpha**2

    def __call__(self, x: jax.Array) -> jax.Array:
        """Returns the logits (float32) for a batch of NHWC images."""
        h = self.residual_stream(x)[-1]
        features = jnp.mean(self.activation(h), axis=(1, 2))
        return self.head(self.dropout(features)).astype(jnp.float32)
