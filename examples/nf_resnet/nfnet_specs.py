"""DeepMind's NFNet-F0…F7 and NF-ResNet-50…200 as rows of one table.

One :class:`NFNetSpec` describes a whole network: its four stages (width, depth, group
width, expansion, big width), its stem, its block design, its head, its regularisers and
its image sizes. :data:`VARIANTS` holds DeepMind's released sizes; another size is another
row, built directly or from DeepMind's own variant-table entry with :func:`nfnet_spec` or
:func:`nf_resnet_spec`. :class:`~examples.nf_resnet.nfnet.NFNet` builds any row.

References:
  Brock, De, Smith, *Characterizing signal propagation to close the performance gap in
  unnormalized ResNets*, ICLR 2021, arXiv:2101.08692 (NF-ResNets).
  Brock, De, Smith, Simonyan, *High-Performance Large-Scale Image Recognition Without
  Normalization*, ICML 2021, arXiv:2102.06171 (NFNets; table 1 and appendix C).
  google-deepmind/deepmind-research, ``nfnets/`` (``base.nfnet_params``, ``nfnet.py``,
  ``nf_resnet.py``): the variant table, the experiments' regularisation rates.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

STEMS = ("deep", "resnet")


@dataclasses.dataclass(frozen=True)
class NFNetSpec:
    """The layout of one NFNet or NF-ResNet variant.

    Attributes:
      widths: output channels of each stage.
      depths: blocks in each stage.
      group_widths: channels per group of each stage's 3×3 convolutions (``None``: one
        group, an ordinary convolution as in NF-ResNets).
      expansions: width of each stage's inner convolutions relative to the block's output
        (``big_widths``) or input channels, rounded down to a multiple of the group width.
      big_widths: whether the inner width follows the output (ResNet style) or the input.
      stem: ``"deep"``: four 3×3 convs of 16, 32, 64 and ``stem_width`` channels, strides
        2, 1, 1, 2, activations between them (NFNet); ``"resnet"``: a 7×7 stride-2 conv and
        a 3×3 stride-2 max pool (NF-ResNet).
      stem_width: channels of the stem's output.
      two_convs: two grouped 3×3 convs per block (NFNet) rather than one (NF-ResNet).
      pool_shortcut: a strided block's shortcut average-pools 2×2 before its 1×1 conv
        (NFNet) rather than striding the 1×1 conv (NF-ResNet).
      se_ratio: squeeze-excite hidden width relative to the block's output (``None``: no
        squeeze-excite).
      final_conv_mult: a 1×1 conv to this multiple of the last width before the pool
        (``None``: none, as in NF-ResNets).
      alpha: α, the rate at which the residual stream's variance grows per block.
      activation: name of the scaled activation (``layers.ACTIVATION_GAMMAS``).
      stochdepth_rate: the paper's stochastic-depth rate of the last block.
      drop_rate: the paper's dropout rate before the classifier.
      train_imsize: the paper's training image side.
      test_imsize: the paper's evaluation image side.
      strides: stride of each stage's first block.
    """

    widths: tuple[int, ...]
    depths: tuple[int, ...]
    group_widths: tuple[int | None, ...]
    expansions: tuple[float, ...]
    big_widths: tuple[bool, ...]
    stem: str
    stem_width: int
    two_convs: bool
    pool_shortcut: bool
    se_ratio: float | None
    final_conv_mult: float | None
    alpha: float
    activation: str
    stochdepth_rate: float
    drop_rate: float
    train_imsize: int
    test_imsize: int
    strides: tuple[int, ...] = (1, 2, 2, 2)

    def __post_init__(self) -> None:
        stages = {name: len(getattr(self, name)) for name in
                  ("widths", "depths", "group_widths", "expansions", "big_widths", "strides")}
        if len(set(stages.values())) != 1:
            raise ValueError(f"NFNetSpec: every per-stage field needs one entry per stage; "
                             f"got lengths {stages}.")
        if self.stem not in STEMS:
            raise ValueError(f"NFNetSpec: stem {self.stem!r} is not one of {STEMS}.")


def nfnet_spec(row: Mapping[str, Any], *, width: float = 1.0, se_ratio: float | None = 0.5,
               alpha: float = 0.2, activation: str = "gelu", final_conv_mult: float = 2,
               use_two_convs: bool = True, stochdepth_rate: float = 0.25) -> NFNetSpec:
    """An NFNet from an entry of DeepMind's ``nfnet_params`` and its constructor settings.

    Args:
      row: the entry: ``width``, ``depth``, ``train_imsize``, ``test_imsize``, ``drop_rate``
        and optionally ``group_width`` (default 128 per stage), ``expansion`` (0.5) and
        ``big_width`` (True), as in DeepMind's table.
      width: multiplier of every stage's width.
      se_ratio: squeeze-excite ratio.
      alpha: α.
      activation: the activation's name.
      final_conv_mult: the final conv's width relative to the last stage's.
      use_two_convs: two grouped 3×3 convs per block.
      stochdepth_rate: stochastic-depth rate of the last block (0.25 in DeepMind's NFNet
        experiments).

    Returns:
      The row of the network DeepMind's ``NFNet`` builds with these arguments.
    """
    stages = len(row["width"])
    return NFNetSpec(
        widths=tuple(int(w * width) for w in row["width"]), depths=tuple(row["depth"]),
        group_widths=tuple(row.get("group_width", [128] * stages)),
        expansions=tuple(row.get("expansion", [0.5] * stages)),
        big_widths=tuple(row.get("big_width", [True] * stages)),
        stem="deep", stem_width=row["width"][0] // 2, two_convs=use_two_convs,
        pool_shortcut=True, se_ratio=se_ratio, final_conv_mult=final_conv_mult, alpha=alpha,
        activation=activation, stochdepth_rate=stochdepth_rate, drop_rate=row["drop_rate"],
        train_imsize=row["train_imsize"], test_imsize=row["test_imsize"])


def nf_resnet_spec(depths: Sequence[int], *, width: int = 4, alpha: float = 0.2,
                   activation: str = "relu", use_se: bool = False, se_ratio: float = 0.25,
                   stochdepth_rate: float = 0.1, drop_rate: float = 0.0,
                   imsize: int = 224) -> NFNetSpec:
    """A pre-activation bottleneck NF-ResNet with DeepMind's ``NF_ResNet`` settings.

    Args:
      depths: blocks per stage, e.g. ``(3, 4, 6, 3)`` for NF-ResNet-50.
      width: multiplier of the stages' widths ``(64, 128, 256, 512)`` (4 gives ResNet's
        256…2048 channels) and of the stem's 16 channels.
      alpha: α.
      activation: the activation's name.
      use_se: squeeze-excite in every block.
      se_ratio: its hidden width relative to the block's output, when ``use_se``.
      stochdepth_rate: stochastic-depth rate of the last block (the code's default).
      drop_rate: dropout before the classifier (DeepMind's ResNet experiments use 0).
      imsize: training and evaluation image side.

    Returns:
      The row of the network DeepMind's ``NF_ResNet`` builds with these arguments.
    """
    stages = len(depths)
    return NFNetSpec(
        widths=tuple(w * width for w in (64, 128, 256, 512)), depths=tuple(depths),
        group_widths=(None,) * stages, expansions=(0.25,) * stages,
        big_widths=(True,) * stages, stem="resnet", stem_width=16 * width, two_convs=False,
        pool_shortcut=False, se_ratio=se_ratio if use_se else None, final_conv_mult=None,
        alpha=alpha, activation=activation, stochdepth_rate=stochdepth_rate,
        drop_rate=drop_rate, train_imsize=imsize, test_imsize=imsize)


# DeepMind's F-series: depths (1, 2, 6, 3) × (N + 1), and per variant the image sizes and
# dropout rate (arXiv:2102.06171 table 1; ``base.nfnet_params``).
_F_SERIES = {
    0: ((1, 2, 6, 3), 192, 256, 0.2),
    1: ((2, 4, 12, 6), 224, 320, 0.3),
    2: ((3, 6, 18, 9), 256, 352, 0.4),
    3: ((4, 8, 24, 12), 320, 416, 0.4),
    4: ((5, 10, 30, 15), 384, 512, 0.5),
    5: ((6, 12, 36, 18), 416, 544, 0.5),
    6: ((7, 14, 42, 21), 448, 576, 0.5),
    7: ((8, 16, 48, 24), 480, 608, 0.5),
}

_RESNET_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3),
                  200: (3, 24, 36, 3)}

VARIANTS: dict[str, NFNetSpec] = {
    **{f"nfnet_f{n}": nfnet_spec({"width": (256, 512, 1536, 1536), "depth": depth,
                                  "train_imsize": train, "test_imsize": test,
                                  "drop_rate": drop})
       for n, (depth, train, test, drop) in _F_SERIES.items()},
    **{f"nf_resnet_{n}": nf_resnet_spec(depth) for n, depth in _RESNET_DEPTHS.items()},
}
