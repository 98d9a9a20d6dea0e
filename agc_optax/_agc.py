"""Adaptive Gradient Clipping as an optax ``GradientTransformation``.

For every unit i of a parameter W with gradient G (Brock et al. 2021, eq. 3)::

    G_i ← λ · max(‖W_i‖, ε) / ‖G_i‖ · G_i    if ‖G_i‖ > λ · max(‖W_i‖, ε)

and G_i is left bit-for-bit unchanged otherwise. Norms are Frobenius norms over
the unit's fan-in axes (see :mod:`agc_optax._unit_axes`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agc_optax import _exclude, _paths, _unit_axes

AxisName = Hashable | Sequence[Hashable] | None
# One name or tuple for every leaf, or a rule ``(path, leaf) -> names`` per leaf.
AxisNameSpec = AxisName | Callable[[str, Any], AxisName]


class AGCState(NamedTuple):
    """Clipping statistics of the last update (only with ``track_stats=True``).

    Attributes:
        clip_fraction: float32 scalar, clipped units over all non-excluded units.
        leaf_clip_fraction: dict from each non-excluded leaf's path string to the
            float32 fraction of its units that were clipped.
    """

    clip_fraction: jax.Array
    leaf_clip_fraction: dict[str, jax.Array]


_NO_PARAMS_MSG = (
    "agc needs the current parameters: AGC compares each unit's gradient norm with "
    "the norm of its parameters. Call `update(grads, opt_state, params)`; with "
    "`optax.chain`, pass `params` to the chain's update. (nnx.Optimizer does this.)"
)

def _check_hyperparameter(name: str, value: Any, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return  # Arrays and tracers (e.g. from inject_hyperparams) are not checked.
    if not math.isfinite(float(value)):
        raise ValueError(f"agc: {name} must be finite, got {value!r}.")
    if positive and value <= 0:
        raise ValueError(
            f"agc: {name} must be > 0, got {value!r}. It is the largest allowed ratio "
            "‖grad‖/‖param‖ per unit (the paper uses 0.01 at batch 4096); to switch AGC "
            "off, leave it out of the chain."
        )
    if not positive and value < 0:
        raise ValueError(f"agc: {name} must be >= 0, got {value!r} (the paper uses 1e-3).")


def _safe_sqrt(squared: jax.Array) -> jax.Array:
    """``sqrt`` whose derivative stays finite at 0 (where it returns 0)."""
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1)), squared)


def _unit_norm(x: jax.Array, axes: tuple[int, ...], acc: Any, axis_name: AxisName) -> jax.Array:
    """Per-unit L2 norm of ``x`` accumulated in dtype ``acc``, with keepdims shape.

    Accumulating in float32 keeps float16/bfloat16 sums of squares from
    overflowing. A float32 unit whose sum of squares overflows (elements above
    ~1e19) gets an infinite norm, so AGC scales it to zero: finite, never NaN.
    """
    squared = jnp.sum(_unit_axes.abs_squared(x, acc), axis=axes, keepdims=True)
    if axis_name is not None:
        squared = jax.lax.psum(squared, axis_name)
    return _safe_sqrt(squared)


def _clip_leaf(
    grad: jax.Array,
    param: jax.Array,
    axes: tuple[int, ...],
    clipping: jax.typing.ArrayLike,
    eps: jax.typing.ArrayLike,
    axis_name: AxisName,
) -> tuple[jax.Array, jax.Array]:
    """Clips one leaf unit-wise; returns the clipped gradient and the clipped-unit mask."""
    acc = _unit_axes.accumulation_dtype(grad.dtype, param.dtype)
    grad_norm = _unit_norm(grad, axes, acc, axis_name)
    param_norm = _unit_norm(param, axes, acc, axis_name)
    max_norm = jnp.asarray(clipping, acc) * jnp.maximum(param_norm, jnp.asarray(eps, acc))
    clipped = grad_norm > max_norm
    # The per-unit scale keeps its keepdims shape: multiplying broadcasts it
    # without materialising a full-size array (which would break Explicit sharding).
    scale = jnp.where(clipped, max_norm / jnp.where(clipped, grad_norm, 1), 1)
    return (grad * scale).astype(grad.dtype), clipped


def _check_leaf_pair(path: str, grad: Any, param: Any) -> None:
    if jnp.shape(grad) != jnp.shape(param):
        raise ValueError(
            f"agc: leaf {path!r} has gradient shape {jnp.shape(grad)} but parameter shape "
            f"{jnp.shape(param)}; pass the params the gradients were taken with."
        )
    for name, leaf in (("gradient", grad), ("parameter", param)):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            raise TypeError(
                f"agc: {name} of leaf {path!r} has dtype {jnp.result_type(leaf)}; AGC only "
                "handles floating and complex leaves. Exclude this leaf with "
                f"exclude={path!r} or leave it out with optax.masked."
            )


def _flatten_pair(updates: Any, params: Any) -> tuple[list[str], list[Any], list[Any], Any]:
    paths, grads, treedef = _paths.flatten_with_path_strings(updates)
    param_paths, param_leaves, _ = _paths.flatten_with_path_strings(params)
    if paths != param_paths:
        grad_set, param_set = set(paths), set(param_paths)
        only_grads = [p for p in paths if p not in param_set]
        only_params = [p for p in param_paths if p not in grad_set]
        raise ValueError(
            "agc: gradients and params have different structures. Leaves only in the "
            f"gradients: {_paths.describe_paths(only_grads)}; only in the params: "
            f"{_paths.describe_paths(only_params)}. Pass the params that the gradients "
            "were taken with (same tree, same order)."
        )
    return paths, grads, param_leaves, treedef


class _LeafPlan(NamedTuple):
    path: str
    axes: tuple[int, ...]
    excluded: bool
    num_units: int
    axis_name: AxisName


def _plan(
    paths: list[str], params: list[Any], unit_axes: Any, exclude: Any, axis_name: AxisNameSpec
) -> list[_LeafPlan]:
    """Decides, per leaf and at trace time, its fan-in axes, psum axes and whether it is clipped."""
    excluded = _exclude.resolve_exclude(exclude, paths, params)
    axes = _unit_axes.resolve_unit_axes(unit_axes, paths, params)
    plans = []
    for path, param, leaf_axes, skip in zip(paths, params, axes, excluded, strict=True):
        shape = jnp.shape(param)
        units = math.prod(n for i, n in enumerate(shape) if i not in leaf_axes)
        names = axis_name(path, param) if callable(axis_name) else axis_name
        plans.append(_LeafPlan(path, leaf_axes, skip or math.prod(shape) == 0, units, names))
    return plans


def _initial_stats(plans: list[_LeafPlan]) -> AGCState:
    return AGCState(
        clip_fraction=jnp.zeros([], jnp.float32),
        leaf_clip_fraction={p.path: jnp.zeros([], jnp.float32) for p in plans if not p.excluded},
    )


def agc(
    clipping: jax.typing.ArrayLike = 0.01,
    eps: jax.typing.ArrayLike = 1e-3,
    axis: int | tuple[int, ...] | None = None,
    *,
    unit_axes: _unit_axes.UnitAxesSpec = None,
    exclude: _exclude.ExcludeSpec = None,
    track_stats: bool = False,
    axis_name: AxisNameSpec = None,
) -> optax.GradientTransformation:
    """Adaptive Gradient Clipping: clips each unit's gradient relative to its weights.

    Every unit (the slice of a parameter producing one output feature) whose
    gradient norm exceeds ``clipping · max(‖param unit‖, eps)`` is rescaled to
    exactly that norm; every other unit passes through bit-for-bit. Chain it
    before any optimizer: ``optax.chain(agc(0.01), optax.sgd(...))``.

    Args:
        clipping: λ, the largest allowed ratio ‖G_i‖ / max(‖W_i‖, ε). May be a
            traced value (``optax.inject_hyperparams(agc)(clipping=...)``).
        eps: ε, the floor on parameter norms that lets zero-initialised
            parameters learn.
        axis: optax-compatible alternative to ``unit_axes``: one int or tuple
            of axes reduced for every leaf (third positional argument, as in
            ``optax.adaptive_grad_clip``). Mutually exclusive with ``unit_axes``.
        unit_axes: the fan-in axes of each leaf. None: every axis but the last
            (Flax/Haiku layout; scalars and vectors are one unit);
            ``"output_first"``: every axis but the first (PyTorch/Equinox); a
            callable ``(path, leaf) -> axes`` such as :func:`nnx_unit_axes`; or a
            pytree with the params' paths holding a tuple of axes per leaf.
        exclude: leaves to leave unclipped (the paper excludes the classifier): a
            regular expression or list of them searched in each leaf's path
            string (keys joined by ``/``, e.g. ``"head/kernel"``); a callable
            ``(path, leaf) -> bool``; or a pytree of bools. A pattern that
            matches no leaf raises ValueError.
        track_stats: if True the state is an :class:`AGCState` holding
            ``clip_fraction`` and ``leaf_clip_fraction`` of the last update
            (read them with ``optax.tree_utils.tree_get``). If False the state
            is ``optax.EmptyState()`` and no extra work is done.
        axis_name: mesh axis name(s) over which parameters are split *inside*
            ``shard_map``/``pmap``; squared norms are summed over them with
            ``psum`` so each device clips with the global unit norms: one name
            or tuple for every leaf, or a callable ``(path, leaf) -> names`` (None
            for a leaf whose fan-in is whole on every device) when leaves are
            split differently. Not needed under ``jax.jit`` with sharded arrays.

    Returns:
        An ``optax.GradientTransformation``. Its ``update(updates, state,
        params)`` requires ``params``.

    References:
        Brock, De, Smith, Simonyan, `High-Performance Large-Scale Image
        Recognition Without Normalization <https://arxiv.org/abs/2102.06171>`_,
        ICML 2021, section 4.1.
    """
    _check_hyperparameter("clipping", clipping, positive=True)
    _check_hyperparameter("eps", eps, positive=False)
    if axis is not None:
        if unit_axes is not None:
            raise ValueError("agc: pass either unit_axes or optax's axis=, not both.")
        fixed_axes = axis
        unit_axes = _unit_axes.leaf_rule(lambda path, x: fixed_axes)

    def init_fn(params: optax.Params) -> optax.OptState:
        paths, leaves, _ = _paths.flatten_with_path_strings(params)
        plans = _plan(paths, leaves, unit_axes, exclude, axis_name)  # Fails early on bad args.
        return _initial_stats(plans) if track_stats else optax.EmptyState()

    def update_fn(
        updates: optax.Updates, state: optax.OptState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, optax.OptState]:
        if params is None:
            raise ValueError(_NO_PARAMS_MSG)
        paths, grads, param_leaves, treedef = _flatten_pair(updates, params)
        plans = _plan(paths, param_leaves, unit_axes, exclude, axis_name)
        clipped_grads, clipped_counts = [], {}
        for plan, grad, param in zip(plans, grads, param_leaves, strict=True):
            if plan.excluded:
                clipped_grads.append(grad)
                continue
            _check_leaf_pair(plan.path, grad, param)
            new_grad, clipped = _clip_leaf(
                grad, param, plan.axes, clipping, eps, plan.axis_name
            )
            clipped_grads.append(new_grad)
            if track_stats:
                clipped_counts[plan.path] = jnp.sum(clipped, dtype=jnp.int32)
        new_updates = jax.tree_util.tree_unflatten(treedef, clipped_grads)
        if not track_stats:
            return new_updates, state
        units = {p.path: p.num_units for p in plans if not p.excluded}
        total_units = max(sum(units.values()), 1)
        total_clipped = sum(clipped_counts.values(), jnp.zeros([], jnp.int32))
        stats = AGCState(
            clip_fraction=total_clipped.astype(jnp.float32) / total_units,
            leaf_clip_fraction={
                path: count.astype(jnp.float32) / units[path]
                for path, count in clipped_counts.items()
            },
        )
        return new_updates, stats

    return optax.GradientTransformation(init_fn, update_fn)


adaptive_grad_clip = agc


def clip_grads(
    grads: optax.Updates,
    params: optax.Params,
    clipping: jax.typing.ArrayLike = 0.01,
    eps: jax.typing.ArrayLike = 1e-3,
    *,
    unit_axes: _unit_axes.UnitAxesSpec = None,
    exclude: _exclude.ExcludeSpec = None,
    axis_name: AxisNameSpec = None,
) -> optax.Updates:
    """AGC as a pure function: the gradients with every over-large unit rescaled.

    The functional form of :func:`agc` (what Composer calls ``apply_agc``), for
    training loops that do not use optax chains.

    Args:
        grads: the gradients.
        params: the parameters they were taken at (same tree).
        clipping: λ, the largest allowed ratio ‖G_i‖ / max(‖W_i‖, ε).
        eps: ε, the floor on parameter norms.
        unit_axes: fan-in axes, as in :func:`agc`.
        exclude: leaves to leave unclipped, as in :func:`agc`.
        axis_name: mesh axes to ``psum`` norms over inside ``shard_map``.

    Returns:
        The clipped gradients, same tree and dtypes as ``grads``.

    References:
        Brock et al., https://arxiv.org/abs/2102.06171, section 4.1.
    """
    transform = agc(clipping, eps, unit_axes=unit_axes, exclude=exclude, axis_name=axis_name)
    clipped, _ = transform.update(grads, optax.EmptyState(), params)
    return clipped


def with_agc(
    optimizer: optax.GradientTransformation,
    clipping: jax.typing.ArrayLike = 0.01,
    eps: jax.typing.ArrayLike = 1e-3,
    **agc_kwargs: Any,
) -> optax.GradientTransformation:
    """Wraps any optimizer so that AGC clips the gradients it receives.

    Args:
        optimizer: the optax optimizer to wrap.
        clipping: λ, as in :func:`agc`.
        eps: ε, as in :func:`agc`.
        **agc_kwargs: any other keyword argument of :func:`agc` (``exclude``,
            ``unit_axes``, ``track_stats``, ``axis_name``).

    Returns:
        ``optax.chain(agc(clipping, eps, **agc_kwargs), optimizer)``.
    """
    return optax.chain(agc(clipping, eps, **agc_kwargs), optimizer)
