"""AGC under ``jax.jit`` with ``NamedSharding`` on 8 simulated CPU devices.

Run by ``tests/agc_optax/test_sharding.py`` in a child process (``XLA_FLAGS`` must ask
for 8 host devices before JAX starts); to run it directly::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python -m pytest tests/helpers/sharding_jit_checks.py

For Dense, Conv and attention kernels split along their fan-in axes, their
unit axis, or both, on Auto (``Mesh``) and Explicit (``jax.make_mesh``) meshes:
the update equals the unsharded one, keeps the input sharding, and the compiled
HLO reduces only per-unit norm arrays across devices (no all-gather).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from typing import Any

import jax
import numpy as np
import optax
import pytest
from jax._src.core import ShardingTypeError  # Not public; what optax raises below.
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from agc_optax import agc
from helpers import sharding_common as common
from helpers.optax_bugs import optax_bug
from helpers.reference import reference_agc
from tools import hlo_collectives

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8,
    reason="needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8",
)


def make_mesh(shape: tuple[int, ...], names: tuple[str, ...], axis_type: str) -> Mesh:
    if axis_type == "auto":
        return Mesh(np.array(jax.devices()[: np.prod(shape)]).reshape(shape), names)
    return jax.make_mesh(shape, names, axis_types=(AxisType.Explicit,) * len(shape))


def mesh_context(mesh: Mesh) -> Any:
    """Explicit meshes are used under ``jax.set_mesh``; Auto ones need no context."""
    explicit = AxisType.Explicit in mesh.axis_types
    return jax.set_mesh(mesh) if explicit else contextlib.nullcontext()


def update_fn(transform: optax.GradientTransformation):
    def update(grads: Any, params: Any) -> Any:
        return transform.update(grads, transform.init(params), params)[0]

    return jax.jit(update)


@functools.cache
def unsharded_kernel_update(kernel: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shape, fan_in = common.KERNELS[kernel]
    param, grad = common.kernel_and_grad(shape, fan_in)
    update = update_fn(agc(common.CLIPPING, common.EPS, unit_axes={"kernel": fan_in}))
    device = jax.devices()[0]
    out = update(
        {"kernel": jax.device_put(grad, device)}, {"kernel": jax.device_put(param, device)}
    )
    return param, grad, np.asarray(out["kernel"])


CASES = [
    (kernel, layout, axis_type)
    for kernel, axis_type in itertools.product(common.KERNELS, ("auto", "explicit"))
    for layout in common.LAYOUTS[kernel]
]


@pytest.mark.parametrize(("kernel", "layout", "axis_type"), CASES)
def test_sharded_kernel_matches_unsharded(kernel: str, layout: str, axis_type: str) -> None:
    shape, fan_in = common.KERNELS[kernel]
    (mesh_shape, mesh_names), spec_entries = common.LAYOUTS[kernel][layout]
    mesh = make_mesh(mesh_shape, mesh_names, axis_type)
    spec = P(*spec_entries)
    sharding = NamedSharding(mesh, spec)
    param, grad, unsharded = unsharded_kernel_update(kernel)

    update = update_fn(agc(common.CLIPPING, common.EPS, unit_axes={"kernel": fan_in}))
    grads = {"kernel": jax.device_put(grad, sharding)}
    params = {"kernel": jax.device_put(param, sharding)}
    with mesh_context(mesh):
        compiled = update.lower(grads, params).compile()
        out = update(grads, params)["kernel"]

    # Same numbers as on one device, and as the float64 definition.
    common.assert_close_relative(out, unsharded, common.SHARDED_RTOL)
    expected, clipped = reference_agc(grad, param, fan_in, common.CLIPPING, common.EPS)
    common.assert_close_relative(out, expected, 1e-5)
    assert 0 < clipped.sum() < clipped.size, "the data should clip some units and not others"

    # The result stays where the gradient was.
    assert out.sharding.is_equivalent_to(sharding, len(shape)), out.sharding
    if axis_type == "explicit":
        assert jax.typeof(out).sharding.spec == spec, jax.typeof(out)

    # Only the per-unit squared norms cross devices, and only if a unit is split.
    fan_in_split = any(spec_entries[i] is not None for i in fan_in if i < len(spec_entries))
    units_here = common.local_units(fan_in, sharding.shard_shape(shape))
    common.assert_only_norm_reductions(
        compiled.as_text(), units_here, expect_reduction=fan_in_split
    )


@pytest.mark.parametrize("axis_type", ["auto", "explicit"])
def test_overflowing_unit_keeps_its_direction_with_the_fan_in_sharded(axis_type: str) -> None:
    shape, fan_in = common.KERNELS["dense"]
    mesh = make_mesh(*common.MESH_1D, axis_type)
    param, grad = common.kernel_and_grad(shape, fan_in)
    grad[:, 3] = np.random.default_rng(2).normal(size=shape[0]) * 3e19  # ‖g‖² overflows
    sharding = NamedSharding(mesh, P("x", None))
    grads, params = jax.device_put(({"k": grad}, {"k": param}), sharding)
    with mesh_context(mesh):
        got = update_fn(agc(common.CLIPPING, common.EPS))(grads, params)["k"]
    expected, clipped = reference_agc(grad, param, fan_in, common.CLIPPING, common.EPS)
    assert clipped[3]
    common.assert_close_relative(got, expected, 1e-5)
    assert got.sharding.is_equivalent_to(sharding, 2), got.sharding


# A small model's parameters, FSDP + tensor-parallel on the 2-D mesh: kernels
# split along a fan-in axis over "data" and along units (or heads) over "model".
MODEL_LEAVES: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple]] = {
    "stem/kernel": ((3, 3, 8, 16), (0, 1, 2), (None, None, "data", "model")),
    "stem/bias": ((16,), (0,), ("model",)),
    "block/skip_gain": ((), (), ()),
    "attn/query/kernel": ((16, 4, 8), (0,), ("data", "model", None)),
    "attn/out/kernel": ((4, 8, 16), (0, 1), ("model", None, "data")),
    "mlp/kernel": ((16, 64), (0,), ("data", "model")),
    "mlp/bias": ((64,), (0,), ("model",)),
    "head/kernel": ((64, 10), (0,), ("data", None)),
}


def model_tree(values: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in values.items():
        node = tree
        *parents, leaf = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def model_params_and_grads() -> tuple[dict[str, Any], dict[str, Any]]:
    params, grads = {}, {}
    for seed, (path, (shape, fan_in, _)) in enumerate(MODEL_LEAVES.items()):
        params[path], grads[path] = common.kernel_and_grad(shape, fan_in, seed=seed)
    return model_tree(params), model_tree(grads)


def model_train_update(track_stats: bool) -> optax.GradientTransformation:
    fan_in = model_tree({path: leaf[1] for path, leaf in MODEL_LEAVES.items()})
    return optax.chain(
        agc(common.CLIPPING, common.EPS, unit_axes=fan_in, exclude="head", track_stats=track_stats),
        optax.sgd(0.1, momentum=0.9),
    )


@pytest.mark.parametrize("axis_type", ["auto", "explicit"])
def test_fsdp_tensor_parallel_step_matches_unsharded(axis_type: str) -> None:
    mesh = make_mesh(*common.MESH_2D, axis_type)
    shardings = model_tree(
        {p: NamedSharding(mesh, P(*leaf[2])) for p, leaf in MODEL_LEAVES.items()}
    )
    params, grads = model_params_and_grads()
    tx = model_train_update(track_stats=True)

    def step(grads: Any, params: Any, opt_state: Any) -> tuple[Any, Any]:
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def two_steps(grads: Any, params: Any) -> tuple[Any, Any]:
        # The second step also reads the momentum, which is sharded like the params.
        opt_state = tx.init(params)
        for _ in range(2):
            params, opt_state = step(grads, params, opt_state)
        return params, opt_state

    plain = jax.device_put((grads, params), jax.devices()[0])
    expected_params, expected_state = jax.jit(two_steps)(*plain)

    sharded = (jax.device_put(grads, shardings), jax.device_put(params, shardings))
    with mesh_context(mesh):
        compiled = jax.jit(two_steps).lower(*sharded).compile()
        new_params, opt_state = jax.jit(two_steps)(*sharded)

    for actual, expected in zip(
        jax.tree.leaves(new_params), jax.tree.leaves(expected_params), strict=True
    ):
        common.assert_close_relative(actual, expected, common.SHARDED_RTOL, floor_at_max=True)
    np.testing.assert_allclose(
        optax.tree_utils.tree_get(opt_state, "clip_fraction"),
        optax.tree_utils.tree_get(expected_state, "clip_fraction"),
        rtol=1e-6,
    )
    momentum = optax.tree_utils.tree_get(opt_state, "trace")
    for tree in (new_params, momentum):
        for leaf, sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings), strict=True):
            assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (leaf.sharding, sharding)

    units_here = [
        common.local_units(fan_in, NamedSharding(mesh, P(*spec)).shard_shape(shape))
        for shape, fan_in, spec in MODEL_LEAVES.values()
    ]
    ops = common.assert_only_norm_reductions(
        compiled.as_text(), max(units_here), expect_reduction=True
    )
    # At most, per step and leaf: the float32 squared norms of grad and param (8 bytes
    # per unit); in the exact branch, taken only in a step where some unit is outside
    # the float32 sums' range, one exponent byte per unit and a float32 scaled sum of
    # squares for each of grad and param (10 bytes per unit); a one-byte range flag;
    # and for the statistics five float32 scalars (clipped-unit count, the largest
    # ratio, the largest unit norm and sum of squares before and after clipping).
    bound = 2 * sum(18 * units + 1 + 5 * 4 for units in units_here)
    moved = hlo_collectives.summarize(ops)["total"]["bytes"]
    assert moved <= bound, ("\n".join(map(str, ops)), moved, bound)


# The parser itself, on HLO text in the spellings XLA prints.
HLO_SAMPLE = """\
HloModule jit_update, entry_computation_layout={(f32[16,16]{1,0})->f32[64,32]{1,0}}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %sum = f32[] add(%a, %b)
}

