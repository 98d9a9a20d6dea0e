"""Unit-wise L2 norms: the one implementation that :func:`agc` and :func:`unitwise_norm` share.

Sums of squares accumulate in float32 (float64 for 64-bit leaves), so
float16/bfloat16 units do not overflow their own range. A unit whose sum of
squares still overflows the accumulator (float32 elements above ~1e19) is
measured a second way, relative to its largest element; that second pass over
the gradients sits inside a ``lax.cond`` taken only when some sum of squares is
infinite, so the common path never reads the gradients again (the conditional
itself still costs a few percent of the update on XLA:CPU: it splits the
per-unit arithmetic into more, smaller kernels). When units are split across
devices under ``jax.jit``, the branch predicate is one scalar all-reduce.
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

    The same computation :func:`agc_optax.agc` uses: the sum of squares
    accumulates in float32 (float64 for float64 or complex128 inputs) whatever
    the input dtype, complex inputs use ``|x|²``, and the square root has a
    finite derivative at 0.

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
    """``(peak, sum of |grad / peak|²)`` per unit, ``(1, squared)`` where nothing overflowed."""
    peak = jnp.max(jnp.abs(grad), axis=axes, keepdims=True).astype(squared.dtype)
    if axis_name is not None:
        peak = jax.lax.pmax(peak, axis_name)
    # Only finite units whose sum of squares overflowed; an inf or NaN element keeps
    # the plain (non-finite) norm, so a non-finite gradient stays non-finite.
    overflowed = jnp.isinf(squared) & jnp.isfinite(peak)
    peak = jnp.where(overflowed, peak, 1)
    rescaled = unit_squared_norm(grad * (1 / peak), axes, squared.dtype, axis_name)
    return peak, jnp.where(overflowed, rescaled, squared)


def overflow_safe_squared_norms(
    grads: Sequence[jax.Array],
    squared: Sequence[jax.Array],
    axes: Sequence[tuple[int, ...]],
    axis_names: Sequence[AxisName],
) -> tuple[list[jax.Array], list[jax.Array]]:
    """Per-unit ``(peak, s)`` with ``‖G_i‖ = peak · sqrt(s)``, exact where ``squared`` overflowed.

    Where every sum of squares is finite this returns ``(1, squared)`` without
    reading the gradients again: the rescaling pass is the true branch of one
    ``lax.cond`` over the whole tree.

    Args:
        grads: the gradient leaves.
        squared: their per-unit sums of squares (from :func:`unit_squared_norm`).
        axes: each leaf's fan-in axes.
        axis_names: each leaf's mesh axes for ``psum``/``pmax``.

    Returns:
        ``(peaks, scaled)``: per leaf, the per-unit divisor (1 where the sum
        of squares was finite) and the sum of squares of the gradient divided
        by it.
    """
    if not grads:
        return [], []
    overflowed = functools.reduce(jnp.logical_or, [jnp.isinf(s).any() for s in squared])

    def rescale() -> tuple[list[jax.Array], list[jax.Array]]:
        leaves = zip(grads, squared, axes, axis_names, strict=True)
        pairs = [_rescaled_leaf(*leaf) for leaf in leaves]
        return [p for p, _ in pairs], [s for _, s in pairs]

    def keep() -> tuple[list[jax.Array], list[jax.Array]]:
        return [jnp.ones_like(s) for s in squared], list(squared)

    return jax.lax.cond(overflowed, rescale, keep)
