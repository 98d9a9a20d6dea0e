"""Which axes of a parameter are a unit's fan-in, and the unit-wise norm.

AGC clips each *unit* (the slice of a parameter that produces one output
feature) on its own. The axes summed over to get a unit's norm are its fan-in
axes; every other axis indexes units. This module holds the default rule, the
alternatives a user can name, and their validation.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agc_optax import _paths

Axes = tuple[int, ...]
UnitAxesFn = Callable[[str, Any], "int | Sequence[int]"]
UnitAxesSpec = None | str | UnitAxesFn | Any

OUTPUT_FIRST = "output_first"

INJECT_HINT = (
    "optax.inject_hyperparams treats every callable argument as a schedule and "
    "every int as a traced hyperparameter; keep agc's structural arguments static: "
    "optax.inject_hyperparams(agc, static_args=('unit_axes', 'exclude', 'axis', "
    "'axis_name'))(...)."
)
_MISSING = object()


def leaf_rule(rule: Callable[[str, Any], Any]) -> Callable[..., Any]:
    """Marks a ``(path, leaf)`` function so that calling it as a schedule fails loudly.

    ``optax.inject_hyperparams`` calls any callable argument with the step count.
    A rule wrapped here raises a TypeError that says how to keep it static,
    instead of an opaque missing-argument error. It also accepts a raw JAX key
    path in place of the path string (converted with
    :func:`agc_optax._paths.as_path_str`), so the rule can be used with
    ``jax.tree_util.tree_map_with_path`` directly.

    Args:
        rule: a function ``(path_string, leaf) -> value``.

    Returns:
        The same function, accepting exactly ``(path, leaf)``.
    """

    @functools.wraps(rule)
    def checked(path: Any, leaf: Any = _MISSING) -> Any:
        if leaf is _MISSING:
            raise TypeError(f"{rule.__name__} was called with one argument. {INJECT_HINT}")
        return rule(_paths.as_path_str(path), leaf)

    return checked


def leaf_ndim(x: Any) -> int:
    """Rank of an array, tracer, ``jax.ShapeDtypeStruct`` or Python scalar."""
    shape = getattr(x, "shape", None)
    return len(shape) if shape is not None else jnp.ndim(x)


@leaf_rule
def default_unit_axes(path: str, x: Any) -> Axes:
    """Fan-in axes for a leaf in Flax/Haiku layout (output features last).

    Scalars and vectors (biases, gains, skip gains) are one unit. For rank ≥ 2
    every axis but the last is reduced: right for Dense ``(in, out)``, Conv1D
    ``(W, in, out)``, Conv2D ``(H, W, in, out)``, Conv3D, grouped and depthwise
    convolutions and attention output projections ``(heads, dim, out)``. Size-1
    axes do not change the rule, and any rank is accepted.

    Args:
        path: the leaf's path string (unused by this rule; part of the signature
            so any ``unit_axes`` callable can be swapped in).
        x: the leaf (an array or anything with ``ndim``).

    Returns:
        The axes to reduce, ascending.
    """
    del path
    ndim = leaf_ndim(x)
    if ndim <= 1:
        return tuple(range(ndim))
    return tuple(range(ndim - 1))


@leaf_rule
def output_first_unit_axes(path: str, x: Any) -> Axes:
    """Fan-in axes for PyTorch/Equinox layout (output features first).

    Args:
        path: the leaf's path string (unused).
        x: the leaf.

    Returns:
        Every axis but the first for rank ≥ 2; all axes for scalars and vectors.
    """
    del path
    ndim = leaf_ndim(x)
    if ndim <= 1:
        return tuple(range(ndim))
    return tuple(range(1, ndim))


def _is_axis(a: Any) -> bool:
    return isinstance(a, int | np.integer) and not isinstance(a, bool | np.bool_)


def _as_axes_tuple(axes: Any) -> tuple[Any, ...] | None:
    """``axes`` as a tuple of ints; None if it is not an int or a sequence of ints.

    Accepted: an int, a tuple, list or range of ints, a 1-D integer NumPy array.
    """
    if _is_axis(axes):
        return (axes,)
    if isinstance(axes, np.ndarray) and axes.ndim == 1 and np.issubdtype(axes.dtype, np.integer):
        return tuple(int(a) for a in axes)
    if isinstance(axes, tuple | list | range) and all(_is_axis(a) for a in axes):
        return tuple(axes)
    return None


def _axes_type_error(given: str, path: str, axes: Any) -> TypeError:
    """The error for axes of the wrong kind; the static_args hint only for arrays and tracers."""
    message = (
        f"{given} for leaf {path!r}: axes must be an int or a tuple of ints, got "
        f"{type(axes).__name__}."
    )
    if isinstance(axes, jax.core.Tracer | jax.Array) or callable(axes):
        message += f" If this came through optax.inject_hyperparams: {INJECT_HINT}"
    return TypeError(message)


def normalize_axes(axes: Any, ndim: int, path: str, source: str = "unit_axes") -> Axes:
    """Validates ``axes`` for a rank-``ndim`` leaf and returns them ascending, non-negative.

    Args:
        axes: an int or a sequence of ints (negative counts from the end).
        ndim: the leaf's rank.
        path: the leaf's path string, for error messages.
        source: the argument the axes came from (``"unit_axes"`` or ``"axis"``),
            so that an error speaks of what the user passed.

    Returns:
        The sorted, de-negated axes.

    Raises:
        TypeError: ``axes`` is not an int or a sequence of ints.
        ValueError: an axis is out of range or repeated.
    """
    given = f"axis={axes!r}" if source == "axis" else f"unit_axes gave {axes!r}"
    fix = (
        "axis= gives these axes to every leaf; for leaves that need other axes pass "
        "unit_axes= instead (a rule (path, leaf) -> axes, or a pytree of axes per leaf)"
        if source == "axis"
        else "fix the unit_axes entry for this leaf"
    )
    as_tuple = _as_axes_tuple(axes)
    if as_tuple is None:
        raise _axes_type_error(given, path, axes)
    normalized = []
    for axis in as_tuple:
        if not -ndim <= axis < ndim:
            raise ValueError(
                f"{given}, out of range for leaf {path!r} of rank {ndim} (axes lie in "
                f"[-{ndim}, {ndim})); {fix}."
            )
        normalized.append(int(axis) % ndim if ndim else int(axis))
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"{given}, which repeats an axis for leaf {path!r}; {fix}.")
    return tuple(sorted(normalized))


def check_leaf_rule(rule: Callable[..., Any], argument: str) -> None:
    """Raises a TypeError unless ``rule`` can be called as ``rule(path, leaf)``.

    Args:
        rule: a callable passed as ``unit_axes``, ``exclude`` or ``axis_name``.
        argument: that argument's name, for the message.

    Raises:
        TypeError: ``rule``'s signature does not take two positional arguments.
    """
    try:
        signature = inspect.signature(rule)
    except (TypeError, ValueError):  # Some builtins have no signature; call them as they are.
        return
    try:
        signature.bind("path", None)
    except TypeError:
        raise TypeError(
            f"{argument}={rule!r} must be callable as ({argument} rule)(path, leaf), but its "
            f"signature is {signature}. If it is meant for optax.inject_hyperparams, it is not "
            f"a schedule: {INJECT_HINT}"
        ) from None


def _is_axes_leaf(x: Any) -> bool:
    return x is None or _as_axes_tuple(x) is not None


def _spec_rule(spec: UnitAxesSpec, paths: Sequence[str]) -> UnitAxesFn:
    """The ``(path, leaf) -> axes`` rule that a ``unit_axes`` argument stands for."""
    if spec is None:
        return default_unit_axes
    if isinstance(spec, str):
        if spec != OUTPUT_FIRST:
            raise ValueError(
                f"unit_axes={spec!r} is not a known layout; the only string accepted is "
                f"{OUTPUT_FIRST!r} (PyTorch/Equinox layout). Pass a callable or a pytree "
                "of axes for anything else."
            )
        return output_first_unit_axes
    if callable(spec):
        check_leaf_rule(spec, "unit_axes")
        return spec
    if isinstance(spec, jax.Array | float) or hasattr(spec, "dtype"):
        raise TypeError(f"unit_axes is an array ({spec!r}), not axes. {INJECT_HINT}")
    if _is_axes_leaf(spec) and list(paths) != [""]:
        raise TypeError(
            f"unit_axes={spec!r} is one set of axes, but unit_axes gives each leaf its own: "
            "a rule (path, leaf) -> axes, or a pytree of axes shaped like the params. To "
            f"reduce the same axes of every leaf, pass axis={spec!r} (as in optax)."
        )
    spec_paths, spec_leaves, _ = _paths.flatten_with_path_strings(spec, is_leaf=_is_axes_leaf)
    table = dict(zip(spec_paths, spec_leaves, strict=True))
    holes = [p for p in paths if p in table and table[p] is None]
    if holes:
        raise ValueError(
            f"unit_axes pytree holds None for leaves {_paths.describe_paths(holes)}; give "
            "each a tuple of axes (() for a scalar), or use a callable that falls back to "
            "default_unit_axes."
        )
    missing = [p for p in paths if p not in table]
    if missing:
        raise ValueError(
            f"unit_axes pytree has no entry for leaves {_paths.describe_paths(missing)}; "
            f"its entries are {_paths.describe_paths(spec_paths)}. Give every parameter "
            "a tuple of axes (or pass a callable that falls back to default_unit_axes)."
        )
    return lambda path, x: table[path]


def resolve_unit_axes(
    spec: UnitAxesSpec, paths: Sequence[str], leaves: Sequence[Any], axis: Any = None
) -> list[Axes]:
    """Turns any accepted ``unit_axes`` (or optax's ``axis``) into validated axes per leaf.

    Args:
        spec: None (the default rule), ``"output_first"``, a callable
            ``(path, leaf) -> axes``, or a pytree with the params' paths holding
            a tuple of axes per leaf.
        paths: the leaves' path strings.
        leaves: the param leaves (arrays or shape-dtype structs).
        axis: optax's ``axis``: one int or tuple of axes for every leaf, used
            instead of ``spec`` (which must then be None).

    Returns:
        One ascending axes tuple per leaf.

    Raises:
        TypeError: the spec is of no accepted kind (one tuple of axes, an
            array, a callable that does not take ``(path, leaf)``).
        ValueError: a string other than ``"output_first"``, a pytree missing
            a leaf's path, or axes out of range.
    """
    pairs = list(zip(paths, leaves, strict=True))
    if axis is not None:
        return [normalize_axes(axis, leaf_ndim(x), p, "axis") for p, x in pairs]
    rule = _spec_rule(spec, paths)
    return [normalize_axes(rule(p, x), leaf_ndim(x), p) for p, x in pairs]
