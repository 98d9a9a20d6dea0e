"""Fan-in axes read from a ``flax.nnx`` model's own module configuration.

A kernel's shape alone cannot say which axes are its fan-in: ``(8, 2, 4)`` is a
query kernel ``(in, heads, dim)`` reducing axis 0, or a Conv1D kernel
``(width, in, out)`` reducing ``(0, 1)``. The modules know, so
:func:`nnx_unit_axes` asks them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flax import nnx

from agc_optax import _paths, _unit_axes

Axes = tuple[int, ...]


def _all_axes(ndim: int) -> Axes:
    return tuple(range(ndim))


def _all_but(ndim: int, kept: int) -> Axes:
    kept %= ndim
    return tuple(a for a in range(ndim) if a != kept)


def _linear_general_rules(module: nnx.LinearGeneral) -> Iterator[tuple[str, Axes]]:
    # kernel: (*batch, *in_features, *out_features); bias: (*batch, *out_features).
    num_batch, num_in = len(module.batch_axis), len(module.in_features)
    yield "kernel", tuple(range(num_batch, num_batch + num_in))
    if getattr(module, "bias", None) is not None:
        yield "bias", _all_axes(num_batch + len(module.out_features))


def _einsum_rules(module: nnx.Einsum) -> Iterator[tuple[str, Axes]]:
    # The kernel is the einsum's right operand; its letters absent from the
    # output are contracted, i.e. its fan-in.
    inputs, output = module.einsum_str.split("->")
    kernel_letters = inputs.split(",")[1]
    yield "kernel", tuple(i for i, c in enumerate(kernel_letters) if c not in output)
    bias = getattr(module, "bias", None)
    if bias is not None:
        yield "bias", _all_axes(len(bias.shape))


def _conv_rules(module: nnx.Conv) -> Iterator[tuple[str, Axes]]:
    # kernel: (*spatial, in // groups, out); every axis but the output feature.
    ndim = len(module.kernel_shape)
    yield "kernel", _all_but(ndim, -1)
    yield "bias", (0,)


def _conv_transpose_rules(module: nnx.ConvTranspose) -> Iterator[tuple[str, Axes]]:
    # transpose_kernel=True stores (*spatial, out, in): the output axis is -2.
    ndim = len(module.kernel_shape)
    yield "kernel", _all_but(ndim, -2 if module.transpose_kernel else -1)
    yield "bias", (0,)


def _linear_rules(module: nnx.Linear) -> Iterator[tuple[str, Axes]]:
    yield "kernel", (0,)
    yield "bias", (0,)


def _embed_rules(module: nnx.Embed) -> Iterator[tuple[str, Axes]]:
    # One unit per embedding row: each row is a separate output of the lookup.
    yield "embedding", (1,)


# Order matters only for subclasses: the first matching type wins.
_MODULE_RULES = (
    (nnx.LinearGeneral, _linear_general_rules),
    (nnx.Einsum, _einsum_rules),
    (nnx.ConvTranspose, _conv_transpose_rules),
    (nnx.Conv, _conv_rules),
    (nnx.Linear, _linear_rules),
    (nnx.Embed, _embed_rules),
)


class NNXUnitAxes:
    """A ``unit_axes`` callable holding each known module parameter's fan-in axes.

    Parameters of modules it does not know fall back to
    :func:`agc_optax.default_unit_axes`. Built by :func:`nnx_unit_axes`.
    """

    def __init__(self, table: dict[str, Axes]):
        self.table = dict(table)

    def __call__(self, path: str | _paths.KeyPath, leaf: Any = _unit_axes._MISSING) -> Axes:
        """Returns the fan-in axes of the parameter at ``path`` (path string or key path)."""
        if leaf is _unit_axes._MISSING:
            raise TypeError(
                f"nnx_unit_axes(...) was called with one argument. {_unit_axes.INJECT_HINT}"
            )
        path = _paths.as_path_str(path)
        axes = self.table.get(path)
        if axes is None:
            return _unit_axes.default_unit_axes(path, leaf)
        ndim = _unit_axes.leaf_ndim(leaf)
        if any(a >= ndim for a in axes):
            raise ValueError(
                f"nnx_unit_axes: leaf {path!r} has rank {ndim} but its module implies fan-in "
                f"axes {axes}. Was the unit_axes built from a different model? Rebuild it "
                "with nnx_unit_axes(model) for the model being trained."
            )
        return axes

    def __repr__(self) -> str:
        return f"NNXUnitAxes({len(self.table)} parameters)"


def nnx_unit_axes(model: nnx.Module) -> NNXUnitAxes:
    """Builds a ``unit_axes`` callable from a ``flax.nnx`` model's modules.

    Each kernel gets its true fan-in from its module's configuration:
    ``nnx.Linear`` reduces axis 0; ``nnx.LinearGeneral`` its input-feature axes
    (so ``nnx.MultiHeadAttention``'s query/key/value kernels ``(in, heads,
    dim)`` reduce axis 0, its output kernel ``(heads, dim, out)`` reduces
    ``(0, 1)``, and each ``(heads, dim)`` bias is one unit); ``nnx.Einsum`` its
    contracted kernel axes; ``nnx.Conv`` and ``nnx.ConvTranspose`` (any rank,
    any grouping, either kernel layout) every axis but the output feature;
    ``nnx.Embed`` the feature axis (one unit per row). Other parameters use the
    default rule. The same answer is given for the paths seen at ``init``
    (nnx Variables) and at ``update`` (raw arrays).

    Args:
        model: the model whose parameters will be clipped.

    Returns:
        A callable ``(path, leaf) -> axes`` to pass as ``agc(unit_axes=...)``.
    """
    table: dict[str, Axes] = {}
    for module_path, module in nnx.iter_modules(model):
        for module_type, rules in _MODULE_RULES:
            if isinstance(module, module_type):
                for name, axes in rules(module):
                    if getattr(module, name, None) is not None:
                        table[_paths.join_keys((*module_path, name))] = axes
                break
    return NNXUnitAxes(table)
