"""Each parameter's fan-in axes, read from the jaxpr of the model's forward pass.

Shape alone cannot tell a query kernel ``(in, heads, dim)`` (fan-in axis 0)
from a Conv1D kernel ``(width, in, out)`` (fan-in ``(0, 1)``), nor a stacked
``(layers, in, out)`` kernel from either. The forward pass can: every kernel
ends in a contraction, and the contraction says which of its axes it sums over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from agc_optax import _compat, _jaxpr_walk, _paths, _unit_axes
from agc_optax._inferred import Entry, InferredUnitAxes
from agc_optax._jaxpr_rules import DATA, Recorder, State, Use, read_by

Axes = tuple[int, ...]


def _is_array_like(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _data_state(x: Any) -> State:
    """Data arguments are activations, except PRNG keys (a key is not data)."""
    return None if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else DATA


def _trace(
    fn: Callable[..., Any], params: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[list[str], list[Any], Any, list[State]]:
    """Traces ``fn`` (never runs it).

    Returns:
        The parameters' path strings and leaves, the closed jaxpr (inputs: the
        parameter leaves, then any other nnx state, then the array leaves of
        ``args`` and ``kwargs``) and the states of the inputs after the parameters.
    """
    if _compat.is_nnx_module(params):
        nnx = _compat.loaded_nnx()
        # The rest of the state (batch statistics, RNG counts) is traced too, so
        # that a forward pass which updates it can run under the trace.
        graphdef, tree, rest = nnx.split(params, nnx.Param, ...)
        rest_leaves, rest_def = jax.tree.flatten(rest)

        def call(tree_value: Any, rest_value: list[Any], a: Any, k: Any) -> Any:
            module = nnx.merge(graphdef, tree_value, jax.tree.unflatten(rest_def, rest_value))
            return fn(module, *a, **k)
    else:
        tree, rest_leaves = params, []

        def call(tree_value: Any, rest_value: list[Any], a: Any, k: Any) -> Any:
            return fn(tree_value, *a, **k)

    paths, leaves, treedef = _paths.flatten_with_path_strings(tree)
    for path, leaf in zip(paths, leaves, strict=True):
        if not _is_array_like(leaf):
            # A Python scalar is a module's static field (an Equinox patch size or
            # dropout rate): traced as a parameter it fails deep inside JAX.
            scalar = isinstance(leaf, bool | int | float | complex)
            kind = f"Python {type(leaf).__name__}" if scalar else type(leaf).__name__
            raise TypeError(
                f"infer_unit_axes: params leaf {path!r} is a {kind}, not an "
                f"array{' (a static field of the module?)' if scalar else ''}. Pass the "
                "arrays only, e.g. eqx.partition(model, eqx.is_array)[0] for an Equinox "
                "model, or variables['params'] for a Linen one."
            )
    arg_leaves, arg_def = jax.tree.flatten((args, kwargs))
    dynamic = [i for i, x in enumerate(arg_leaves) if _is_array_like(x)]

    def traced(param_leaves: list[Any], rest_value: list[Any], dynamic_leaves: list[Any]) -> Any:
        full = list(arg_leaves)
        for i, x in zip(dynamic, dynamic_leaves, strict=True):
            full[i] = x
        a, k = jax.tree.unflatten(arg_def, full)
        return call(jax.tree.unflatten(treedef, param_leaves), rest_value, a, k)

    dynamic_leaves = [arg_leaves[i] for i in dynamic]
    closed = jax.make_jaxpr(traced)(leaves, rest_leaves, dynamic_leaves)
    other_states = [None] * len(rest_leaves) + [_data_state(x) for x in dynamic_leaves]
    return paths, leaves, closed, other_states


def _describe(uses: Sequence[Use], shown: int = 2) -> str:
    notes = list(dict.fromkeys(u.note for u in uses))
    more = f"; and {len(notes) - shown} more" if len(notes) > shown else ""
    return "; ".join(notes[:shown]) + more


def _layer_note(layer_axes: Mapping[int, str]) -> str:
    return "".join(f"; axis {a} {why}" for a, why in sorted(layer_axes.items()))


def _decide(path: str, shape: tuple[int, ...], uses: Sequence[Use],
            layer_axes: Mapping[int, str]) -> Entry:
    """One parameter's fan-in from its reads.

    Raises:
        ValueError: two contractions sum over different axes of the parameter.
    """
    deciding = [u for u in uses if u.fan_in is not None]
    if deciding:
        distinct = list(dict.fromkeys(u.fan_in for u in deciding))
        if len(distinct) > 1:
            first = next(u for u in deciding if u.fan_in == distinct[0])
            second = next(u for u in deciding if u.fan_in == distinct[1])
            raise ValueError(
                f"infer_unit_axes: parameter {path!r} (shape {shape}) is contracted over "
                f"different axes by two uses: {first.note} and {second.note}. AGC needs one "
                "set of fan-in axes per parameter; choose this leaf's yourself with "
                f"infer_unit_axes(fn, params, ..., overrides={{{path!r}: {distinct[0]}}})."
            )
        fan_in = tuple(a for a in distinct[0] if a not in layer_axes)
        return Entry(path, shape, fan_in, _describe(deciding) + _layer_note(layer_axes))
    lost = [u for u in uses if u.lost]
    if lost:
        fan_in = _unit_axes.default_unit_axes(path, jax.ShapeDtypeStruct(shape, "float32"))
        return Entry(path, shape, fan_in, f"{_describe(lost)}; default rule")
    fan_in = tuple(a for a in range(len(shape)) if a not in layer_axes)
    return Entry(path, shape, fan_in, _describe(uses) + _layer_note(layer_axes))


def _overridden(path: str, shape: tuple[int, ...], axes: Any) -> Entry:
    return Entry(path, shape, _unit_axes.normalize_axes(axes, len(shape), path), "override")


def infer_unit_axes(
    fn: Callable[..., Any],
    params: Any,
    *args: Any,
    overrides: Mapping[str, int | Sequence[int]] | None = None,
    **kwargs: Any,
) -> InferredUnitAxes:
    """Reads each parameter's fan-in axes from the jaxpr of ``fn(params, *args, **kwargs)``.

    ``fn`` is traced with :func:`jax.make_jaxpr`, never run, so ``args`` may be
    :class:`jax.ShapeDtypeStruct` s. Every parameter is followed through casts,
    elementwise arithmetic with other parameters or constants (weight
    standardisation, gains), broadcasts, transposes, reshapes that split or merge
    axes, reductions, slices, and into ``jit``, ``checkpoint``/remat,
    ``custom_jvp``/``custom_vjp``, ``scan``, ``while_loop`` and ``cond``, to the
    operation where it meets the data:

    * ``dot_general``: its contracting axes are the fan-in (batch axes never);
    * ``conv_general_dilated``: every kernel axis but the output-feature axis
      (any rank, grouping, transposed kernels);
    * a gather or dynamic slice with data indices (an embedding lookup): every
      axis but the looked-up one, i.e. one unit per row. A tied embedding
      (lookup and output projection) agrees: one unit per row;
    * anything else (a bias, gain, norm scale or additive position embedding
      meeting an activation): no axis is contracted, so the whole parameter is
      one unit per layer.

    Axes that are scanned over or picked by a single index (stacked layers, as
    made by ``nn.scan``/``nnx.scan``) are never fan-in: each layer's slice has
    its own units. A parameter that is never read, or whose path to the data
    goes through an operation not listed above, keeps
    :func:`agc_optax.default_unit_axes`; the table says so. Arguments with a
    PRNG key dtype count as constants, not data.

    Args:
        fn: the forward pass, ``fn(params, *args, **kwargs)``; for an
            ``nnx.Module``, ``fn(module, *args, **kwargs)``.
        params: any pytree of arrays or ``jax.ShapeDtypeStruct`` s (Linen's
            ``variables["params"]``, Haiku params, ``eqx.partition``'s arrays, a
            dict), or an ``nnx.Module``, whose result is keyed by the paths of
            ``nnx.state(module, nnx.Param)``.
        *args: the remaining positional arguments of ``fn``; array leaves are
            traced as data, other leaves are passed as they are.
        overrides: fan-in axes to use for some path strings instead of
            inferring them (e.g. to settle a parameter that two contractions
            read differently). A keyword of ``infer_unit_axes`` itself, never
            passed to ``fn``.
        **kwargs: keyword arguments of ``fn``, treated like ``args``.

    Returns:
        An :class:`InferredUnitAxes`, a callable ``(path, leaf) -> axes`` to pass
        as ``agc(unit_axes=...)``; ``print`` it to see each parameter's fan-in,
        number of units and the evidence.

    Raises:
        ValueError: two contractions read a parameter over different axes (the
            message names both and the override), or ``overrides`` names a path
            that is not a parameter.
    """
    paths, leaves, closed, other_states = _trace(fn, params, args, kwargs)
    shapes = [tuple(getattr(x, "shape", ())) for x in leaves]
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(paths))
    if unknown:
        raise ValueError(
            f"infer_unit_axes: overrides names {_paths.describe_paths(unknown)}, which are "
            f"not parameters; the parameters are {_paths.describe_paths(paths)}."
        )
    rec = Recorder(shapes)
    param_states: list[State] = [
        {i: tuple(frozenset({a}) for a in range(len(shape)))} for i, shape in enumerate(shapes)
    ]
    outs = _jaxpr_walk.walk(rec, closed.jaxpr, [*param_states, *other_states])
    read_by(rec, outs, "no contraction (returned by fn)")
    entries = {}
    for i, (path, shape) in enumerate(zip(paths, shapes, strict=True)):
        uses = list(rec.uses.get(i, {}))
        if path in overrides:
            entries[path] = _overridden(path, shape, overrides[path])
        elif not uses:
            fan_in = _unit_axes.default_unit_axes(path, leaves[i])
            entries[path] = Entry(path, shape, fan_in, "never read by fn; default rule",
                                  used=False)
        else:
            entries[path] = _decide(path, shape, uses, rec.layer_axes.get(i, {}))
    return InferredUnitAxes(entries)
