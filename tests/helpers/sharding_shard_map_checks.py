"""AGC inside ``jax.shard_map``, where each device sees only its block.

Run by ``tests/agc_optax/test_sharding.py`` in a child process with 8 simulated CPU
devices; to run it directly::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python -m pytest tests/helpers/sharding_shard_map_checks.py

With ``axis_name`` naming the mesh axes that split a kernel's fan-in, the
squared norms are ``psum``-ed before the comparison, so clipping block by block
gives the unsharded result, including when one unit is spread over devices.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from agc_optax import agc, clip_grads
from helpers import sharding_common as common
from helpers.reference import reference_agc

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8,
    reason="needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8",
)


def make_mesh(shape: tuple[int, ...], names: tuple[str, ...], axis_type: str) -> Mesh:
    types = AxisType.Explicit if axis_type == "explicit" else AxisType.Auto
    return jax.make_mesh(shape, names, axis_types=(types,) * len(shape))


def fan_in_mesh_axes(spec: Sequence[Any], fan_in: Sequence[int]) -> tuple[str, ...]:
    """The mesh axes that a PartitionSpec uses to split the fan-in axes."""
    names: list[str] = []
    for axis, entry in enumerate(spec):
        if axis in fan_in and entry is not None:
            names.extend(entry if isinstance(entry, tuple) else (entry,))
    return tuple(names)


def as_axis_name(names: tuple[str, ...]) -> str | tuple[str, ...] | None:
    """None, a single name, or a tuple: every form ``axis_name`` accepts."""
    if not names:
        return None
    return names[0] if len(names) == 1 else names


def clip_in_shard_map(mesh: Mesh, spec: P, fan_in: tuple[int, ...], axis_name: Any) -> Any:
    tx = agc(common.CLIPPING, common.EPS, unit_axes={"kernel": fan_in}, axis_name=axis_name)

    def clip_block(grad: jax.Array, param: jax.Array) -> jax.Array:
        grads, params = {"kernel": grad}, {"kernel": param}
        return tx.update(grads, tx.init(params), params)[0]["kernel"]

    return jax.jit(jax.shard_map(clip_block, mesh=mesh, in_specs=(spec, spec), out_specs=spec))


CASES = [
    (kernel, layout, axis_type)
    for kernel, axis_type in itertools.product(common.KERNELS, ("auto", "explicit"))
    for layout in common.LAYOUTS[kernel]
]


@pytest.mark.parametrize(("kernel", "layout", "axis_type"), CASES)
def test_blockwise_clip_with_axis_name_matches_unsharded(
    kernel: str, layout: str, axis_type: str
) -> None:
    shape, fan_in = common.KERNELS[kernel]
    (mesh_shape, mesh_names), spec_entries = common.LAYOUTS[kernel][layout]
    mesh = make_mesh(mesh_shape, mesh_names, axis_type)
    split_over = fan_in_mesh_axes(spec_entries, fan_in)
    clip = clip_in_shard_map(mesh, P(*spec_entries), fan_in, as_axis_name(split_over))
    param, grad = common.kernel_and_grad(shape, fan_in)
    wanted = NamedSharding(mesh, P(*spec_entries))
    blocks = jax.device_put((grad, param), wanted)

    compiled = clip.lower(*blocks).compile()
    out = clip(*blocks)

    expected, clipped = reference_agc(grad, param, fan_in, common.CLIPPING, common.EPS)
    assert 0 < clipped.sum() < clipped.size
    unsharded = agc(common.CLIPPING, common.EPS, unit_axes={"kernel": fan_in})
    single = jax.jit(lambda g, p: unsharded.update(g, optax.EmptyState(), p)[0])(
        {"kernel": grad}, {"kernel": param}
    )["kernel"]
    common.assert_close_relative(out, single, common.SHARDED_RTOL)
    common.assert_close_relative(out, expected, 1e-5)
    assert out.sharding.is_equivalent_to(wanted, len(shape)), out.sharding

    block_units = common.local_units(fan_in, wanted.shard_shape(shape))
    common.assert_only_norm_reductions(
        compiled.as_text(), block_units, expect_reduction=bool(split_over)
    )


def test_unit_split_over_devices_needs_axis_name() -> None:
    """Without the psum each device clips with its partial norms: a wrong answer."""
    shape, fan_in = common.KERNELS["dense"]
    mesh = make_mesh(*common.MESH_1D, "auto")
    param, grad = common.kernel_and_grad(shape, fan_in)
    expected, _ = reference_agc(grad, param, fan_in, common.CLIPPING, common.EPS)
    right = clip_in_shard_map(mesh, P("x", None), fan_in, axis_name="x")(grad, param)
    wrong = clip_in_shard_map(mesh, P("x", None), fan_in, axis_name=None)(grad, param)
    common.assert_close_relative(right, expected, 1e-5)
    assert np.max(np.abs(np.asarray(wrong) - expected)) > 1e-3 * np.max(np.abs(expected))


@pytest.mark.parametrize("axis_type", ["auto", "explicit"])
def test_model_tree_and_stats_in_shard_map(axis_type: str) -> None:
    """A whole tree split FSDP-style over both mesh axes, with statistics.

    Every leaf splits its fan-in over ("data", "model"), so one ``axis_name``
    fits them all, and the statistics, computed from psum-ed norms, are the
    same on every device (``out_specs=P()`` accepts them).
    """
    mesh = make_mesh(*common.MESH_2D, axis_type)
    both = ("data", "model")
    leaves = {
        "conv": ((3, 3, 16, 8), (0, 1, 2), P(None, None, both, None)),
        "dense": ((64, 16), (0,), P(both, None)),
        "head": ((16, 10), (0,), P(both, None)),
    }
    params, grads = {}, {}
    for seed, (name, (shape, fan_in, _)) in enumerate(leaves.items()):
        params[name], grads[name] = common.kernel_and_grad(shape, fan_in, seed=seed)
    unit_axes = {k: fan_in for k, (_, fan_in, _) in leaves.items()}
    specs = {k: spec for k, (_, _, spec) in leaves.items()}

    def clip(axis_name: Any) -> optax.GradientTransformation:
        return agc(
            common.CLIPPING,
            unit_axes=unit_axes,
            exclude="head",
            track_stats=True,
            axis_name=axis_name,
        )

    def update_block(grads: Any, params: Any) -> tuple[Any, Any]:
        tx = clip(both)
        updates, state = tx.update(grads, tx.init(params), params)
        return updates, state.clip_fraction

    sharded = jax.jit(
        jax.shard_map(update_block, mesh=mesh, in_specs=(specs, specs), out_specs=(specs, P()))
    )
    shardings = {k: NamedSharding(mesh, spec) for k, spec in specs.items()}
    placed = jax.device_put((grads, params), (shardings, shardings))
    updates, clip_fraction = sharded(*placed)

    # The independent float64 reference, leaf by leaf; the excluded head is untouched.
    references = {
        name: reference_agc(grads[name], params[name], fan_in, common.CLIPPING, common.EPS)
        for name, (_, fan_in, _) in leaves.items()
        if name != "head"
    }
    expected = {name: clipped for name, (clipped, _) in references.items()}
    expected["head"] = grads["head"]
    for name in leaves:
        common.assert_close_relative(updates[name], expected[name], 1e-5)
    np.testing.assert_array_equal(updates["head"], grads["head"])
    masks = [mask for _, mask in references.values()]
    clipped_units = sum(int(mask.sum()) for mask in masks)
    assert 0 < clipped_units < sum(mask.size for mask in masks)
    np.testing.assert_allclose(
        clip_fraction, clipped_units / sum(mask.size for mask in masks), rtol=1e-6
    )

    def clip_grads_block(grads: Any, params: Any) -> Any:
        return clip_grads(
            grads, params, common.CLIPPING, unit_axes=unit_axes, exclude="head", axis_name=both
        )

    functional = jax.jit(
        jax.shard_map(clip_grads_block, mesh=mesh, in_specs=(specs, specs), out_specs=specs)
    )(*placed)
    for name in leaves:
        common.assert_close_relative(functional[name], expected[name], 1e-5)


def test_per_leaf_axis_name_keeps_eps_for_replicated_leaves() -> None:
    """A kernel split over "data" and a bias replicated on it, in one agc.

    A single axis_name for both would psum the replicated bias's squared norm
    8 times, which changes the ε comparison (the bias is below ε here).
    """
    mesh = make_mesh((8,), ("data",), "auto")
    rng = np.random.default_rng(0)
    params = {"kernel": rng.normal(0, 0.05, (64, 16)).astype(np.float32),
              "bias": np.full(16, 1e-4, np.float32)}
    grads = {"kernel": rng.normal(0, 1e-3, (64, 16)).astype(np.float32),
             "bias": np.full(16, 1e-5, np.float32)}
    specs = {"kernel": P("data", None), "bias": P()}
    transform = agc(0.01, axis_name=lambda path, leaf: "data" if path == "kernel" else None)
    blockwise = jax.jit(jax.shard_map(
        lambda g, p: transform.update(g, transform.init(p), p)[0],
        mesh=mesh, in_specs=(specs, specs), out_specs=specs))(grads, params)
    for key, fan_in in (("kernel", (0,)), ("bias", (0,))):
        expected, _ = reference_agc(grads[key], params[key], fan_in, 0.01)
        np.testing.assert_allclose(np.asarray(blockwise[key]), expected, rtol=1e-5, err_msg=key)
    # The bias is clipped (‖g‖ = 4e-5 > 0.01 · ε = 1e-5) to exactly λ·ε.
    np.testing.assert_allclose(np.linalg.norm(np.asarray(blockwise["bias"])), 1e-5, rtol=1e-5)


@pytest.mark.parametrize("split", ["fan_in", "unit"])
def test_overflowing_unit_keeps_its_direction_in_shard_map(split: str) -> None:
    """The overflow branch's max and rescaled sum are combined over the mesh axis too."""
    shape, fan_in = common.KERNELS["dense"]
    mesh = make_mesh(*common.MESH_1D, "auto")
    param, grad = common.kernel_and_grad(shape, fan_in)
    grad[:, 3] = np.random.default_rng(2).normal(size=shape[0]) * 3e19  # ‖g‖² overflows
    spec, axis_name = (P("x", None), "x") if split == "fan_in" else (P(None, "x"), None)
    got = clip_in_shard_map(mesh, spec, fan_in, axis_name=axis_name)(grad, param)
    expected, clipped = reference_agc(grad, param, fan_in, common.CLIPPING, common.EPS)
    assert clipped[3]
    common.assert_close_relative(got, expected, 1e-5)


