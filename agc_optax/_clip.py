"""Per-unit clip factors over the whole floating-point range.

Each unit i is clipped when ‖G_i‖ > λ · max(‖W_i‖, ε), and then multiplied by
``bound / ‖G_i‖``. The factors come in two ways, chosen by one ``lax.cond`` over
the whole tree:

- **Fast path** (every step of ordinary training): from the float32 sums of
  squares ``Σ|G|²`` and ``Σ|W|²`` that one pass over each tree gives. It is exact
  to float32 rounding as long as every sum is finite and every bound and norm
  floor is above :func:`reliable_floor`, far enough from float32's smallest
  normal number that squares flushed to zero cannot matter.
- **Exact path** (a step where some unit falls outside that range: a gradient
  blow-up, ``ε = 0`` with tiny parameters, a non-finite value): each unit is
  first scaled by a power of two taken from the exponent of its largest
  element, so its sum of squares neither overflows nor underflows; norms are
  then carried as ``mantissa · 2^exponent`` and the gradient is multiplied by
  two factors, ``2^-e`` and ``bound / mantissa``, each a normal number whenever
  the clipped unit's largest element is.

Subnormal inputs count as zero (XLA flushes them in arithmetic); a unit left
unclipped is returned as it came, bit for bit, subnormals included.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from agc_optax import _norms

AxisName = Hashable | Sequence[Hashable] | None
# Flushed squares add at most n · tiny to a sum of n squares; 2^26 of headroom keeps that
# below float32 rounding (2^-24) of any sum the fast path trusts.
_HEADROOM = 2.0**26
# Under shard_map a unit's fan-in is split across devices: allow 2^16 of them.
_SHARDED_FAN_IN = 2**16


class UnitFactors(NamedTuple):
    """What multiplies one leaf, per unit (keepdims shape, accumulation dtype).

    The clipped gradient is ``G · prescale · scale`` on clipped units and ``G``
    elsewhere. Both factors are 1 on the fast path's unclipped units.
    """

    prescale: jax.Array  # A power of two (1 on the fast path).
    scale: jax.Array  # bound / ‖G · prescale‖ on clipped units.
    clipped: jax.Array  # bool.


class UnitStats(NamedTuple):
    """Per-unit norms for statistics (saturating at the dtype's largest finite number)."""

    grad_norm: jax.Array  # ‖G_i‖.
    clipped_norm: jax.Array  # ‖G_i‖ after clipping: the bound on clipped units.
    ratio: jax.Array  # ‖G_i‖ / max(‖W_i‖, ε); 0 for a zero gradient.


class LeafInputs(NamedTuple):
    """One clipped leaf: its gradient and parameter, fan-in axes and psum axes."""

    grad: jax.Array
    param: jax.Array
    axes: tuple[int, ...]
    axis_name: AxisName


def reliable_floor(fan_in: int, dtype: Any, sharded: bool) -> float:
    """Smallest bound and norm floor the fast path trusts for a unit of ``fan_in`` elements.

    Args:
        fan_in: the number of elements of one unit (on one device under shard_map).
        dtype: the accumulation dtype.
        sharded: whether the fan-in may be split across devices under shard_map.

    Returns:
        ``sqrt(n · tiny · 2^26)``: about 6e-14 for float32 and n = 4096.
    """
    n = fan_in * (_SHARDED_FAN_IN if sharded else 1)
    return float((max(n, 1) * float(jnp.finfo(dtype).tiny) * _HEADROOM) ** 0.5)


def _exponent_bits(dtype: Any) -> tuple[Any, int, int]:
    info = jnp.finfo(dtype)
    int_dtype = jnp.int64 if jnp.dtype(dtype).itemsize == 8 else jnp.int32
    return int_dtype, info.nmant, info.maxexp - 1


def unit_exponent(
    x: jax.Array, axes: tuple[int, ...], dtype: Any, axis_name: AxisName = None
) -> jax.Array:
    """Per unit, ``e`` such that the unit's largest ``|element| · 2^-e`` lies in [0.5, 1).

    Read from the bits, so exact: the largest biased exponent of the unit's
    elements (one byte per unit for float32, which is all that crosses devices).
    Clamped to [2 - bias, bias - 1], so that ``2^e`` and ``2^-e`` are normal numbers:
    a zero or subnormal unit gets the low end, an inf or NaN element the high end.
    """
    int_dtype, nmant, bias = _exponent_bits(dtype)
    magnitude = jax.lax.stop_gradient(jnp.abs(x)).astype(dtype)
    biased = (jax.lax.bitcast_convert_type(magnitude, int_dtype) >> nmant) & (2 * bias + 1)
    small = jnp.uint8 if bias < 256 else jnp.uint16
    top = jnp.max(biased.astype(small), axis=axes, keepdims=True)
    if axis_name is not None:
        top = jax.lax.pmax(top, axis_name)
    return jnp.clip(top.astype(int_dtype) - bias + 1, 2 - bias, bias - 1)


def power_of_two(k: jax.Array, dtype: Any) -> jax.Array:
    """``2^k`` exactly, for integer ``k`` in [1 - bias, bias] (a normal number)."""
    int_dtype, nmant, bias = _exponent_bits(dtype)
    return jax.lax.bitcast_convert_type((k.astype(int_dtype) + bias) << nmant, dtype)


def _fast_factors(
    grad_sq: jax.Array, param_sq: jax.Array, clipping: jax.Array, eps: jax.Array
) -> tuple[UnitFactors, UnitStats, jax.Array, jax.Array]:
    """Factors from plain sums of squares; also the bound and norm floor for the range check."""
    floor = jnp.maximum(_norms.safe_sqrt(param_sq), eps)
    bound = clipping * floor
    # Squares compare safely here: the range check sends bounds below ~1e-13 elsewhere.
    clipped = grad_sq > bound * bound
    grad_norm = jnp.sqrt(jnp.where(clipped, grad_sq, 1))
    scale = jnp.where(clipped, bound / grad_norm, 1)
    factors = UnitFactors(jnp.ones_like(scale), scale, clipped)
    norm = _norms.safe_sqrt(grad_sq)
    ratio = norm / jnp.where(floor > 0, floor, 1)
    stats = UnitStats(norm, jnp.where(clipped, bound, norm), ratio)
    return factors, stats, bound, floor


def _scaled_norm(
    x: jax.Array, axes: tuple[int, ...], dtype: Any, axis_name: AxisName
) -> tuple[jax.Array, jax.Array]:
    """``(m, e)`` with ‖unit‖ = m · 2^e, m computed on the unit scaled by 2^-e."""
    e = unit_exponent(x, axes, dtype, axis_name)
    scaled = x.astype(jnp.result_type(x.dtype, dtype)) * power_of_two(-e, dtype)
    m = _norms.safe_sqrt(_norms.unit_squared_norm(scaled, axes, dtype, axis_name))
    return m, e


def _exact_factors(
    leaf: LeafInputs, dtype: Any, clipping: jax.Array, eps: jax.Array
) -> tuple[UnitFactors, UnitStats]:
    """Factors from power-of-two-scaled norms: right over the dtype's whole range."""
    m_g, e_g = _scaled_norm(leaf.grad, leaf.axes, dtype, leaf.axis_name)
    m_w, e_w = _scaled_norm(leaf.param, leaf.axes, dtype, leaf.axis_name)
    nonzero = m_g > 0
    m_g_safe = jnp.where(nonzero, m_g, 1)
    # c = bound / m_g = λ · max(m_w · 2^e_w, ε) / m_g, without forming ‖W‖ (it may overflow).
    bound_over_m = jnp.maximum(clipping * m_w / m_g_safe * power_of_two(e_w, dtype),
                               clipping * eps / m_g_safe)
    c = jnp.where(nonzero, bound_over_m, jnp.inf)
    scale_g = power_of_two(e_g, dtype)
    # ‖G‖ = m_g · 2^e_g > bound  ⇔  c < 2^e_g; a NaN λ, ε or W clips (to NaN).
    clipped = ~(c >= scale_g)
    factors = UnitFactors(
        jnp.where(clipped, power_of_two(-e_g, dtype), 1), jnp.where(clipped, c, 1), clipped
    )
    grad_norm = m_g * scale_g
    ratio = jnp.where(nonzero, clipping * (scale_g / c), 0)
    stats = UnitStats(grad_norm, jnp.where(clipped, c * m_g, grad_norm), ratio)
    return factors, stats


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


def unit_factors(
    leaves: Sequence[LeafInputs], clipping: Any, eps: Any, *, with_stats: bool = False
) -> tuple[list[UnitFactors], list[UnitStats] | None]:
    """Clip factors and statistics of every unit of every leaf.

    The fast path reads each gradient and parameter once (the sums of squares).
    The exact path reads them again, inside the one ``lax.cond`` branch taken
    only in a step where some unit's sums are outside the fast path's range;
    inside ``shard_map`` the predicate is agreed over every named mesh axis
    (one scalar all-reduce), so all devices take the same branch.

    Args:
        leaves: the leaves to clip.
        clipping: λ (a scalar; ≤ 0 clips every nonzero unit to 0, NaN to NaN).
        eps: ε (a scalar; a negative value acts as 0).
        with_stats: also return each unit's :class:`UnitStats`.

    Returns:
        ``(factors, stats)``, one per leaf, in keepdims shape; ``stats`` is None
        without ``with_stats``.
    """
    if not leaves:
        return [], [] if with_stats else None
    dtypes = [_norms.accumulation_dtype(x.grad.dtype, x.param.dtype) for x in leaves]
    fast, in_range = [], []
    for leaf, dtype in zip(leaves, dtypes, strict=True):
        grad_sq = _norms.unit_squared_norm(leaf.grad, leaf.axes, dtype, leaf.axis_name)
        param_sq = _norms.unit_squared_norm(leaf.param, leaf.axes, dtype, leaf.axis_name)
        lam, floor_eps = _hyperparameters(clipping, eps, dtype)
        factors, stats, bound, floor = _fast_factors(grad_sq, param_sq, lam, floor_eps)
        fan_in = _fan_in(leaf)
        low = reliable_floor(fan_in, dtype, leaf.axis_name is not None)
        ok = (grad_sq < jnp.inf) & (param_sq < jnp.inf) & (bound >= low) & (floor >= low)
        fast.append((factors, stats) if with_stats else (factors,))
        in_range.append(jnp.all(ok))
    all_in_range = functools.reduce(jnp.logical_and, in_range)
    named = _mesh_axes([leaf.axis_name for leaf in leaves])
    if named:
        all_in_range = jax.lax.pmin(all_in_range.astype(jnp.int32), named) > 0

    def exact() -> list[tuple[Any, ...]]:
        pairs = [
            _exact_factors(leaf, dtype, *_hyperparameters(clipping, eps, dtype))
            for leaf, dtype in zip(leaves, dtypes, strict=True)
        ]
        return [pair if with_stats else pair[:1] for pair in pairs]

    chosen = jax.lax.cond(all_in_range, lambda: fast, exact)
    return [c[0] for c in chosen], ([c[1] for c in chosen] if with_stats else None)


def _fan_in(leaf: LeafInputs) -> int:
    shape = jnp.shape(leaf.grad)
    size = 1
    for axis in leaf.axes:
        size *= shape[axis]
    return size


def _hyperparameters(clipping: Any, eps: Any, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """λ clamped at 0 (NaN stays NaN) and ε, in the accumulation dtype."""
    lam = jnp.asarray(clipping, dtype)
    return jnp.where(lam <= 0, 0, lam), jnp.asarray(eps, dtype)


def apply(grad: jax.Array, factors: UnitFactors) -> jax.Array:
    """``grad`` with its clipped units multiplied by both factors; the others as they came.

    The factors keep their keepdims shape: multiplying broadcasts them without
    materialising a full-size array (which would break Explicit sharding).
    """
    scaled = (grad * factors.prescale * factors.scale).astype(grad.dtype)
    return jnp.where(factors.clipped, scaled, grad)
