"""infer_unit_axes on Haiku and Equinox modules (test-only dependencies).

Expected fan-in axes are written from each layer's definition. Haiku stores
``Linear`` weights ``(in, out)``, ``Conv2D`` kernels ``(H, W, in, out)`` and
``MultiHeadAttention`` projections ``(in, heads·key_size)``; Equinox stores
``Linear`` weights ``(out, in)`` and ``Conv2d`` weights ``(out, in, H, W)``.
"""

from __future__ import annotations

import equinox as eqx
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from agc_optax import agc, infer_unit_axes, path_to_str
from helpers.reference import reference_agc
from helpers.trees import mixed_scale_pair

X = jax.ShapeDtypeStruct((2, 5, 6), jnp.float32)
IDS = jax.ShapeDtypeStruct((2, 5), jnp.int32)


def _haiku_forward(x, ids):
    h = hk.Embed(11, 8)(ids) + hk.Linear(8)(x)
    h = hk.MultiHeadAttention(num_heads=2, key_size=3, model_size=8,
                              w_init=hk.initializers.VarianceScaling(1.0))(h, h, h)
    return hk.Conv2D(3, (3, 3))(h[..., None])


def test_haiku_linear_conv_attention_embed():
    forward = hk.transform(_haiku_forward)
    params = jax.eval_shape(lambda x, ids: forward.init(jax.random.key(0), x, ids), X, IDS)
    rule = infer_unit_axes(lambda p, x, ids: forward.apply(p, None, x, ids), params, X, IDS)
    got = {path_to_str(path): rule(path, leaf)
           for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    attention = {f"multi_head_attention/{name}/{kind}": (0,)
                 for name in ("query", "key", "value", "linear") for kind in ("w", "b")}
    assert got == {
        "embed/embeddings": (1,),          # (11, 8): one unit per row
        "linear/w": (0,), "linear/b": (0,),
        **attention,                       # w (8, 2·3) or (2·3, 8): axis 0 is the input
        "conv2_d/w": (0, 1, 2), "conv2_d/b": (0,),
    }


class _Model(eqx.Module):
    linear: eqx.nn.Linear
    conv: eqx.nn.Conv2d
    attention: eqx.nn.MultiheadAttention
    embedding: eqx.nn.Embedding

    def __init__(self, key):
        keys = jax.random.split(key, 4)
        self.linear = eqx.nn.Linear(6, 8, key=keys[0])
        self.conv = eqx.nn.Conv2d(1, 3, 3, key=keys[1])
        self.attention = eqx.nn.MultiheadAttention(2, 8, qk_size=3, vo_size=5, key=keys[2])
        self.embedding = eqx.nn.Embedding(11, 8, key=keys[3])

    def __call__(self, x, ids):  # x: (tokens, 6), ids: (tokens,)
        h = jax.vmap(self.linear)(x) + jax.vmap(self.embedding)(ids)
        h = self.attention(h, h, h)
        return self.conv(h[None])


def test_equinox_linear_conv_attention_embedding():
    model = eqx.filter_eval_shape(_Model, jax.random.key(0))
    params, static = eqx.partition(model, lambda x: isinstance(x, jax.ShapeDtypeStruct))
    rule = infer_unit_axes(lambda p, x, ids: eqx.combine(p, static)(x, ids), params,
                           jax.ShapeDtypeStruct((5, 6), jnp.float32),
                           jax.ShapeDtypeStruct((5,), jnp.int32))
    got = {path_to_str(path): rule(path, leaf)
           for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    projections = {f"attention/{name}_proj/weight": (1,)    # (heads·size, in) or (out, heads·vo)
                   for name in ("query", "key", "value", "output")}
    assert got == {
        "linear/weight": (1,), "linear/bias": (0,),      # (8, 6), (8,)
        "conv/weight": (1, 2, 3), "conv/bias": (0, 1, 2),  # (3, 1, 3, 3), (3, 1, 1)
        "embedding/weight": (1,),                        # (11, 8): one unit per row
        **projections,
    }


def test_equinox_clipping_matches_the_reference():
    model = _Model(jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_array)
    x = jnp.ones((5, 6))
    ids = jnp.arange(5)
    rule = infer_unit_axes(lambda p, x, ids: eqx.combine(p, static)(x, ids), params, x, ids)
    # Every element at its own scale: some units of every leaf clip, some do not.
    grads = jax.tree.map(lambda p: jnp.asarray(mixed_scale_pair(p.shape, (), seed=p.size)[1]),
                         params)
    tx = agc(0.05, unit_axes=rule)
    got = jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])(grads, params)
    for name, axes in (("conv", (1, 2, 3)), ("embedding", (1,))):
        param, grad = getattr(params, name).weight, getattr(grads, name).weight
        want, clipped = reference_agc(grad, param, axes, 0.05)
        assert 0 < clipped.mean() < 1
        np.testing.assert_allclose(getattr(got, name).weight, want, rtol=2e-6)
