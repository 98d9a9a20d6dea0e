"""Fan-in axes: the default rule, the other layouts, and rules read from nnx modules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from agc_optax import (
    agc,
    default_unit_axes,
    nnx_unit_axes,
    output_first_unit_axes,
    path_to_str,
)
from helpers.flax_compat import as_pure
from helpers.reference import reference_agc
from helpers.trees import mixed_scale_pair


@pytest.mark.parametrize(
    ("shape", "axes"),
    [((), ()), ((7,), (0,)), ((1, 256), (0,)), ((5, 3, 8), (0, 1)), ((3, 3, 4, 8), (0, 1, 2)),
     ((2,) * 7, (0, 1, 2, 3, 4, 5))],
)
def test_default_rule(shape, axes):
    assert default_unit_axes("any/path", jnp.zeros(shape)) == axes
    assert default_unit_axes("any/path", jax.ShapeDtypeStruct(shape, jnp.float32)) == axes


def test_output_first_rule():
    assert output_first_unit_axes("w", jnp.zeros((16, 8, 3, 3))) == (1, 2, 3)
    assert output_first_unit_axes("b", jnp.zeros((16,))) == (0,)


def test_single_input_dense_kernel_has_one_unit_per_output():
    """optax squeezes (1, 256) and treats it as one vector; each column is a unit."""
    param, grad = mixed_scale_pair((1, 256), (0,), seed=3)
    transform = agc(0.01, track_stats=True)
    _, state = transform.update([grad], transform.init([param]), [param])
    _, clipped = reference_agc(grad, param, (0,), 0.01)
    np.testing.assert_allclose(float(state.clip_fraction), clipped.mean(), rtol=1e-6)
    assert 0 < clipped.mean() < 1


def test_callable_and_pytree_specs_agree():
    param, grad = mixed_scale_pair((6, 4, 5), (0,), seed=6)
    by_callable = agc(0.02, unit_axes=lambda path, x: (0,) if path == "q" else (0, 1))
    by_tree = agc(0.02, unit_axes={"q": (0,)})
    a = by_callable.update({"q": grad}, optax.EmptyState(), {"q": param})[0]
    b = by_tree.update({"q": grad}, optax.EmptyState(), {"q": param})[0]
    np.testing.assert_array_equal(np.asarray(a["q"]), np.asarray(b["q"]))
    np.testing.assert_allclose(a["q"], reference_agc(grad, param, (0,), 0.02)[0], rtol=2e-6)


def test_negative_and_int_axes_are_normalised():
    param, grad = mixed_scale_pair((6, 5), (1,), seed=2)
    out = agc(0.02, unit_axes={"e": -1}).update({"e": grad}, optax.EmptyState(), {"e": param})[0]
    np.testing.assert_allclose(out["e"], reference_agc(grad, param, (1,), 0.02)[0], rtol=2e-6)


def test_optax_axis_argument_applies_to_every_leaf():
    param, grad = mixed_scale_pair((4, 6), (1,), seed=4)
    out = agc(0.02, axis=1).update([grad, grad], None, [param, param])[0]
    want = reference_agc(grad, param, (1,), 0.02)[0]
    for leaf in out:
        np.testing.assert_allclose(leaf, want, rtol=2e-6)


class Zoo(nnx.Module):
    """One of every module kind nnx_unit_axes knows, plus one it doesn't."""

    def __init__(self, rngs):
        self.linear = nnx.Linear(6, 5, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(num_heads=2, in_features=8, qkv_features=8,
                                                out_features=8, decode=False, rngs=rngs)
        self.conv1d = nnx.Conv(3, 4, (5,), rngs=rngs)
        self.conv3d = nnx.Conv(2, 4, (2, 2, 2), rngs=rngs)
        self.grouped = nnx.Conv(4, 8, (3, 3), feature_group_count=2, rngs=rngs)
        self.deconv = nnx.ConvTranspose(3, 5, (3, 3), rngs=rngs)
        self.deconv_t = nnx.ConvTranspose(3, 5, (3, 3), transpose_kernel=True, rngs=rngs)
        self.embed = nnx.Embed(11, 4, rngs=rngs)
        self.einsum = nnx.Einsum("bta,hab->bthb", (2, 8, 4), (2, 4), rngs=rngs)
        self.general = nnx.LinearGeneral((2, 3), 4, axis=(-2, -1), rngs=rngs)
        self.norm = nnx.LayerNorm(4, rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(4, 4, rngs=rngs) for _ in range(2)])