ENTRY %main (param: f32[16,16], param.1: bf16[8,4]) -> f32[64,32] {
  %param = f32[16,16]{1,0} parameter(0), sharding={devices=[4,2]<=[8]}
  %param.1 = bf16[8,4]{1,0:T(8,128)(2,1)} parameter(1)
  %norms = f32[16]{0} reduce(%param, %zero), dimensions={0}, to_apply=%add
  %all-reduce.2 = (f32[16]{0}, f32[16]{0}) all-reduce(%norms, %norms), channel_id=2, \
replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_0'}, use_global_device_ids=true, to_apply=%add
  %ag-start = (bf16[8,4]{1,0:T(8,128)(2,1)}, bf16[32,4]{1,0:T(8,128)(2,1)}) \
all-gather-start(%param.1), replica_groups=[2,4]<=[8], dimensions={0}
  %ag-done = bf16[32,4]{1,0:T(8,128)(2,1)} all-gather-done(%ag-start)
  %rs = f32[4]{0} reduce-scatter(f32[16]{0} %norms), replica_groups={{0,1,2,3},{4,5,6,7}}, \
dimensions={0}, to_apply=%add
  %cp = f32[16,16]{1,0} collective-permute(%param), source_target_pairs={{0,1},{1,0}}
  ROOT %out = f32[64,32]{1,0} all-gather(%param), replica_groups=mesh['a'=2,'b'=4], \
device_ids=([4,2]T(1,0)) {'a', 'b'}, dimensions={0}
}
"""


def test_hlo_parser_reads_kinds_shapes_and_groups() -> None:
    ops = hlo_collectives.parse_collectives(HLO_SAMPLE)
    found = [(op.kind, [str(s) for s in op.operands], op.group_size) for op in ops]
    assert found == [
        ("all-reduce", ["f32[16]", "f32[16]"], 4),
        ("all-gather", ["bf16[8,4]"], 4),
        ("reduce-scatter", ["f32[16]"], 4),
        ("collective-permute", ["f32[16,16]"], 2),
        ("all-gather", ["f32[16,16]"], 8),
    ]
    assert [str(s) for s in ops[1].results] == ["bf16[32,4]"]
    summary = hlo_collectives.summarize(ops)
    assert summary["all-reduce"] == {"count": 1, "bytes": 128}
    assert summary["all-gather"] == {"count": 2, "bytes": 32 * 4 * 2 + 64 * 32 * 4}
    assert summary["total"]["count"] == 5


def test_hlo_check_rejects_gathers_and_large_reductions() -> None:
    with pytest.raises(AssertionError, match="other than all-reduce"):
        common.assert_only_norm_reductions(HLO_SAMPLE, 10**6)
    only_reduce = "\n".join(
        line for line in HLO_SAMPLE.splitlines() if "gather" not in line and "%rs" not in line
    )
    only_reduce = only_reduce.replace("  %cp =", "  %cp_removed =").replace(
        "collective-permute", "copy"
    )
    common.assert_only_norm_reductions(only_reduce, 16, expect_reduction=True)
    with pytest.raises(AssertionError, match="above 8 elements"):
        common.assert_only_norm_reductions(only_reduce, 8)


@optax_bug("ShardingTypeError under Explicit meshes (norms broadcast to a replicated full "
           "shape)", raises=ShardingTypeError)
def test_optax_clips_a_fan_in_sharded_kernel_under_an_explicit_mesh() -> None:
    """README's comparison: optax's update fails where agc's works (see helpers/optax_bugs)."""
    shape, fan_in = common.KERNELS["dense"]
    mesh = make_mesh(*common.MESH_1D, "explicit")
    param, grad = common.kernel_and_grad(shape, fan_in)
    grads, params = jax.device_put(({"k": grad}, {"k": param}), NamedSharding(mesh, P("x", None)))
    with jax.set_mesh(mesh):
        ours = update_fn(agc(common.CLIPPING, common.EPS))(grads, params)["k"]
        assert jax.typeof(ours).sharding.spec == P("x", None)
        theirs = update_fn(optax.adaptive_grad_clip(common.CLIPPING, common.EPS))(grads, params)
    np.testing.assert_allclose(np.asarray(theirs["k"]), np.asarray(ours), rtol=1e-6)
    assert jax.typeof(theirs["k"]).sharding.spec == P("x", None)
