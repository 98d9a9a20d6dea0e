"""Unit-wise L2 norms: the one implementation that :func:`agc` and :func:`unitwise_norm` share.

Sums of squares accumulate in float32 (float64 for 64-bit leaves), so
float16/bfloat16 units do not overflow their own range. Where a float32 sum
itself would overflow or lose its small terms, :mod:`agc_optax._clip` measures
the unit again, scaled by a power of two.
"""

from __future__ import annotations

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
    x = jnp.asarray(x).astype(dtype)
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
