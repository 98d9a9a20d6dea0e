"""Which axes of a parameter are a unit's fan-in, and the unit-wise norm.

AGC clips each *unit* (the slice of a parameter that produces one output
feature) on its own. The axes summed over to get a unit's norm are its fan-in
axes; every other axis indexes units. This module holds the default rule, the
alternatives a user can name, and their validation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

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


def unitwise_norm(x: jax.typing.ArrayLike, axes: int | Sequence[int]) -> jax.Array:
    """L2 norm of each unit of ``x``, kept broadcastable against ``x``.

    The sum of squares accumulates in float32 (float64 for float64 or
    complex128 inputs) whatever the input dtype; complex inputs use ``|x|²``.

    Args:
        x: the array.
        axes: the fan-in axes to reduce.

    Returns:
        The norms, with ``keepdims=True`` shape, in the accumulation dtype.
    """
    x = jnp.asarray(x)
    axes_tuple = (axes,) if isinstance(axes, int) else tuple(axes)
    squared = jnp.sum(abs_squared(x), axis=axes_tuple, keepdims=True)
    return jnp.sqrt(squared)


def accumulation_dtype(*dtypes: Any) -> jnp.dtype:
    """float64 if any of ``dtypes`` is 64-bit (and JAX has x64 enabled), else float32.

    NumPy float64 inputs without ``jax_enable_x64`` are float32 to JAX, so they
    accumulate in float32.
    """
    wide = any(jnp.dtype(d) in (jnp.dtype("float64"), jnp.dtype("complex128")) for d in dtypes)
    return jax.dtypes.canonicalize_dtype(jnp.float64 if wide else jnp.float32)


def abs_squared(x: jax.Array, dtype: Any = None) -> jax.Array:
    """``|x|²`` elementwise in ``dtype`` (default: the accumulation dtype of ``x``)."""
    dtype = accumulation_dtype(x.dtype) if dtype is None else dtype
    if jnp.iscomplexobj(x):
        real, imag = jnp.real(x).astype(dtype), jnp.imag(x).astype(dtype)
        return real * real + imag * imag
    x = x.astype(dtype)
    return x * x


def _as_axes_tuple(axes: Any) -> tuple[Any, ...] | None:
    if isinstance(axes, int | jnp.integer) and not isinstance(axes, bool):
        return (axes,)
    if isinstance(axes, tuple | list) and all(
        isinstance(a, int | jnp.integer) and not isinstance(a, bool) for a in axes
    ):
        return tuple(axes)
    return None


def normalize_axes(axes: Any, ndim: int, path: str) -> Axes:
    """Validates ``axes`` for a rank-``ndim`` leaf and returns them ascending, non-negative.

    Args:
        axes: an int or a sequence of ints (negative counts from the end).
        ndim: the leaf's rank.
        path: the leaf's path string, for error messages.

    Returns:
        The sorted, de-negated axes.

    Raises:
        TypeError: ``axes`` is not an int or a sequence of ints.
        ValueError: an axis is out of range or repeated.
    """
    as_tuple = _as_axes_tuple(axes)
    if as_tuple is None:
        raise TypeError(
            f"unit_axes for leaf {path!r} must be an int or a tuple of ints, got {axes!r}. "
            f"If this came through optax.inject_hyperparams: {INJECT_HINT}"
        )
    normalized = []
    for axis in as_tuple:
        if not -ndim <= axis < ndim:
            raise ValueError(
                f"unit_axes {tuple(as_tuple)} is out of range for leaf {path!r} of rank {ndim}. "
                f"Axes must lie in [-{ndim}, {ndim}); fix the unit_axes entry for this leaf."
            )
        normalized.append(int(axis) % ndim if ndim else int(axis))
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"unit_axes {tuple(as_tuple)} repeats an axis for leaf {path!r}.")
    return tuple(sorted(normalized))


def _is_axes_leaf(x: Any) -> bool:
    return _as_axes_tuple(x) is not None


def resolve_unit_axes(
    spec: UnitAxesSpec, paths: Sequence[str], leaves: Sequence[Any]
) -> list[Axes]:
    """Turns any accepted ``unit_axes`` argument into validated axes per leaf.

    Args:
        spec: None (the default rule), ``"output_first"``, a callable
            ``(path, leaf) -> axes``, or a pytree with the params' paths holding
            a tuple of axes per leaf.
        paths: the leaves' path strings.
        leaves: the param leaves (arrays or shape-dtype structs).

    Returns:
        One ascending axes tuple per leaf.

    Raises:
        TypeError: the spec is of no accepted kind.
        ValueError: a string other than ``"output_first"``, or a pytree
            missing a leaf's path, or axes out of range.
    """
    if spec is None:
        rule: UnitAxesFn = default_unit_axes
    elif isinstance(spec, str):
        if spec != OUTPUT_FIRST:
            raise ValueError(
                f"unit_axes={spec!r} is not a known layout; the only string accepted is "
                f"{OUTPUT_FIRST!r} (PyTorch/Equinox layout). Pass a callable or a pytree "
                "of axes for anything else."
            )
        rule = output_first_unit_axes
    elif callable(spec):
        rule = spec
    elif isinstance(spec, jax.Array | float) or hasattr(spec, "dtype"):
        raise TypeError(f"unit_axes is an array ({spec!r}), not axes. {INJECT_HINT}")
    else:
        spec_paths, spec_leaves, _ = _paths.flatten_with_path_strings(spec, is_leaf=_is_axes_leaf)
        table = dict(zip(spec_paths, spec_leaves, strict=True))
        missing = [p for p in paths if p not in table]
        if missing:
            raise ValueError(
                f"unit_axes pytree has no entry for leaves {_paths.describe_paths(missing)}; "
                f"its entries are {_paths.describe_paths(spec_paths)}. Give every parameter "
                "a tuple of axes (or pass a callable that falls back to default_unit_axes)."
            )
        rule = lambda path, x: table[path]  # noqa: E731
    return [normalize_axes(rule(p, x), leaf_ndim(x), p) for p, x in zip(paths, leaves, strict=True)]