EXPECTED_NNX_AXES = {
    "linear/kernel": (0,), "linear/bias": (0,),
    "attention/query/kernel": (0,), "attention/key/kernel": (0,),
    "attention/value/kernel": (0,), "attention/query/bias": (0, 1),
    "attention/out/kernel": (0, 1), "attention/out/bias": (0,),
    "conv1d/kernel": (0, 1), "conv3d/kernel": (0, 1, 2, 3), "grouped/kernel": (0, 1, 2),
    "deconv/kernel": (0, 1, 2), "deconv_t/kernel": (0, 1, 3),
    "embed/embedding": (1,),
    "einsum/kernel": (1,), "einsum/bias": (0, 1),
    "general/kernel": (0, 1), "general/bias": (0,),
    "norm/scale": (0,),
    "blocks/1/kernel": (0,),
}


def test_nnx_unit_axes_reads_each_module():
    model = Zoo(nnx.Rngs(0))
    rule = nnx_unit_axes(model)
    params = nnx.state(model, nnx.Param)
    flat = {"/".join(str(k) for k in path): leaf
            for path, leaf in nnx.to_flat_state(params)}
    for path, axes in EXPECTED_NNX_AXES.items():
        assert rule(path, flat[path]) == axes, path


def test_nnx_unit_axes_same_answer_at_init_and_update():
    model = Zoo(nnx.Rngs(0))
    rule = nnx_unit_axes(model)
    seen = {}

    def recording_rule(path, leaf):
        axes = rule(path, leaf)
        seen.setdefault(path, set()).add(axes)
        return axes

    transform = agc(0.01, unit_axes=recording_rule)
    variables = nnx.state(model, nnx.Param)  # holds nnx Variables, paths end in .value
    transform.init(variables)
    pure = as_pure(variables)
    transform.update(jax.tree.map(jnp.ones_like, pure), optax.EmptyState(), pure)
    assert set(EXPECTED_NNX_AXES) <= set(seen)
    assert all(len(v) == 1 for v in seen.values())


def test_nnx_attention_clipping_matches_reference():
    model = nnx.MultiHeadAttention(num_heads=2, in_features=8, qkv_features=8, decode=False,
                                   rngs=nnx.Rngs(0))
    params = as_pure(nnx.state(model, nnx.Param))
    rng = np.random.default_rng(0)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 0.05, jnp.float32),
                         params)
    got = agc(0.01, unit_axes=nnx_unit_axes(model)).update(grads, None, params)[0]
    np.testing.assert_allclose(
        got["query"]["kernel"],
        reference_agc(grads["query"]["kernel"], params["query"]["kernel"], (0,), 0.01)[0],
        rtol=2e-6)
    np.testing.assert_allclose(
        got["out"]["kernel"],
        reference_agc(grads["out"]["kernel"], params["out"]["kernel"], (0, 1), 0.01)[0],
        rtol=2e-6)


