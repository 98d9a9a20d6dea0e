"""Clipping statistics: how much AGC clipped, and the norms around it (``track_stats=True``).

Everything here is computed from the per-unit norms that clipping already has
(:class:`agc_optax._clip.UnitStats`); no statistic reads the gradients again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from agc_optax import _clip


class AGCState(NamedTuple):
    """Clipping statistics of the last update (only with ``track_stats=True``).

    Norms are float32 L2 norms over the non-excluded leaves (over one leaf for
    the ``leaf_`` dicts, keyed by path string); they saturate at inf only where
    the true value exceeds float32's largest number.

    Attributes:
        clip_fraction: clipped units over all non-excluded units.
        leaf_clip_fraction: the fraction of each leaf's units that were clipped.
        grad_norm: the gradient norm before clipping.
        clipped_grad_norm: the gradient norm after clipping.
        max_ratio: the largest per-unit ratio ‖G_i‖ / max(‖W_i‖, ε); clipping
            happened in this step exactly where it exceeds λ.
        leaf_grad_norm: ``grad_norm`` of each leaf.
        leaf_clipped_grad_norm: ``clipped_grad_norm`` of each leaf.
        leaf_max_ratio: ``max_ratio`` of each leaf.
    """

    clip_fraction: jax.Array
    leaf_clip_fraction: dict[str, jax.Array]
    grad_norm: jax.Array
    clipped_grad_norm: jax.Array
    max_ratio: jax.Array
    leaf_grad_norm: dict[str, jax.Array]
    leaf_clipped_grad_norm: dict[str, jax.Array]
    leaf_max_ratio: dict[str, jax.Array]


def _norm_of(norms: Sequence[jax.Array]) -> jax.Array:
    """L2 norm of all entries of ``norms`` (each ≥ 0), scaled by the largest against overflow."""
    peak = jnp.max(jnp.stack([jnp.max(n) for n in norms]))
    safe = jnp.where(jnp.isfinite(peak) & (peak > 0), peak, 1)
    total = sum(jnp.sum(jnp.square(n / safe)) for n in norms)
    return jnp.where(jnp.isfinite(peak), safe * jnp.sqrt(total), peak).astype(jnp.float32)


def _leaf_statistics(factors: _clip.UnitFactors, stats: _clip.UnitStats) -> list[jax.Array]:
    """(clipped units, ‖G‖, ‖clipped G‖, max ratio) of one leaf, in two reductions.

    Each norm is scaled by its largest unit norm, so it overflows only where the
    true value exceeds float32's range.
    """
    norms = jnp.stack([stats.grad_norm, stats.clipped_norm]).astype(jnp.float32)
    units = tuple(range(1, norms.ndim))
    *peaks, max_ratio = jnp.max(
        jnp.concatenate([norms, stats.ratio[None].astype(jnp.float32)]), axis=units
    )
    peaks = jnp.stack(peaks).reshape((2,) + (1,) * (norms.ndim - 1))
    safe = jnp.where(jnp.isfinite(peaks) & (peaks > 0), peaks, 1)
    count, *sums = jnp.sum(
        jnp.concatenate([factors.clipped[None].astype(jnp.float32), jnp.square(norms / safe)]),
        axis=units,
    )
    leaf_norms = [
        jnp.where(jnp.isfinite(p), s * jnp.sqrt(q), p)
        for p, s, q in zip(peaks.reshape(2), safe.reshape(2), sums, strict=True)
    ]
    return [count, *leaf_norms, max_ratio]


def statistics(
    paths: Sequence[str],
    num_units: Sequence[int],
    factors: Sequence[_clip.UnitFactors],
    stats: Sequence[_clip.UnitStats],
) -> AGCState:
    """The state ``track_stats=True`` returns, from each clipped leaf's per-unit values.

    Args:
        paths: the clipped leaves' path strings.
        num_units: their numbers of units.
        factors: their clip factors (for the clipped-unit masks).
        stats: their per-unit norms.

    Returns:
        The :class:`AGCState` of this update.
    """
    if not paths:
        return initial([])
    per_leaf = [_leaf_statistics(f, s) for f, s in zip(factors, stats, strict=True)]
    counts, norms, clipped_norms, ratios = (list(column) for column in zip(*per_leaf, strict=True))
    return AGCState(
        clip_fraction=sum(counts) / max(sum(num_units), 1),
        leaf_clip_fraction={
            p: c / n for p, c, n in zip(paths, counts, num_units, strict=True)
        },
        grad_norm=_norm_of(norms),
        clipped_grad_norm=_norm_of(clipped_norms),
        max_ratio=jnp.max(jnp.stack(ratios)),
        leaf_grad_norm=dict(zip(paths, norms, strict=True)),
        leaf_clipped_grad_norm=dict(zip(paths, clipped_norms, strict=True)),
        leaf_max_ratio=dict(zip(paths, ratios, strict=True)),
    )


def initial(paths: Sequence[str]) -> AGCState:
    """All-zero statistics for the clipped leaves ``paths`` (the state before any update)."""
    zero = jnp.zeros([], jnp.float32)
    per_leaf = {p: zero for p in paths}
    return AGCState(zero, dict(per_leaf), zero, zero, zero, dict(per_leaf), dict(per_leaf),
                    dict(per_leaf))
