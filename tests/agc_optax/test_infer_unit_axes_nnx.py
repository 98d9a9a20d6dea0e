"""infer_unit_axes on Flax NNX modules: agreement with nnx_unit_axes, stacked layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from agc_optax import agc, infer_unit_axes, nnx_unit_axes
from agc_optax._paths import flatten_with_path_strings
from helpers.flax_compat import as_pure
from helpers.reference import reference_agc


class Known(nnx.Module):
    """Every module type nnx_unit_axes knows, each used in the forward pass."""

    def __init__(self, rngs):
        self.embed = nnx.Embed(11, 8, rngs=rngs)
        self.linear = nnx.Linear(8, 8, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(num_heads=2, in_features=8, qkv_features=8,
                                                decode=False, rngs=rngs)
        self.general = nnx.LinearGeneral(8, (2, 4), rngs=rngs)
        self.merge = nnx.LinearGeneral((2, 4), 8, axis=(-2, -1), rngs=rngs)
        self.einsum = nnx.Einsum("btd,dhk->bthk", (8, 2, 4), (2, 4), rngs=rngs)
        self.conv1d = nnx.Conv(8, 6, (3,), rngs=rngs)
        self.grouped = nnx.Conv(6, 6, (3,), feature_group_count=3, rngs=rngs)
        self.conv2d = nnx.Conv(1, 3, (3, 3), rngs=rngs)
        self.deconv = nnx.ConvTranspose(3, 4, (3, 3), rngs=rngs)
        self.deconv_t = nnx.ConvTranspose(4, 2, (2, 2), transpose_kernel=True, rngs=rngs)
        self.norm = nnx.LayerNorm(8, rngs=rngs)

    def __call__(self, ids):
        h = self.attention(self.linear(self.embed(ids)))
        h = self.merge(self.general(h)) + self.einsum(h).sum(axis=(2, 3), keepdims=True)[..., 0]
        h = self.grouped(self.conv1d(self.norm(h)))                     # (b, t, 6)
        image = self.deconv_t(self.deconv(self.conv2d(h[..., None])))  # (b, t, 6, 2)
        return self.embed.attend(jnp.concatenate([h, image[..., 0]], -1)[..., :8] + h[..., :2]
                                 .sum(-1, keepdims=True))


IDS = jax.ShapeDtypeStruct((2, 5), jnp.int32)


@pytest.fixture(scope="module")
def known():
    """Built abstractly (nnx.eval_shape): shapes only, nothing is initialised or run."""
    return nnx.eval_shape(lambda: Known(nnx.Rngs(0)))


def _params(model):
    paths, leaves, _ = flatten_with_path_strings(nnx.state(model, nnx.Param))
    return dict(zip(paths, leaves, strict=True))


def test_agrees_with_nnx_unit_axes_on_every_kernel(known):
    model = known
    inferred = infer_unit_axes(lambda m, ids: m(ids), model, IDS)
    from_modules = nnx_unit_axes(model)
    params = _params(model)
    assert set(inferred.entries) == set(params)
    assert from_modules.table  # Every known module type produced entries.
    for path in from_modules.table:
        assert inferred(path, params[path]) == from_modules(path, params[path]), path
    assert inferred.unused == []


def test_hand_written_axes_for_the_attention_and_convolutions(known):
    model = known
    rule = infer_unit_axes(lambda m, ids: m(ids), model, IDS)
    params = _params(model)
    expected = {
        "attention/query/kernel": (0,), "attention/query/bias": (0, 1),   # (8, 2, 4), (2, 4)
        "attention/out/kernel": (0, 1),                                   # (2, 4, 8)
        "einsum/kernel": (0,), "einsum/bias": (0, 1),                     # (8, 2, 4), (2, 4)
        "conv1d/kernel": (0, 1), "grouped/kernel": (0, 1),                # (3, 8, 6), (3, 2, 6)
        "deconv_t/kernel": (0, 1, 3),                                     # (2, 2, 2, 4)
        "embed/embedding": (1,), "norm/scale": (0,),
    }
    for path, axes in expected.items():
        assert rule(path, params[path]) == axes, path


class Block(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(4, 4, rngs=rngs)
        self.norm = nnx.LayerNorm(4, rngs=rngs)

    def __call__(self, x):
        return self.norm(x + self.linear(x))


class Stack(nnx.Module):
    """Three blocks created with nnx.vmap and applied with nnx.scan."""

    def __init__(self, rngs):
        @nnx.split_rngs(splits=3)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def create(rngs):
            return Block(rngs)

        self.blocks = create(rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def forward(x, block):
            return block(x)

        return forward(x, self.blocks)


def test_nnx_scan_stacked_layers():
    model = nnx.eval_shape(lambda: Stack(nnx.Rngs(0)))
    params = _params(model)
    assert params["blocks/linear/kernel"].shape == (3, 4, 4)
    rule = infer_unit_axes(lambda m, x: m(x), model, jax.ShapeDtypeStruct((2, 4), jnp.float32))
    assert {p: rule(p, leaf) for p, leaf in params.items()} == {
        "blocks/linear/kernel": (1,), "blocks/linear/bias": (1,),
        "blocks/norm/scale": (1,), "blocks/norm/bias": (1,),
    }


def test_same_answer_for_variables_and_arrays_and_clips_like_the_reference():
    model = nnx.MultiHeadAttention(num_heads=2, in_features=6, qkv_features=8, decode=False,
                                   rngs=nnx.Rngs(0))
    rule = infer_unit_axes(lambda m, x: m(x), model, jax.ShapeDtypeStruct((2, 3, 6), jnp.float32))
    variables = nnx.state(model, nnx.Param)
    pure = as_pure(variables)
    by_variable = jax.tree_util.tree_flatten_with_path(variables)[0]
    by_array = jax.tree_util.tree_flatten_with_path(pure)[0]
    for (vpath, vleaf), (apath, aleaf) in zip(by_variable, by_array, strict=True):
        assert rule(vpath, vleaf) == rule(apath, aleaf)

    rng = np.random.default_rng(0)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 0.05, jnp.float32), pure)
    tx = agc(0.01, unit_axes=rule)
    tx.init(variables)
    got = jax.jit(lambda g, p: tx.update(g, optax.EmptyState(), p)[0])(grads, pure)
    for name, axes in (("query", (0,)), ("out", (0, 1))):
        want = reference_agc(grads[name]["kernel"], pure[name]["kernel"], axes, 0.01)[0]
        np.testing.assert_allclose(got[name]["kernel"], want, rtol=2e-6)


class WithState(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(4, 4, rngs=rngs)
        self.norm = nnx.BatchNorm(4, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.dropout(self.norm(self.linear(x)))


def test_forward_pass_that_updates_batch_stats_and_rngs_is_traced_not_run():
    model = WithState(nnx.Rngs(0))
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat, nnx.RngCount))
    rule = infer_unit_axes(lambda m, x: m(x), model, jax.ShapeDtypeStruct((2, 4), jnp.float32))
    assert {p: e.fan_in for p, e in rule.entries.items()} == {
        "linear/kernel": (0,), "linear/bias": (0,), "norm/scale": (0,), "norm/bias": (0,)}
    after = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat, nnx.RngCount))
    jax.tree.map(np.testing.assert_array_equal, before, after)
