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
  element, so its sum of squares neither overflows nor underflows.

Both give each unit's norms as ``sqrt(sum) · 2^e`` (``e = 0`` on the fast
path), and one formula after the conditional turns them into two factors,
``2^-e`` and ``bound / sqrt(sum)``, each a normal number whenever the clipped
unit's largest element is. Computing the factors after the conditional lets
XLA fuse them with the final multiplication.

Subnormal inputs count as zero (XLA flushes them in arithmetic); a unit left
unclipped is returned as it came, bit for bit, subnormals included.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence
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


class UnitNorms(NamedTuple):
    """Per-unit norms as ``‖G_i‖ = sqrt(grad_sq) · 2^grad_exp`` (and likewise for W).

    Keepdims shape; sums in the accumulation dtype, exponents int32 (int64 for
    float64). The fast path gives the plain sums of squares and exponents 0.
    """

    grad_sq: jax.Array
    param_sq: jax.Array
    grad_exp: jax.Array
    param_exp: jax.Array


class UnitFactors(NamedTuple):
    """What clips one leaf, per unit (keepdims shape).

    With ``m_g = sqrt(grad_sq)``, the unit is clipped iff ``bound_over_m < 2^grad_exp``
    (iff ``‖G_i‖ = m_g · 2^grad_exp`` exceeds the bound), and then becomes
    ``G · 2^-grad_exp · bound_over_m``. See :func:`apply`.
    """

    bound_over_m: jax.Array  # λ · max(‖W_i‖, ε) / m_g; inf for a zero gradient.
    grad_exp: jax.Array  # int.

    @property
    def clipped(self) -> jax.Array:
        """The clipped-unit mask (a NaN bound clips, to NaN)."""
        return ~(self.bound_over_m >= power_of_two(self.grad_exp, self.bound_over_m.dtype))


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


def _in_range(
    norms: UnitNorms, clipping: jax.Array, eps: jax.Array, low: float
) -> jax.Array:
    """Whether every unit's plain sums of squares are finite and its bound at least ``low``."""
    floor = jnp.maximum(_norms.safe_sqrt(norms.param_sq), eps)
    ok = (norms.grad_sq < jnp.inf) & (norms.param_sq < jnp.inf)
    return jnp.all(ok & (floor >= low) & (clipping * floor >= low))


def _scaled_sum(
    x: jax.Array, axes: tuple[int, ...], dtype: Any, axis_name: AxisName
) -> tuple[jax.Array, jax.Array]:
    """``(s, e)`` with ‖unit‖ = sqrt(s) · 2^e: the sum of squares of the unit scaled by 2^-e."""
    e = unit_exponent(x, axes, dtype, axis_name)
    scaled = x.astype(jnp.result_type(x.dtype, dtype)) * power_of_two(-e, dtype)
    return _norms.unit_squared_norm(scaled, axes, dtype, axis_name), e


def _exact_norms(leaf: LeafInputs, dtype: Any) -> UnitNorms:
    """Norms from power-of-two-scaled sums: right over the dtype's whole range."""
    grad_sq, grad_exp = _scaled_sum(leaf.grad, leaf.axes, dtype, leaf.axis_name)
    param_sq, param_exp = _scaled_sum(leaf.param, leaf.axes, dtype, leaf.axis_name)
    return UnitNorms(grad_sq, param_sq, grad_exp, param_exp)


