"""Each parameter's fan-in axes, read from the jaxpr of the model's forward pass.

Shape alone cannot tell a query kernel ``(in, heads, dim)`` (fan-in axis 0)
from a Conv1D kernel ``(width, in, out)`` (fan-in ``(0, 1)``), nor a stacked
``(layers, in, out)`` kernel from either. The forward pass can: every kernel
ends in a contraction, and the contraction says which of its axes it sums over.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from agc_optax import _compat, _jaxpr_walk, _paths, _unit_axes
from agc_optax._inferred import FALLBACK, Entry, InferredUnitAxes
from agc_optax._jaxpr_state import DATA, Recorder, State, Use, read_by

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
            raise _disagreement(path, shape, deciding, distinct)
        fan_in = tuple(a for a in distinct[0] if a not in layer_axes)
        return Entry(path, shape, fan_in, _describe(deciding) + _layer_note(layer_axes))
    lost = [u for u in uses if u.lost]
    if lost:
        fan_in = _unit_axes.default_unit_axes(path, jax.ShapeDtypeStruct(shape, "float32"))
        return Entry(path, shape, fan_in, f"{FALLBACK}: {_describe(lost)}", fallback=True)
    fan_in = tuple(a for a in range(len(shape)) if a not in layer_axes)
    return Entry(path, shape, fan_in, _describe(uses) + _layer_note(layer_axes))


def _disagreement(path: str, shape: tuple[int, ...], deciding: Sequence[Use],
                  distinct: Sequence[tuple[int, ...]]) -> ValueError:
    first = next(u for u in deciding if u.fan_in == distinct[0])
    second = next(u for u in deciding if u.fan_in == distinct[1])
    return ValueError(
        f"infer_unit_axes: parameter {path!r} (shape {shape}) is contracted over "
        f"different axes by two uses: {first.note} and {second.note}. AGC needs one "
        "set of fan-in axes per parameter: the axes summed where it meets the layer's "
        "input. Choose them yourself with infer_unit_axes(fn, params, ..., "
        f"overrides={{{path!r}: {distinct[0]}}}) (or {distinct[1]}). A use that is not "
        "the layer's own, such as a power iteration (spectral norm) on state passed as "
        "an argument, goes away when fn closes over that state instead."
    )


def _warn_fallbacks(entries: Mapping[str, Entry], reads_data: bool) -> None:
    """Warns about every entry the rules could not decide, and about data closed over."""
    if not reads_data:
        warnings.warn(
            "infer_unit_axes: fn reads no argument but params, so every other value it "
            "uses counts as a constant, and a parameter meeting only constants looks "
            "unread or uncontracted. Pass the data (inputs, or jax.ShapeDtypeStructs "
            "of them) as arguments: infer_unit_axes(fn, params, x).",
            stacklevel=3,
        )
    lost = [e.path for e in entries.values() if e.fallback and e.used]
    if lost:
        warnings.warn(
            f"infer_unit_axes: cannot infer the fan-in of {_paths.describe_paths(lost)}; "
            "they keep default_unit_axes (marked FALLBACK in the table). Pass "
            "overrides={path: axes} for them.",
            stacklevel=3,
        )


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
    :class:`jax.ShapeDtypeStruct` s. A parameter's fan-in are the axes summed
    where it, or a value computed from parameters and constants only, meets a
    value derived from the data (``args`` and ``kwargs``). Every parameter is
    followed through casts, elementwise arithmetic, broadcasts, transposes,
    reshapes, reductions, slices, contractions with constants or other
    parameters (their axes mapped back), and into ``jit``, ``checkpoint``/remat,
    ``custom_jvp``/``custom_vjp``, ``vmap``, ``shard_map``, ``scan``,
    ``while_loop`` and ``cond``, to where it meets the data:

    * ``dot_general``: its contracting axes are the fan-in (batch axes never);
    * ``conv_general_dilated``: every kernel axis but the output-feature axis
      (any rank, grouping, transposed kernels);
    * a slice picked by data indices (gather, dynamic slice) and then
      contracted with data: a kernel (mixture-of-experts, per-task weights),
      the picked axis a selection; met any other way, an embedding lookup:
      every axis but the looked-up one, i.e. one unit per row;
    * a product with activations summed next (``(x[:, :, None] * w).sum(1)``):
      the summed axes;
    * anything else (a bias, gain, norm scale or additive position embedding
      meeting an activation): no axis is contracted, so the whole parameter is
      one unit per layer.

    Axes that are scanned over or picked by a single constant index (stacked
    layers, as made by ``nn.scan``/``nnx.scan``) are never fan-in, unless
    contractions through different picked slices are added together (heads
    summed in a loop), which sums over them. Reads in a backward pass that
    ``fn`` computes (``jax.grad`` with respect to its input) are not uses.
    Arguments with a PRNG key dtype count as constants, not data. A parameter
    that is never read, or whose road to the data no rule decides, keeps
    :func:`agc_optax.default_unit_axes`; its evidence starts with ``FALLBACK``
    and a warning names it (unless never read).

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

    Warns:
        UserWarning: some parameter's fan-in could not be inferred, or ``fn``
            reads no argument but ``params`` (data closed over).
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
            entries[path] = Entry(path, shape, fan_in, f"{FALLBACK}: never read by fn",
                                  used=False, fallback=True)
        else:
            entries[path] = _decide(path, shape, uses, rec.layer_axes.get(i, {}))
    _warn_fallbacks(entries, _jaxpr_walk.reads_data(closed.jaxpr, other_states))
    return InferredUnitAxes(entries)