def test_nnx_unit_axes_rejects_a_different_model():
    rule = nnx_unit_axes(nnx.Linear(4, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="different model"):
        rule("kernel", jnp.zeros(()))


@pytest.mark.parametrize("pure", [False, True], ids=["variables", "arrays"])
def test_every_rule_accepts_raw_key_paths(pure):
    """A key path from tree_flatten_with_path gives the same axes as its path string."""
    model = Zoo(nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    tree = as_pure(state) if pure else state
    is_leaf = None if pure else (lambda x: isinstance(x, nnx.Variable))
    keyed = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
    rules = [default_unit_axes, output_first_unit_axes, nnx_unit_axes(model)]
    for key_path, leaf in keyed:
        assert not isinstance(key_path, str)
        path = path_to_str(key_path)
        for rule in rules:
            assert rule(key_path, leaf) == rule(path, leaf), (rule, path)
        if path in EXPECTED_NNX_AXES:
            assert rules[2](key_path, leaf) == EXPECTED_NNX_AXES[path]
    assert {path_to_str(k) for k, _ in keyed} >= set(EXPECTED_NNX_AXES)


def stacked(make, layers=3, out_axes=0):
    """``layers`` copies of ``make(rngs)`` stacked by nnx.vmap, as scan-over-layers does."""

    @nnx.split_rngs(splits=layers)
    @nnx.vmap(in_axes=(0,), out_axes=out_axes)
    def create(rngs):
        return make(rngs)

    return create(nnx.Rngs(0))


class Block(nnx.Module):
    def __init__(self, rngs):
        self.attention = nnx.MultiHeadAttention(num_heads=2, in_features=8, qkv_features=8,
                                                decode=False, rngs=rngs)
        self.norm = nnx.LayerNorm(8, rngs=rngs)
        self.mlp = nnx.Linear(8, 6, rngs=rngs)


def test_nnx_unit_axes_keeps_stacked_layer_axes_as_units():
    model = stacked(Block, layers=3)
    rule = nnx_unit_axes(model)
    flat = {"/".join(map(str, k)): v for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    expected = {  # one leading layer axis; written from each layer's definition
        "attention/query/kernel": ((3, 8, 2, 4), (1,)),
        "attention/query/bias": ((3, 2, 4), (1, 2)),
        "attention/out/kernel": ((3, 2, 4, 8), (1, 2)),
        "attention/out/bias": ((3, 8), (1,)),
        "norm/scale": ((3, 8), (1,)),
        "norm/bias": ((3, 8), (1,)),
        "mlp/kernel": ((3, 8, 6), (1,)),
        "mlp/bias": ((3, 6), (1,)),
    }
    for path, (shape, axes) in expected.items():
        assert flat[path].shape == shape, path
        assert rule(path, flat[path]) == axes, path
    params = as_pure(nnx.state(model, nnx.Param))
    param, grad = mixed_scale_pair((3, 8, 6), (1,), seed=5)
    params["mlp"]["kernel"] = jnp.asarray(param)
    grads = jax.tree.map(jnp.zeros_like, params)
    grads["mlp"]["kernel"] = jnp.asarray(grad)
    got = agc(0.01, unit_axes=rule).update(grads, None, params)[0]["mlp"]["kernel"]
    np.testing.assert_allclose(got, reference_agc(grad, param, (1,), 0.01)[0], rtol=2e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: stacked(lambda rngs: nnx.Linear(4, 4, rngs=rngs), layers=4),  # (4, 4, 4)
        lambda: stacked(lambda rngs: nnx.Linear(4, 5, rngs=rngs), out_axes=1),  # (4, 3, 5)
    ],
    ids=["ambiguous_sizes", "stacked_in_the_middle"],
)
def test_nnx_unit_axes_refuses_stacking_it_cannot_place(make):
    with pytest.raises(ValueError, match=r"'kernel'.*infer_unit_axes"):
        nnx_unit_axes(make())


class Gained(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(4, 5, rngs=rngs)
        self.gain = nnx.Param(jnp.ones((5,)))


def test_nnx_unit_axes_refuses_stacked_parameters_it_has_no_rule_for():
    with pytest.raises(ValueError, match=r"no rule for parameters \['gain'\].*infer_unit_axes"):
        nnx_unit_axes(stacked(Gained))
    assert nnx_unit_axes(Gained(nnx.Rngs(0)))("gain", jnp.ones(5)) == (0,)  # unstacked: fine


def test_nnx_unit_axes_rejects_a_linen_module():
    from flax import linen

    with pytest.raises(TypeError, match=r"flax.nnx.Module.*Dense.*infer_unit_axes"):
        nnx_unit_axes(linen.Dense(4))
    with pytest.raises(TypeError, match="dict"):
        nnx_unit_axes({"kernel": jnp.ones((2, 2))})