def factors_and_stats(
    norms: UnitNorms, clipping: jax.Array, eps: jax.Array, with_stats: bool
) -> tuple[UnitFactors, UnitStats | None]:
    """Clip factors (and statistics) from norms in either path's representation.

    With ``m_g = sqrt(grad_sq)``, ``c = λ · max(m_w · 2^e_w, ε) / m_g`` is the bound
    over ``m_g`` (formed without ‖W‖, which may overflow); the unit is clipped iff
    ``‖G‖ = m_g · 2^e_g`` exceeds the bound, i.e. iff ``c < 2^e_g``. A NaN λ, ε or
    W clips to NaN; a zero gradient is never clipped.
    """
    dtype = norms.grad_sq.dtype
    nonzero = norms.grad_sq > 0
    inverse_m_g = 1 / jnp.sqrt(jnp.where(nonzero, norms.grad_sq, 1))
    m_w = _norms.safe_sqrt(norms.param_sq)
    bound_over_m = jnp.maximum(
        clipping * (m_w * inverse_m_g) * power_of_two(norms.param_exp, dtype),
        (clipping * eps) * inverse_m_g,
    )
    c = jnp.where(nonzero, bound_over_m, jnp.inf)
    factors = UnitFactors(c, norms.grad_exp)
    if not with_stats:
        return factors, None
    grad_scale = power_of_two(norms.grad_exp, dtype)
    clipped = factors.clipped
    m_g = _norms.safe_sqrt(norms.grad_sq)
    grad_norm = m_g * grad_scale
    ratio = jnp.where(nonzero, clipping * (grad_scale / c), 0)
    return factors, UnitStats(grad_norm, jnp.where(clipped, c * m_g, grad_norm), ratio)


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
    dtypes = [_norms.accumulation_dtype(x.grad.dtype, x.param.dtype) for x in leaves]
    hyper = [_hyperparameters(clipping, eps, dtype) for dtype in dtypes]
    sums, in_range = [], []
    for leaf, dtype, (lam, floor_eps) in zip(leaves, dtypes, hyper, strict=True):
        grad_sq = _norms.unit_squared_norm(leaf.grad, leaf.axes, dtype, leaf.axis_name)
        param_sq = _norms.unit_squared_norm(leaf.param, leaf.axes, dtype, leaf.axis_name)
        zero = jnp.zeros_like(grad_sq, _exponent_bits(dtype)[0])  # Keeps an Explicit sharding.
        sums.append(UnitNorms(grad_sq, param_sq, zero, zero))
        low = reliable_floor(_fan_in(leaf), dtype, leaf.axis_name is not None)
        in_range.append(_in_range(sums[-1], lam, floor_eps, low))
    if not leaves:
        return [], [] if with_stats else None
    all_in_range = functools.reduce(jnp.logical_and, in_range)
    named = _mesh_axes([leaf.axis_name for leaf in leaves])
    if named:
        all_in_range = jax.lax.pmin(all_in_range.astype(jnp.int32), named) > 0

    # Each branch computes its factors itself, so that XLA fuses them per leaf there.
    def fast() -> list[tuple[UnitFactors, UnitStats | None]]:
        return [factors_and_stats(n, *h, with_stats) for n, h in zip(sums, hyper, strict=True)]

    def exact() -> list[tuple[UnitFactors, UnitStats | None]]:
        return [
            factors_and_stats(_exact_norms(leaf, dtype), *h, with_stats)
            for leaf, dtype, h in zip(leaves, dtypes, hyper, strict=True)
        ]

    pairs = fast_or_exact(all_in_range, fast, exact)
    return [f for f, _ in pairs], ([s for _, s in pairs] if with_stats else None)


def fast_or_exact(in_range: jax.Array, fast: Callable[[], Any], exact: Callable[[], Any]) -> Any:
    """``fast()`` if every unit is in the fast path's range, else ``exact()`` (a ``lax.cond``).

    Its own function so that ``benchmarks/bench_agc.py`` can trace the update
    without the conditional, to show what the range check costs.
    """
    return jax.lax.cond(in_range, fast, exact)


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
    """``grad`` with each clipped unit multiplied by ``2^-e · bound_over_m``, others unchanged.

    The per-unit arrays keep their keepdims shape: multiplying broadcasts them
    without materialising a full-size array (which would break Explicit sharding).
    Only ``bound_over_m`` is computed per unit ahead of this; the mask and the power
    of two are cheap enough for XLA to fuse into the multiplication.
    """
    clipped = factors.clipped
    dtype = factors.bound_over_m.dtype
    # 1 on unclipped units, where bound_over_m may be inf: keeps the derivative finite.
    prescale = jnp.where(clipped, power_of_two(-factors.grad_exp, dtype), 1)
    scale = jnp.where(clipped, factors.bound_over_m, 1)
    return jnp.where(clipped, (grad * prescale * scale).astype(grad.dtype), grad)
