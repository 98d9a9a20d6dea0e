"""Pre-activation ResNets in Flax NNX: Normalizer-Free (NF-ResNet) and BatchNorm.

Both families share one layout (:class:`ResNetSpec`, rows of :data:`VARIANTS`, not
subclasses): the stem, the stages of basic or bottleneck blocks, the shortcut convolution
of a transition block, and the classifier (:class:`ResNet`). They differ only in how a
block keeps its signal in range.

An NF-ResNet block computes ``h + α · skip_gain · f(h / β)``: β is the *expected*
standard deviation of the residual stream ``h``, tracked analytically as
``Var(h_{i+1}) = Var(h_i) + α²`` and reset to ``1 + α²`` at a transition block, whose
shortcut is a convolution of the activated ``h / β``. Every convolution is a scaled
weight-standardised :class:`~examples.nf_resnet.layers.WSConv`; there is no normalization
layer anywhere. The BatchNorm ResNet (:mod:`examples.nf_resnet.bn_resnet`) is the
standard pre-activation ResNet with the same layout.

References:
  He, Zhang, Ren, Sun, *Identity Mappings in Deep Residual Networks*, ECCV 2016,
  arXiv:1603.05027 (the pre-activation block).
  Brock, De, Smith, *Characterizing signal propagation to close the performance gap in
  unnormalized ResNets*, ICLR 2021, arXiv:2101.08692.
  Brock, De, Smith, Simonyan, *High-Performance Large-Scale Image Recognition Without
  Normalization*, ICML 2021, arXiv:2102.06171.
"""

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from examples.nf_resnet.layers import SqueezeExcite, WSConv, scaled_activation


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    """The layout of one ResNet variant.

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
      normalization: ``"none"`` for an NF-ResNet (:class:`NFResNet`), ``"batch"`` for the
        BatchNorm ResNet (:class:`~examples.nf_resnet.bn_resnet.BNResNet`).
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
    normalization: str = "none"


_LAYOUTS: dict[str, ResNetSpec] = {
    # 20K parameters: unit tests and the smoke preset.
    "nano": ResNetSpec(
        "basic", depths=(1, 1), widths=(16, 32), strides=(1, 2), stem_width=16, stem_stride=2
    ),
    # 300K parameters, sized for the CPU preset: a stride-2 stem keeps every conv at 14×14
    # or below (XLA:CPU's weight gradients of stride-1 convs at 28×28 are slow), and most of
    # the width sits in the cheap 7×7 stage.
    "cpu": ResNetSpec(
        "basic", depths=(1, 2), widths=(32, 96), strides=(1, 2), stem_width=32, stem_stride=2
    ),
    # 11M parameters: a CIFAR-style ResNet-18 layout for 28×28 and 32×32 inputs on an
    # accelerator (the GPU preset's size).
    "18": ResNetSpec(
        "basic", depths=(2, 2, 2, 2), widths=(64, 128, 256, 512), strides=(1, 2, 2, 2),
        stem_width=64,
    ),
}

# The BatchNorm ResNet-50: ResNet-50's depths and widths, 7×7 stride-2
# stem and max pool; the convolutions of DeepMind's NF-ResNet-50 (``nfnet_specs``).
_BN_RESNET_50 = ResNetSpec(
    "bottleneck", depths=(3, 4, 6, 3), widths=(256, 512, 1024, 2048), strides=(1, 2, 2, 2),
    stem_width=64, stem_kernel=7, stem_stride=2, stem_pool=True, normalization="batch",
)

# Every small layout twice, ``nf_resnet_<size>`` and ``bn_resnet_<size>`` (BatchNorm), and
# ``bn_resnet_50``. DeepMind's NF-ResNet-50…200 and NFNets are ``nfnet_specs.VARIANTS``.
VARIANTS: dict[str, ResNetSpec] = {
    **{f"nf_resnet_{size}": spec for size, spec in _LAYOUTS.items()},
    **{f"bn_resnet_{size}": dataclasses.replace(spec, normalization="batch")
       for size, spec in _LAYOUTS.items()},
    "bn_resnet_50": _BN_RESNET_50,
    # This class on ResNet-50's layout, for ``benchmarks/bench_agc.py``'s ResNet-50-sized
    # tree. ``--model nf_resnet_50`` builds DeepMind's NF-ResNet-50 (``nfnet_specs``).
    "nf_resnet_50": dataclasses.replace(_BN_RESNET_50, normalization="none"),
}


class BlockLayout(NamedTuple):
    """Where one residual block sits: its input and output widths and its stride."""

    in_features: int
    out_features: int
    stride: int

    @property
    def is_transition(self) -> bool:
        """Whether the shortcut is a 1×1 convolution (the stride or the width changes)."""
        return self.stride > 1 or self.in_features != self.out_features


class ConvShape(NamedTuple):
    """One convolution of a residual branch."""

    in_features: int
    out_features: int
    kernel_size: int
    stride: int


def block_layouts(spec: ResNetSpec) -> list[BlockLayout]:
    """Returns every block's widths and stride, stage after stage.

    Args:
      spec: the variant's layout.

    Returns:
      ``sum(spec.depths)`` layouts; a stage's first block has the stage's stride.
    """
    layouts, width = [], spec.stem_width
    for depth, out_width, stage_stride in zip(spec.depths, spec.widths, spec.strides,
                                              strict=True):
        for i in range(depth):
            layouts.append(BlockLayout(width, out_width, stage_stride if i == 0 else 1))
            width = out_width
    return layouts


def branch_convs(kind: str, layout: BlockLayout, bottleneck_ratio: float) -> list[ConvShape]:
    """Returns the convolutions of a block's residual branch, in order.

    Args:
      kind: ``"basic"`` (3×3, 3×3) or ``"bottleneck"`` (1×1, 3×3, 1×1); the stride sits
        on the (first) 3×3 conv.
      layout: the block's widths and stride.
      bottleneck_ratio: inner width of a bottleneck relative to ``layout.out_features``.

    Returns:
      The shapes of the branch's convolutions.
    """
    cin, cout, stride = layout
    if kind == "basic":
        return [ConvShape(cin, cout, 3, stride), ConvShape(cout, cout, 3, 1)]
    if kind == "bottleneck":
        inner = max(1, int(cout * bottleneck_ratio))
        return [ConvShape(cin, inner, 1, 1), ConvShape(inner, inner, 3, stride),
                ConvShape(inner, cout, 1, 1)]
    raise ValueError(f"Unknown block kind {kind!r}; use 'basic' or 'bottleneck'.")


def check_normalization(spec: ResNetSpec, expected: str, model: str) -> None:
    """Raises a ValueError when ``spec`` belongs to the other family of models."""
    if spec.normalization != expected:
        raise ValueError(f"{model} builds normalization={expected!r} layouts, not "
                         f"{spec.normalization!r}; pick a matching key of models.VARIANTS.")


class ResNet(nnx.Module):
    """What both families share: stem, optional max pool, blocks, pooled classifier.

    A subclass's ``__init__`` creates ``stem`` and ``blocks``, then calls
    :meth:`init_head`. The classifier sees ``act(norm(h))`` averaged over space, where
    ``h`` is the last residual stream and ``norm`` is the identity in an NF-ResNet.
    """

    stem: nnx.Module
    blocks: nnx.List

    def init_head(self, spec: ResNetSpec, width: int, num_classes: int, *,
                  final_norm: nnx.Module | None, activation: Callable[[jax.Array], jax.Array],
                  dropout_rate: float, dtype: jnp.dtype | None, rngs: nnx.Rngs) -> None:
        """Creates what follows the blocks: the final norm, the activation, the head.

        Args:
          spec: the layout (its ``stem_pool``, applied in :meth:`residual_stream`).
          width: channels of the last block.
          num_classes: outputs of the classifier.
          final_norm: normalization of the last residual stream, or ``None``.
          activation: activation before the average pool.
          dropout_rate: dropout rate before the classifier.
          dtype: compute dtype.
          rngs: random streams (``params`` and ``dropout``).
        """
        self.stem_pool = spec.stem_pool
        self.final_norm = final_norm
        self.activation = activation
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
        # A zero classifier: every logit starts at 0 (arXiv:2102.06171).
        self.head = nnx.Linear(width, num_classes, kernel_init=nnx.initializers.zeros,
                               dtype=dtype, rngs=rngs)

    def residual_stream(self, x: jax.Array) -> list[jax.Array]:
        """Returns the residual stream after the stem and after every block.

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

    def __call__(self, x: jax.Array) -> jax.Array:
        """Returns the logits (float32) for a batch of NHWC images."""
        h = self.residual_stream(x)[-1]
        if self.final_norm is not None:
            h = self.final_norm(h)
        features = jnp.mean(self.activation(h), axis=(1, 2))
        return self.head(self.dropout(features)).astype(jnp.float32)


