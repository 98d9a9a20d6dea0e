"""A unit-axes table asked about a leaf it does not hold raises instead of guessing.

The silent alternative clips the leaf over default_unit_axes: for a stacked
query kernel (layers, in, heads, dim) that is (0, 1, 2), mixing layers and heads,
where the forward pass says (1,).
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agc_optax import agc, default_unit_axes, infer_unit_axes, nnx_unit_axes

X = jnp.zeros((2, 8))


class Attention(nn.Module):
    @nn.compact
    def __call__(self, x):
        q = nn.DenseGeneral((2, 4), name="query")(x)
        return nn.Dense(3, name="out")(q.reshape(*q.shape[:-2], 8))


def linen_setup():
    model = Attention()
    variables = model.init(jax.random.key(0), X)
    return model, variables


def clip(unit_axes, params):
    tx = agc(0.01, unit_axes=unit_axes)
    grads = jax.tree.map(jnp.ones_like, params)
    return jax.jit(tx.update)(grads, tx.init(params), params)[0]


def test_table_on_whole_variables_used_on_params_names_leaf_and_cause():
    model, variables = linen_setup()
    rule = infer_unit_axes(lambda v, x: model.apply(v, x), variables, X)
    message = (r"infer_unit_axes: leaf 'out/bias' is not in the unit-axes table "
               r"\(nearest: 'params/out/bias'.*variables\['params'\].*with_fallback")
    with pytest.raises(ValueError, match=message):
        clip(rule, variables["params"])


def test_table_on_params_used_on_whole_variables_names_the_reverse_cause():
    model, variables = linen_setup()
    rule = infer_unit_axes(lambda p, x: model.apply({"params": p}, x), variables["params"], X)
    with pytest.raises(ValueError, match=re.escape(
            "leaf 'params/out/bias' is not in the unit-axes table (nearest: 'out/bias'")) as info:
        clip(rule, variables)
    assert "built on a subtree" in str(info.value)


def test_unrelated_leaf_names_nearest_paths():
    _, variables = linen_setup()
    rule = infer_unit_axes(lambda p, x: x @ p["w"], {"w": jnp.ones((8, 3))}, X)
    with pytest.raises(ValueError, match=r"leaf 'query/kernel'.*nearest: 'w'.*different model"):
        rule("query/kernel", variables["params"]["query"]["kernel"])


def test_fallback_only_when_asked_and_table_entries_still_win():
    model, variables = linen_setup()
    rule = infer_unit_axes(lambda v, x: model.apply(v, x), variables, X).with_fallback()
    kernel = jnp.zeros((3, 8, 2, 4))  # as a stacked (layers, in, heads, dim) kernel
    assert rule("query/kernel", kernel) == default_unit_axes("query/kernel", kernel)
    assert rule("params/query/kernel", jnp.zeros((8, 2, 4))) == (0,)
    custom = rule.with_fallback(lambda path, leaf: (leaf.ndim - 1,))
    assert custom("anything", kernel) == (3,)


def test_parameters_never_read_keep_the_reported_default():
    params = {"w": jnp.ones((8, 3)), "spare": jnp.ones((4, 5, 6))}
    rule = infer_unit_axes(lambda p, x: x @ p["w"], params, X)
    assert rule.unused == ["spare"]
    assert rule("spare", params["spare"]) == default_unit_axes("spare", params["spare"])


class Net(nnx.Module):
    def __init__(self, rngs):
        self.dense = nnx.Linear(8, 4, rngs=rngs)
        self.gain = nnx.Param(jnp.ones((4, 3)))  # no module rule: default_unit_axes


def test_nnx_table_raises_for_leaves_the_model_lacks_and_defaults_its_own():
    model = Net(nnx.Rngs(0))
    rule = nnx_unit_axes(model)
    assert rule("gain", jnp.ones((4, 3))) == (0,)
    assert rule("dense/kernel", jnp.ones((8, 4))) == (0,)
    with pytest.raises(ValueError, match=r"nnx_unit_axes: leaf 'model/dense/kernel'.*"
                                         r"nearest: 'dense/kernel'.*built on a subtree"):
        rule("model/dense/kernel", jnp.ones((8, 4)))
    assert rule.with_fallback()("extra", jnp.ones((5, 2))) == (0,)


def test_nnx_table_agrees_with_update_paths():
    model = Net(nnx.Rngs(0))
    params = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    clipped = clip(nnx_unit_axes(model), params)
    assert jax.tree.structure(clipped) == jax.tree.structure(params)
