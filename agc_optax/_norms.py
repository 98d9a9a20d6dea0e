"""Unit-wise L2 norms: the one implementation that :func:`agc` and :func:`unitwise_norm` share.

Sums of squares accumulate in float32 (float64 for 64-bit leaves), so
float16/bfloat16 units do not overflow their own range. A unit whose sum of
squares still overflows the accumulator (float32 elements above ~1e19) is
measured a second way, relative to its largest element; that second pass over
the gradients sits inside a ``lax.cond`` taken only when some sum of squares is
not finite, so the common path never reads the gradients again. When units are
split across devices under ``jax.jit``, the branch predicate costs one scalar
all-reduce per leaf (the largest sum of squares).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from agc_optax import _unit_axes

AxisName = Hashable | Sequence[Hashable] | None


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


def safe_sqrt(squared: jax.Array) -> jax.Array:
    """``sqrt`` whose derivative stays finite at 0 (where it returns 0)."""
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1)), squared)


def unit_squared_norm(
    x: jax.Array, axes: tuple[int, ...], dtype: Any, axis_name: AxisName = None
) -> jax.Array:
    """Per-unit sum of ``|x|²`` over ``axes`` in ``dtype``, keepdims shape.

    Args:
        x: the array.
        axes: the fan-in axes to reduce.
        dtype: the accumulation dtype.
        axis_name: mesh axes over which ``x`` is split inside ``shard_map``/``pmap``;
            the partial sums are ``psum``-ed over them.

    Returns:
        The sums of squares, broadcastable against ``x``.
    """
    squared = jnp.sum(abs_squared(x, dtype), axis=axes, keepdims=True)
    if axis_name is not None:
        squared = jax.lax.psum(squared, axis_name)
    return squared


def unitwise_norm(
    x: jax.typing.ArrayLike, axes: int | Sequence[int] | None = None, *, axis: Any = None
) -> jax.Array:
    """L2 norm of each unit of ``x``, kept broadcastable against ``x``.

    The square root of the sums of squares :func:`agc_optax.agc` compares (the
    same :func:`unit_squared_norm`): the sum accumulates in float32 (float64 for
    float64 or complex128 inputs) whatever the input dtype, complex inputs use
    ``|x|²``, and the square root has a finite derivative at 0.

    It also takes ``optax.unitwise_norm``'s calls: ``unitwise_norm(x)`` and
    ``unitwise_norm(x, axis=...)``. Two differences from optax: without axes
    it reduces the axes of :func:`agc_optax.default_unit_axes` (every axis but
    the last, any rank; optax reduces only axis 0 of a rank-3 leaf, treats a
    ``(1, n)`` leaf as one vector and rejects rank 6), and the result keeps
    the reduced axes as size 1 instead of being broadcast to ``x.shape``
    (``jnp.broadcast_to(unitwise_norm(x), x.shape)`` gives optax's shape).

    Args:
        x: the array.
        axes: the fan-in axes to reduce (an int or a sequence of ints); None for
            the default rule.
        axis: optax's name for ``axes``; pass one or the other.

    Returns:
        The norms, with ``keepdims=True`` shape, in the accumulation dtype.

    Raises:
        TypeError: both ``axes`` and ``axis`` are given.
    """
    if axis is not None:
        if axes is not None:
            raise TypeError("unitwise_norm: pass the axes once, as axes= or optax's axis=.")
        axes = axis
    x = jnp.asarray(x)
    if axes is None:
        axes = _unit_axes.default_unit_axes("", x)
    axes_tuple = _unit_axes.normalize_axes(axes, x.ndim, "unitwise_norm(x)")
    return safe_sqrt(unit_squared_norm(x, axes_tuple, accumulation_dtype(x.dtype)))


def _rescaled_leaf(
    grad: jax.Array, squared: jax.Array, axes: tuple[int, ...], axis_name: AxisName
) -> tuple[jax.Array, jax.Array]:
    """``(sum of |grad / peak|², 1 / peak)`` per unit, ``(squared, 1)`` where nothing overflowed."""
    peak = jnp.max(jnp.abs(grad), axis=axes, keepdims=True).astype(squared.dtype)
    if axis_name is not None:
        peak = jax.lax.pmax(peak, axis_name)
    # Only finite units whose sum of squares overflowed; an inf or NaN element keeps
    # the plain (non-finite) sum, so a non-finite gradient stays non-finite.
    overflowed = jnp.isinf(squared) & jnp.isfinite(peak)
    inverse_peak = jnp.where(overflowed, 1 / jnp.where(overflowed, peak, 1), 1)
    rescaled = unit_squared_norm(grad * inverse_peak, axes, squared.dtype, axis_name)
    return jnp.where(overflowed, rescaled, squared), inverse_peak


def _mesh_axes(axis_names: Sequence[AxisName]) -> tuple[Hashable, ...]:
    """Every mesh axis named by any leaf, once each, in first-seen order."""
    axes: list[Hashable] = []
    for names in axis_names:
        if names is None:
            continue
        for name in names if isinstance(names, tuple | list) else (names,):
            if name not in axes:
                axes.append(name)
    return tuple(axes)


def rescue_overflowed(
    grads: Sequence[jax.Array],
    squared: Sequence[jax.Array],
    axes: Sequence[tuple[int, ...]],
    axis_names: Sequence[AxisName],
) -> tuple[list[jax.Array], list[jax.Array]]:
    """Exact norms of the units whose sum of squares overflowed, as ``(s, 1/peak)``.

    Where a unit's ``squared`` is infinite but its elements are finite, its norm
    is ``peak · sqrt(s)``, with ``peak`` its largest ``|element|``: the gradient
    is read again, relative to each unit's peak. Elsewhere ``s`` equals
    ``squared`` and the second array holds no meaning (read it only where
    ``squared`` is infinite). The second read is the true branch of one
    ``lax.cond`` over the whole tree, taken when some sum of squares is not
    finite; the common branch returns ``squared`` twice, so it neither reads the
    gradients nor materialises anything. Inside ``shard_map`` the predicate is
    combined over every mesh axis that ``axis_names`` names (one scalar
    all-reduce), so all devices of a collective group take the same branch.

    Args:
        grads: the gradient leaves.
        squared: their per-unit sums of squares (from :func:`unit_squared_norm`).
        axes: each leaf's fan-in axes.
        axis_names: each leaf's mesh axes for ``psum``/``pmax``.

    Returns:
        ``(scaled, inverse_peaks)``, one array per leaf with the shape of its
        ``squared``.
    """
    if not grads:
        return [], []
    # max of the per-unit sums: inf where one overflowed, NaN where one is NaN (that
    # rare step takes the exact branch too). One small reduction per leaf.
    not_finite = functools.reduce(
        jnp.logical_or, [~jnp.isfinite(jnp.max(s)) for s in squared]
    )
    named = _mesh_axes(axis_names)
    if named:
        # Inside shard_map each device decides on its own block: agree over every named
        # mesh axis, so the branch's psum/pmax run on all devices of a group or on none.
        not_finite = jax.lax.pmax(not_finite.astype(jnp.int32), named) > 0

    def rescue() -> tuple[list[jax.Array], list[jax.Array]]:
        leaves = zip(grads, squared, axes, axis_names, strict=True)
        pairs = [_rescaled_leaf(*leaf) for leaf in leaves]
        return [s for s, _ in pairs], [p for _, p in pairs]

    def keep() -> tuple[list[jax.Array], list[jax.Array]]:
        return list(squared), list(squared)

    return jax.lax.cond(not_finite, rescue, keep)