def test_overflow_on_one_device_takes_the_same_branch_everywhere() -> None:
    """Only device 0 holds an overflowing unit, yet every device runs the exact branch.

    Its collectives (``psum``/``pmax`` over ``axis_name``) must run on all devices or on
    none, so the overflow predicate is combined over the mesh axes named by any leaf.
    """
    mesh = make_mesh((8,), ("x",), "auto")
    specs = {"units_split": P(None, "x"), "fan_in_split": P("x", None)}
    rng = np.random.default_rng(0)
    params = {"units_split": rng.normal(size=(4, 8)), "fan_in_split": rng.normal(size=(8, 2))}
    grads = {name: 0.02 * rng.normal(size=p.shape) for name, p in params.items()}
    grads["units_split"][:, 0] = 3e19  # float32 sum of squares overflows, on device 0 only
    params, grads = (
        {name: np.asarray(leaf, np.float32) for name, leaf in tree.items()}
        for tree in (params, grads)
    )
    tx = agc(common.CLIPPING, common.EPS, unit_axes=lambda path, leaf: (0,),
             axis_name=lambda path, leaf: "x" if path == "fan_in_split" else None)

    def clip_blocks(grads: Any, params: Any) -> Any:
        return tx.update(grads, tx.init(params), params)[0]

    got = jax.jit(jax.shard_map(clip_blocks, mesh=mesh, in_specs=(specs, specs),
                                out_specs=specs))(grads, params)
    for name in params:
        want, _ = reference_agc(grads[name], params[name], (0,), common.CLIPPING, common.EPS)
        np.testing.assert_allclose(np.asarray(got[name]), want, rtol=2e-6, atol=0, err_msg=name)
