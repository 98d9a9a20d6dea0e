"""Adaptive Gradient Clipping as an optax ``GradientTransformation``.

For every unit i of a parameter W with gradient G (Brock et al. 2021, eq. 3)::

    G_i ← λ · max(‖W_i‖, ε) / ‖G_i‖ · G_i    if ‖G_i‖ > λ · max(‖W_i‖, ε)

and G_i is left bit-for-bit unchanged otherwise. Norms are Frobenius norms over
the unit's fan-in axes (see :mod:`agc_optax._unit_axes`); the clip factors are
right over each dtype's whole finite range (see :mod:`agc_optax._clip`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agc_optax import _clip, _exclude, _paths, _stats, _unit_axes
from agc_optax._stats import AGCState as AGCState

AxisName = Hashable | Sequence[Hashable] | None
# One name or tuple for every leaf, or a rule ``(path, leaf) -> names`` per leaf.
AxisNameSpec = AxisName | Callable[[str, Any], AxisName]


_NO_PARAMS_MSG = (
    "agc needs the current parameters: AGC compares each unit's gradient norm with "
    "the norm of its parameters. Call `update(grads, opt_state, params)`; with "
    "`optax.chain`, pass `params` to the chain's update. (nnx.Optimizer does this.)"
)

def _hyperparameter(name: str, value: Any, *, positive: bool) -> Any:
    """Validates λ or ε and returns it as a scalar (a shape-(1,) array becomes shape ()).

    Python numbers, NumPy scalars and concrete arrays are range-checked (finite;
    > 0 for λ, ≥ 0 for ε); a traced array (under ``jit`` or
    ``optax.inject_hyperparams``) can only be checked for shape and dtype.
    """
    if isinstance(value, bool | np.bool_ | str) or not (
        isinstance(value, int | float | np.number) or hasattr(value, "dtype")
    ):
        raise TypeError(
            f"agc: {name} must be a float or a scalar array, got {type(value).__name__} "
            f"{value!r}."
        )
    dtype = value.dtype if hasattr(value, "dtype") else np.result_type(value)
    shape = np.shape(value)
    if shape not in ((), (1,)) or not (
        jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    ):
        raise TypeError(
            f"agc: {name} must be a real scalar (or a shape-(1,) array, as optax takes), got "
            f"shape {shape} and dtype {dtype}."
        )
    if shape == (1,):
        value = jnp.reshape(value, ()) if isinstance(value, jax.Array) else np.reshape(value, ())
    if isinstance(value, jax.core.Tracer):
        return value
    number = float(np.asarray(value))
    if not math.isfinite(number):
        raise ValueError(f"agc: {name} must be finite, got {number!r}.")
    if positive and number <= 0:
        raise ValueError(
            f"agc: {name} must be > 0, got {number!r}. It is the largest allowed ratio "
            "‖grad‖/‖param‖ per unit (the paper uses 0.01 at batch 4096); to switch AGC "
            "off, leave it out of the chain."
        )
    if not positive and number < 0:
        raise ValueError(f"agc: {name} must be >= 0, got {number!r} (the paper uses 1e-3).")
    return value


class _LeafPlan(NamedTuple):
    path: str
    axes: tuple[int, ...]
    excluded: bool
    num_units: int
    axis_name: AxisName


def _check_shapes(path: str, grad: Any, param: Any) -> None:
    if jnp.shape(grad) != jnp.shape(param):
        raise ValueError(
            f"agc: leaf {path!r} has gradient shape {jnp.shape(grad)} but parameter shape "
            f"{jnp.shape(param)}; pass the params the gradients were taken with."
        )


def _check_dtypes(path: str, grad: Any, param: Any) -> None:
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
            "were taken with (same tree, same order). For an Equinox model, whose "
            "eqx.filter_grad gradients leave out the non-array fields, pass its arrays: "
            "eqx.filter(model, eqx.is_inexact_array), or eqx.partition's first half."
        )
    return paths, grads, param_leaves, treedef


def _plan(
    paths: list[str],
    params: list[Any],
    unit_axes: Any,
    axis: Any,
    exclude: Any,
    axis_name: AxisNameSpec,
) -> list[_LeafPlan]:
    """Decides, per leaf and at trace time, its fan-in axes, psum axes and whether it is clipped."""
    excluded = _exclude.resolve_exclude(exclude, paths, params)
    axes = _unit_axes.resolve_unit_axes(unit_axes, paths, params, axis)
    if callable(axis_name):
        _unit_axes.check_leaf_rule(axis_name, "axis_name")
    plans = []
    for path, param, leaf_axes, skip in zip(paths, params, axes, excluded, strict=True):
        shape = jnp.shape(param)
        units = math.prod(n for i, n in enumerate(shape) if i not in leaf_axes)
        names = axis_name(path, param) if callable(axis_name) else axis_name
        plans.append(_LeafPlan(path, leaf_axes, skip or math.prod(shape) == 0, units, names))
    return plans


def _clip_tree(
    plans: list[_LeafPlan],
    grads: list[Any],
    params: list[Any],
    clipping: jax.typing.ArrayLike,
    eps: jax.typing.ArrayLike,
    track_stats: bool,
) -> tuple[list[Any], AGCState | None]:
    """Clips every non-excluded leaf; returns all gradient leaves, and the statistics."""
    for plan, grad, param in zip(plans, grads, params, strict=True):
        _check_shapes(plan.path, grad, param)
        if not plan.excluded:
            _check_dtypes(plan.path, grad, param)
    active = [i for i, plan in enumerate(plans) if not plan.excluded]
    leaves = [
        _clip.LeafInputs(grads[i], params[i], plans[i].axes, plans[i].axis_name) for i in active
    ]
    factors, unit_stats = _clip.unit_factors(leaves, clipping, eps, with_stats=track_stats)
    new_grads = list(grads)
    for i, leaf_factors in zip(active, factors, strict=True):
        new_grads[i] = _clip.apply(grads[i], leaf_factors)
    if not track_stats:
        return new_grads, None
    state = _stats.statistics(
        [plans[i].path for i in active], [plans[i].num_units for i in active], factors,
        unit_stats,
    )
    return new_grads, state


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
    exactly that norm, keeping its direction, for any finite gradient and
    parameter (a float32 gradient of 1e16 or 3e38 included); every other unit
    passes through bit-for-bit. Chain it before any optimizer:
    ``optax.chain(agc(0.01), optax.sgd(...))``.

    Args:
        clipping: λ, the largest allowed ratio ‖G_i‖ / max(‖W_i‖, ε): a
            positive finite number (a Python or NumPy scalar, or a concrete
            array of shape ``()`` or ``(1,)``; anything else raises TypeError
            or ValueError), or a traced scalar, e.g. under
            ``optax.inject_hyperparams(agc)(clipping=schedule)``. A traced
            value ≤ 0 allows no gradient at all: every unit is scaled to norm
            0 (the limit as λ → 0), so a schedule crossing zero stops the
            updates and never turns descent into ascent; a traced NaN makes
            every unit with a nonzero gradient NaN, as in optax.
        eps: ε, the floor on parameter norms that lets zero-initialised
            parameters learn: a finite number ≥ 0, checked like ``clipping``
            (a traced value < 0 acts as 0).
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
            matches no leaf, or an exclusion of every leaf, raises ValueError.
            Anchor patterns (``"^head/"``): ``"head"`` also matches
            ``"multihead/..."``.
        track_stats: a bool. If True the state is an :class:`AGCState` holding
            the last update's clip fractions, gradient norms before and after
            clipping and largest ‖G_i‖ / max(‖W_i‖, ε), in total and per leaf
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
    clipping = _hyperparameter("clipping", clipping, positive=True)
    eps = _hyperparameter("eps", eps, positive=False)
    if not isinstance(track_stats, bool | np.bool_):
        raise TypeError(f"agc: track_stats must be True or False, got {track_stats!r}.")
    if axis is not None and unit_axes is not None:
        raise ValueError(
            "agc: pass either unit_axes (axes per leaf) or optax's axis= (the same axes for "
            "every leaf), not both."
        )

    def init_fn(params: optax.Params) -> optax.OptState:
        paths, leaves, _ = _paths.flatten_with_path_strings(params)
        plans = _plan(paths, leaves, unit_axes, axis, exclude, axis_name)  # Fails early.
        if not track_stats:
            return optax.EmptyState()
        return _stats.initial([p.path for p in plans if not p.excluded])

    def update_fn(
        updates: optax.Updates, state: optax.OptState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, optax.OptState]:
        if params is None:
            raise ValueError(_NO_PARAMS_MSG)
        paths, grads, param_leaves, treedef = _flatten_pair(updates, params)
        plans = _plan(paths, param_leaves, unit_axes, axis, exclude, axis_name)
        new_grads, stats = _clip_tree(plans, grads, param_leaves, clipping, eps, track_stats)
        new_updates = jax.tree_util.tree_unflatten(treedef, new_grads)
        return new_updates, (stats if track_stats else state)

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


PLACEMENTS = ("before", "after")


def with_agc(
    optimizer: optax.GradientTransformation,
    clipping: jax.typing.ArrayLike = 0.01,
    eps: jax.typing.ArrayLike = 1e-3,
    *,
    placement: str = "before",
    **agc_kwargs: Any,
) -> optax.GradientTransformation:
    """Wraps any optimizer with AGC: on the gradients it receives, or on the updates it makes.

    ``placement="before"`` is the paper's AGC: each unit's *gradient* is clipped to
    ``λ · max(‖W_i‖, ε)`` before the optimizer sees it (the NF-ResNet + SGD setting).

    ``placement="after"`` clips each unit's *update* (learning rate, momentum, Adam's
    normalisation and weight decay included) to ``λ · max(‖W_i‖, ε)``: no unit may
    move by more than a fraction λ of its norm in one step, a per-unit trust ratio.
    This is what ``optax.chain(optax.adamw(...), adaptive_grad_clip(λ))`` does, and
    with AdamW it is the placement that works: on the example ViT at a learning rate
    where unclipped AdamW spikes, ``placement="after"`` with λ = 0.01 matched the
    stable control at a 10× lower rate, while clipping the gradients before AdamW
    recovered little (docs: Results and advice). The λ of the two placements are
    not interchangeable: after the optimizer, λ bounds ``‖ΔW_i‖ / ‖W_i‖`` per step.

    Args:
        optimizer: the optax optimizer to wrap.
        clipping: λ, as in :func:`agc`.
        eps: ε, as in :func:`agc`.
        placement: ``"before"`` (clip gradients) or ``"after"`` (clip updates).
        **agc_kwargs: any other keyword argument of :func:`agc` (``exclude``,
            ``unit_axes``, ``track_stats``, ``axis_name``).

    Returns:
        ``optax.chain(agc(clipping, eps, **agc_kwargs), optimizer)`` for ``"before"``,
        ``optax.chain(optimizer, agc(clipping, eps, **agc_kwargs))`` for ``"after"``.

    Raises:
        ValueError: ``placement`` is neither ``"before"`` nor ``"after"``.

    References:
        Brock et al., https://arxiv.org/abs/2102.06171, section 4.1 (AGC on gradients);
        You et al., https://arxiv.org/abs/1904.00962 (LAMB's per-layer trust ratio, the
        idea that "after" applies per unit as a bound).
    """
    if placement not in PLACEMENTS:
        raise ValueError(
            f"with_agc: placement must be 'before' (clip the gradients the optimizer "
            f"receives) or 'after' (clip the updates it makes), got {placement!r}."
        )
    clip = agc(clipping, eps, **agc_kwargs)
    return optax.chain(clip, optimizer) if placement == "before" else optax.chain(optimizer, clip)