class NFBlock(nnx.Module):
    """A pre-activation normalizer-free residual block, basic or bottleneck.

    Computes ``shortcut + α · skip_gain · f(act(h / β))`` where the shortcut is ``h``, or a
    1×1 conv of ``act(h / β)`` when the stride or the width changes (a transition).
    """

    def __init__(
        self,
        layout: BlockLayout,
        *,
        kind: str,
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
          layout: input and output channels and the stride of the block.
          kind: ``"basic"`` or ``"bottleneck"``.
          alpha: α, the rate at which the residual stream's variance grows.
          beta: β, the expected standard deviation of the block's input.
          bottleneck_ratio: inner width of a bottleneck block relative to its output.
          activation: name of the scaled activation.
          se_ratio: squeeze-excite hidden width relative to the branch width; ``None`` for
            no squeeze-excite.
          drop_path_rate: probability of dropping the residual branch (stochastic depth).
          skip_gain_init: initial value of the learnable scalar skip gain (0 is SkipInit).
          dtype: compute dtype.
          rngs: random streams for initialisers and stochastic depth.
        """
        self.convs = nnx.List([
            WSConv(c.in_features, c.out_features, c.kernel_size, strides=c.stride, dtype=dtype,
                   rngs=rngs)
            for c in branch_convs(kind, layout, bottleneck_ratio)
        ])
        self.is_transition = layout.is_transition
        self.shortcut = (WSConv(layout.in_features, layout.out_features, 1,
                                strides=layout.stride, dtype=dtype, rngs=rngs)
                         if self.is_transition else None)
        self.squeeze_excite = squeeze_excite(layout.out_features, se_ratio, activation, dtype,
                                             rngs)
        self.drop_path = drop_path(drop_path_rate, rngs)
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


def squeeze_excite(features: int, se_ratio: float | None, activation: str,
                   dtype: jnp.dtype | None, rngs: nnx.Rngs) -> SqueezeExcite | None:
    """Returns a block's squeeze-excite layer, or ``None`` when ``se_ratio`` is unset."""
    if not se_ratio:
        return None
    return SqueezeExcite(features, max(1, int(features * se_ratio)), activation=activation,
                         dtype=dtype, rngs=rngs)


def drop_path(rate: float, rngs: nnx.Rngs) -> nnx.Dropout:
    """Stochastic depth: dropout broadcast over H, W and C drops whole examples' branches."""
    return nnx.Dropout(rate, broadcast_dims=(1, 2, 3), rngs=rngs)


def drop_path_rates(spec: ResNetSpec, last_rate: float) -> list[float]:
    """Block ``i`` of ``n`` drops its branch with probability ``last_rate · i / n``."""
    num_blocks = sum(spec.depths)
    return [last_rate * i / num_blocks for i in range(num_blocks)]


class NFResNet(ResNet):
    """A Normalizer-Free ResNet classifier.

    References:
      arXiv:2101.08692 (NF-ResNets); arXiv:2102.06171 (SkipInit gains, stochastic depth,
      dropout before the classifier).
    """

    def __init__(
        self,
        spec: ResNetSpec,
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
          spec: the layout, e.g. ``VARIANTS["nf_resnet_18"]``.
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
        check_normalization(spec, "none", "NFResNet")
        self.stem = WSConv(in_features, spec.stem_width, spec.stem_kernel,
                           strides=spec.stem_stride, dtype=dtype, rngs=rngs)
        blocks = []
        expected_var = 1.0  # The stem's WS conv keeps an N(0, 1) input's unit variance.
        for layout, rate in zip(block_layouts(spec), drop_path_rates(spec, drop_path_rate),
                                strict=True):
            blocks.append(NFBlock(
                layout, kind=spec.block, alpha=alpha, beta=expected_var**0.5,
                bottleneck_ratio=spec.bottleneck_ratio, activation=activation,
                se_ratio=se_ratio, drop_path_rate=rate, skip_gain_init=skip_gain_init,
                dtype=dtype, rngs=rngs,
            ))
            # A transition's shortcut sees the unit-variance act(h / β): the variance resets.
            expected_var = (1.0 if layout.is_transition else expected_var) + alpha**2
        self.blocks = nnx.List(blocks)
        self.init_head(spec, spec.widths[-1], num_classes, final_norm=None,
                       activation=scaled_activation(activation), dropout_rate=dropout_rate,
                       dtype=dtype, rngs=rngs)

    def expected_variances(self) -> list[float]:
        """Returns the analytic variance of the residual stream after every block.

        At initialisation, on N(0, 1) inputs, the average channel variance of
        :meth:`residual_stream`'s entry ``i + 1`` should follow it (the ``signal_metrics``
        of the NFNets code).
        """
        return [block.beta**2 for block in self.blocks[1:]] + [self._last_expected_var()]

    def _last_expected_var(self) -> float:
        last = self.blocks[-1]
        return (1.0 if last.is_transition else last.beta**2) + last.alpha**2
