"""Fan-in axes read from a ``flax.nnx`` model's own module configuration.

A kernel's shape alone cannot say which axes are its fan-in: ``(8, 2, 4)`` is a
query kernel ``(in, heads, dim)`` reducing axis 0, or a Conv1D kernel
``(width, in, out)`` reducing ``(0, 1)``. The modules know, so
:func:`nnx_unit_axes` asks them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

from agc_optax import _compat, _missing_leaf, _paths, _unit_axes

if TYPE_CHECKING:
    from flax import nnx

Axes = tuple[int, ...]
Shape = tuple[int, ...]


# Each rule yields (attribute, fan-in axes, the shape the module's configuration
# gives that parameter), for the parameters the module has.
Rule = Iterator[tuple[str, Axes, Shape]]


def _all_axes(ndim: int) -> Axes:
    return tuple(range(ndim))


def _all_but(ndim: int, kept: int) -> Axes:
    kept %= ndim
    return tuple(a for a in range(ndim) if a != kept)


def _linear_general_rules(module: nnx.LinearGeneral) -> Rule:
    # kernel: (*batch, *in_features, *out_features); bias: (*batch, *out_features).
    batch, inputs = tuple(module.batch_axis.values()), tuple(module.in_features)
    outputs = tuple(module.out_features)
    yield "kernel", tuple(range(len(batch), len(batch) + len(inputs))), batch + inputs + outputs
    yield "bias", _all_axes(len(batch) + len(outputs)), batch + outputs


def _einsum_rules(module: nnx.Einsum) -> Rule:
    # The kernel is the einsum's right operand; its letters absent from the
    # output are contracted, i.e. its fan-in.
    inputs, output = module.einsum_str.replace(" ", "").split("->")
    kernel_letters = inputs.split(",")[1]
    fan_in = tuple(i for i, c in enumerate(kernel_letters) if c not in output)
    yield "kernel", fan_in, tuple(module.kernel_shape)
    if module.bias_shape is not None:
        yield "bias", _all_axes(len(module.bias_shape)), tuple(module.bias_shape)


def _conv_rules(module: nnx.Conv) -> Rule:
    # kernel: (*spatial, in // groups, out); every axis but the output feature.
    shape = tuple(module.kernel_shape)
    yield "kernel", _all_but(len(shape), -1), shape
    yield "bias", (0,), (module.out_features,)


def _conv_transpose_rules(module: nnx.ConvTranspose) -> Rule:
    # transpose_kernel=True stores (*spatial, out, in): the output axis is -2.
    shape = tuple(module.kernel_shape)
    yield "kernel", _all_but(len(shape), -2 if module.transpose_kernel else -1), shape
    yield "bias", (0,), (module.out_features,)


def _linear_rules(module: nnx.Linear) -> Rule:
    yield "kernel", (0,), (module.in_features, module.out_features)
    yield "bias", (0,), (module.out_features,)


def _embed_rules(module: nnx.Embed) -> Rule:
    # One unit per embedding row: each row is a separate output of the lookup.
    yield "embedding", (1,), (module.num_embeddings, module.features)


def _norm_rules(module: nnx.LayerNorm | nnx.RMSNorm | nnx.BatchNorm) -> Rule:
    # One scale and one offset per feature; each vector is one unit.
    yield "scale", (0,), (module.num_features,)
    yield "bias", (0,), (module.num_features,)


def _embeddings(inner: Shape, outer: Shape) -> list[tuple[int, ...]]:
    """Every way ``inner`` sits in ``outer`` as a subsequence: the positions of its axes."""
    return [
        positions
        for positions in itertools.combinations(range(len(outer)), len(inner))
        if all(outer[p] == n for p, n in zip(positions, inner, strict=True))
    ]


def _stacked_axes(path: str, module: nnx.Module, axes: Axes, expected: Shape, shape: Shape) -> Axes:
    """Fan-in axes of a parameter whose shape may have leading stacked-layer axes.

    ``nnx.vmap``/``nnx.scan`` over layer constructors stack each parameter
    along new leading axes (their default ``out_axes=0``); those axes index
    layers, so they are never fan-in. Anything that is not unambiguously that
    is refused rather than guessed.
    """
    if shape == expected:
        return axes
    stacked = len(shape) - len(expected)
    if stacked > 0 and _embeddings(expected, shape) == [tuple(range(stacked, len(shape)))]:
        return tuple(a + stacked for a in axes)
    raise ValueError(
        f"nnx_unit_axes: parameter {path!r} of {type(module).__name__} has shape {shape}, "
        f"but the module's configuration gives {expected}, and the extra axes cannot be told "
        "apart as leading stacked-layer axes (as nnx.vmap/nnx.scan with out_axes=0 make). "
        "Read the fan-in from the forward pass instead: "
        "agc(unit_axes=infer_unit_axes(forward, model, *example_inputs))."
    )


def _module_rules(nnx: ModuleType) -> tuple[tuple[type, Callable[[Any], Rule]], ...]:
    # Order matters only for subclasses: the first matching type wins.
    return (
        (nnx.LinearGeneral, _linear_general_rules),
        (nnx.Einsum, _einsum_rules),
        (nnx.ConvTranspose, _conv_transpose_rules),
        (nnx.Conv, _conv_rules),
        (nnx.Linear, _linear_rules),
        (nnx.Embed, _embed_rules),
        (nnx.LayerNorm, _norm_rules),
        (nnx.RMSNorm, _norm_rules),
        (nnx.BatchNorm, _norm_rules),
    )


class NNXUnitAxes:
    """A ``unit_axes`` callable holding each known module parameter's fan-in axes.

    Parameters of modules it does not know fall back to
    :func:`agc_optax.default_unit_axes`. A leaf that is no parameter of the
    model raises, naming the nearest parameters, unless the table was made with
    :meth:`with_fallback`. Built by :func:`nnx_unit_axes`.

    Attributes:
        table: fan-in axes of each parameter of a known module, by path string.
        params: the path strings of all the model's parameters.
        fallback: the rule for leaves that are no parameter, or None to raise.
    """

    def __init__(
        self,
        table: dict[str, Axes],
        params: Collection[str] | None = None,
        fallback: Callable[..., Any] | None = None,
    ):
        self.table = dict(table)
        self.params = frozenset(params or ()) | frozenset(self.table)
        self.fallback = fallback

    def with_fallback(self, rule: Callable[..., Any] = _unit_axes.default_unit_axes) -> NNXUnitAxes:
        """The same table, giving leaves that are no parameter ``rule(path, leaf)``.

        Args:
            rule: the ``(path, leaf) -> axes`` rule for leaves the model does not hold.

        Returns:
            A new :class:`NNXUnitAxes`.
        """
        return NNXUnitAxes(self.table, self.params, fallback=rule)

    def __call__(self, path: str | _paths.KeyPath, leaf: Any = _unit_axes._MISSING) -> Axes:
        """Returns the fan-in axes of the parameter at ``path`` (path string or key path)."""
        if leaf is _unit_axes._MISSING:
            raise TypeError(
                f"nnx_unit_axes(...) was called with one argument. {_unit_axes.INJECT_HINT}"
            )
        path = _paths.as_path_str(path)
        axes = self.table.get(path)
        if axes is None:
            if path in self.params:
                return _unit_axes.default_unit_axes(path, leaf)
            if self.fallback is None:
                raise _missing_leaf.missing_leaf_error("nnx_unit_axes", path, self.params)
            return self.fallback(path, leaf)
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


def _module_table(nnx: ModuleType, model: Any) -> tuple[dict[str, Axes], list[str]]:
    """Fan-in axes of every parameter of a known module, and the paths of stacked ones."""
    table: dict[str, Axes] = {}
    stacked = []
    module_rules = _module_rules(nnx)
    for module_path, module in _compat.iter_modules(nnx, model):
        rules = next((r for t, r in module_rules if isinstance(module, t)), None)
        for name, axes, expected in rules(module) if rules else ():
            param = getattr(module, name, None)
            if param is None:
                continue
            path = _paths.join_keys((*module_path, name))
            shape = tuple(param.shape)
            table[path] = _stacked_axes(path, module, axes, tuple(expected), shape)
            if shape != tuple(expected):
                stacked.append(path)
    return table, stacked


def nnx_unit_axes(model: nnx.Module) -> NNXUnitAxes:
    """Builds a ``unit_axes`` callable from a ``flax.nnx`` model's modules.

    Each kernel gets its true fan-in from its module's configuration:
    ``nnx.Linear`` reduces axis 0; ``nnx.LinearGeneral`` its input-feature axes
    (so ``nnx.MultiHeadAttention``'s query/key/value kernels ``(in, heads,
    dim)`` reduce axis 0, its output kernel ``(heads, dim, out)`` reduces
    ``(0, 1)``, and each ``(heads, dim)`` bias is one unit); ``nnx.Einsum`` its
    contracted kernel axes; ``nnx.Conv`` and ``nnx.ConvTranspose`` (any rank,
    any grouping, either kernel layout) every axis but the output feature;
    ``nnx.Embed`` the feature axis (one unit per row); the scale and bias of
    ``nnx.LayerNorm``, ``nnx.RMSNorm`` and ``nnx.BatchNorm`` are one unit each.
    Other parameters use the default rule. The same answer is given for the
    paths seen at ``init`` (nnx Variables) and at ``update`` (raw arrays), as
    path strings or raw key paths.

    Layers stacked with ``nnx.vmap``/``nnx.scan`` (parameters with extra
    leading axes, one per stacking) keep those axes as unit axes: a stacked
    ``(layers, in, out)`` Linear kernel reduces axis 1 only. Where the extra
    axes are not unambiguously leading, or a stacked model has parameters no
    rule covers, it raises rather than guess: use
    :func:`agc_optax.infer_unit_axes` for such models.

    Args:
        model: the model whose parameters will be clipped.

    Returns:
        A callable ``(path, leaf) -> axes`` to pass as ``agc(unit_axes=...)``.

    Raises:
        TypeError: ``model`` is not an ``nnx.Module`` (e.g. a Linen module).
        ValueError: stacked parameters whose layer axes cannot be told apart.
        ImportError: flax is not installed.
    """
    nnx = _compat.import_nnx("nnx_unit_axes")
    if not isinstance(model, nnx.Module):
        raise TypeError(
            f"nnx_unit_axes needs a flax.nnx.Module, got {type(model).__module__}."
            f"{type(model).__qualname__}. For Linen, Haiku, Equinox or plain-JAX models, "
            "read the fan-in from the forward pass: infer_unit_axes(apply_fn, params, "
            "*example_inputs)."
        )
    table, stacked = _module_table(nnx, model)
    params = [_paths.join_keys(k) for k, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    if stacked:
        uncovered = [p for p in params if p not in table]
        if uncovered:
            raise ValueError(
                f"nnx_unit_axes: the model stacks layers (e.g. {stacked[0]!r}), and it has no "
                f"rule for parameters {_paths.describe_paths(uncovered)}, which may be stacked "
                "too: the default rule would reduce their layer axis. Read the fan-in from the "
                "forward pass instead: agc(unit_axes=infer_unit_axes(forward, model, "
                "*example_inputs))."
            )
    return NNXUnitAxes(table, params)
