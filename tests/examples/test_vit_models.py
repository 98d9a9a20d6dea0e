"""The ViT example's model: output shapes, parameter names and AGC's units for every leaf."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import agc_optax
from examples.vit import configs, models, optim

NANO = models.VARIANTS["vit_nano"]  # patch 7, width 32, 2 blocks, 2 heads, MLP 64.
IMAGE = (2, 28, 28, 1)


def nano(**kwargs) -> models.ViT:
    return models.ViT(NANO, 10, rngs=nnx.Rngs(0), **kwargs)


def param_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
    return {agc_optax.path_to_str(path): tuple(leaf.shape) for path, leaf in leaves}


def block_expectations(i: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Shape and fan-in axes of every parameter of encoder block ``i``, from the layers'
    definitions: query/key/value ``(in, heads, head_dim)`` contract ``in``; the output
    projection ``(heads, head_dim, out)`` contracts heads and head_dim; Dense ``(in, out)``
    contracts ``in``; biases and LayerNorm scales are added or multiplied, one unit each
    (a ``(heads, head_dim)`` bias is one unit: it is never contracted)."""
    p = f"blocks/{i}/"
    expected = {}
    for name in ("query", "key", "value"):
        expected[p + f"attention/{name}/kernel"] = ((32, 2, 16), (0,))
        expected[p + f"attention/{name}/bias"] = ((2, 16), (0, 1))
    expected[p + "attention/out/kernel"] = ((2, 16, 32), (0, 1))
    expected[p + "attention/out/bias"] = ((32,), (0,))
    expected[p + "mlp/hidden/kernel"] = ((32, 64), (0,))
    expected[p + "mlp/hidden/bias"] = ((64,), (0,))
    expected[p + "mlp/output/kernel"] = ((64, 32), (0,))
    expected[p + "mlp/output/bias"] = ((32,), (0,))
    for norm in ("attention_norm", "mlp_norm"):
        expected[p + f"{norm}/scale"] = ((32,), (0,))
        expected[p + f"{norm}/bias"] = ((32,), (0,))
    return expected


EXPECTED = {
    **block_expectations(0),
    **block_expectations(1),
    # The patch embedding is a 7×7 conv over 1 channel: every axis but the output feature.
    "patch_embed/kernel": ((7, 7, 1, 32), (0, 1, 2)),
    "patch_embed/bias": ((32,), (0,)),
    # Added to the tokens, never contracted: one unit (the default shape rule would make
    # one unit per feature, over the 16 positions).
    "position_embedding": ((16, 32), (0, 1)),
    "final_norm/scale": ((32,), (0,)),
    "final_norm/bias": ((32,), (0,)),
    "head/kernel": ((32, 10), (0,)),
    "head/bias": ((10,), (0,)),
}


def test_logits_have_one_float32_row_per_image():
    logits = nano()(jnp.zeros(IMAGE))
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32


def test_bfloat16_compute_keeps_float32_parameters():
    model = nano(dtype=jnp.bfloat16)
    tokens = model.tokens(jnp.zeros(IMAGE))
    assert tokens.shape == (2, 16, 32) and tokens.dtype == jnp.bfloat16
    assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))} == {np.dtype(np.float32)}
    assert model(jnp.zeros(IMAGE)).dtype == jnp.float32


def test_tokens_are_patch_embeddings_plus_position_embedding():
    model = nano()
    x = jax.random.normal(jax.random.key(0), IMAGE)
    kernel = np.asarray(model.patch_embed.kernel[...], np.float64).reshape(49, 32)
    patches = np.asarray(x, np.float64).reshape(2, 4, 7, 4, 7).transpose(0, 1, 3, 2, 4)
    expected = (patches.reshape(2, 16, 49) @ kernel + np.asarray(model.patch_embed.bias[...])
                + np.asarray(model.position_embedding[...]))
    np.testing.assert_allclose(model.tokens(x), expected, rtol=1e-4, atol=1e-5)


def test_parameters_have_the_expected_shapes():
    assert param_shapes(nano()) == {path: shape for path, (shape, _) in EXPECTED.items()}


def test_agc_units_of_every_parameter_match_the_layer_definitions():
    model = nano()
    unit_axes = optim.model_unit_axes(model, IMAGE)
    params = nnx.state(model, nnx.Param)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = agc_optax.path_to_str(path)
        assert unit_axes(name, leaf) == EXPECTED[name][1], name


def test_default_agc_exclude_matches_only_the_classifier():
    pattern = configs.TrainConfig().agc_exclude
    matched = {p for p in param_shapes(nano()) if re.search(pattern, p)}
    assert matched == {"head/kernel", "head/bias"}


def test_zero_initialised_head_gives_zero_logits():
    np.testing.assert_array_equal(nano()(jnp.ones(IMAGE)), 0.0)


@pytest.mark.parametrize(("patch_size", "num_heads", "message"),
                         [(5, 2, "patch_size 5 must divide"), (7, 3, "num_heads 3 must divide")])
def test_inconsistent_layouts_are_refused(patch_size, num_heads, message):
    spec = models.ViTSpec(patch_size=patch_size, width=32, depth=1, num_heads=num_heads,
                          mlp_dim=64)
    with pytest.raises(ValueError, match=message):
        models.ViT(spec, 10, rngs=nnx.Rngs(0))


def numpy_diagonal_neighbours(images: np.ndarray, shift: int) -> np.ndarray:
    """The image and, per pixel, its four diagonal neighbours ``shift`` pixels away (the
    nearest border pixel where the neighbour lies outside), stacked on the channel axis."""
    _, height, width, _ = images.shape
    rows, cols = np.arange(height), np.arange(width)
    copies = [images]
    for dy, dx in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
        r = np.clip(rows + dy * shift, 0, height - 1)
        c = np.clip(cols + dx * shift, 0, width - 1)
        copies.append(images[:, r][:, :, c])
    return np.concatenate(copies, axis=-1)


def test_diagonal_shifts_stack_each_pixels_neighbours_half_a_patch_away():
    images = np.random.default_rng(0).normal(size=(2, 9, 11, 2))
    got = models.shift_diagonally(jnp.asarray(images, jnp.float32), 3)
    assert got.shape == (2, 9, 11, 10)
    np.testing.assert_allclose(got, numpy_diagonal_neighbours(images, 3), rtol=1e-6)


def test_shifted_patch_tokens_embed_the_patches_of_the_shifted_stack():
    spec = models.ViTSpec(patch_size=7, width=32, depth=1, num_heads=2, mlp_dim=64,
                          shifted_patches=True)
    model = models.ViT(spec, 10, rngs=nnx.Rngs(0))
    x = np.asarray(jax.random.normal(jax.random.key(0), IMAGE), np.float64)
    stack = numpy_diagonal_neighbours(x, 3)  # Half of a 7-pixel patch, rounded down.
    kernel = np.asarray(model.patch_embed.kernel[...], np.float64).reshape(7 * 7 * 5, 32)
    patches = stack.reshape(2, 4, 7, 4, 7, 5).transpose(0, 1, 3, 2, 4, 5).reshape(2, 16, -1)
    expected = (patches @ kernel + np.asarray(model.patch_embed.bias[...])
                + np.asarray(model.position_embedding[...]))
    np.testing.assert_allclose(model.tokens(jnp.asarray(x, jnp.float32)), expected,
                               rtol=1e-4, atol=1e-5)
    # The patch embedding is a 7×7 conv over the 5 stacked channels: every axis but the
    # output feature is fan-in.
    unit_axes = optim.model_unit_axes(model, IMAGE)
    kernel_leaf = model.patch_embed.kernel[...]
    assert kernel_leaf.shape == (7, 7, 5, 32)
    assert unit_axes("patch_embed/kernel", kernel_leaf) == (0, 1, 2)


def numpy_layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray | float = 0.0,
                     eps: float = 1e-6) -> np.ndarray:
    centred = x - x.mean(-1, keepdims=True)
    return centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + eps) * scale + bias


def numpy_encoder_block(x: np.ndarray, p: dict[str, np.ndarray], diagonal_mask: bool,
                        qk_norm: bool) -> np.ndarray:
    """A pre-LayerNorm encoder block in float64, written from its definition."""
    h = numpy_layer_norm(x, p["attention_norm/scale"], p["attention_norm/bias"])
    q, k, v = (np.einsum("bti,ihd->bthd", h, p[f"attention/{n}/kernel"])
               + p[f"attention/{n}/bias"] for n in ("query", "key", "value"))
    if qk_norm:
        q = numpy_layer_norm(q, p["attention/query_ln/scale"])
        k = numpy_layer_norm(k, p["attention/key_ln/scale"])
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if diagonal_mask:
        logits = np.where(np.eye(x.shape[1], dtype=bool), -np.inf, logits)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    heads = np.einsum("bhqk,bkhd->bqhd", weights, v)
    x = x + np.einsum("bqhd,hdo->bqo", heads, p["attention/out/kernel"]) + p["attention/out/bias"]
    h = numpy_layer_norm(x, p["mlp_norm/scale"], p["mlp_norm/bias"])
    h = h @ p["mlp/hidden/kernel"] + p["mlp/hidden/bias"]
    h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))  # tanh GELU.
    return x + h @ p["mlp/output/kernel"] + p["mlp/output/bias"]


@pytest.mark.parametrize("diagonal_mask, qk_norm", [(False, False), (True, False), (True, True)])
def test_encoder_block_matches_a_numpy_block(diagonal_mask, qk_norm):
    spec = models.ViTSpec(patch_size=7, width=32, depth=1, num_heads=2, mlp_dim=64,
                          diagonal_mask=diagonal_mask, qk_norm=qk_norm)
    block = models.EncoderBlock(spec, dropout_rate=0.0, dtype=None, rngs=nnx.Rngs(0))
    # Random values for every parameter, so that scales of one and zero biases hide nothing.
    state = nnx.state(block, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    nnx.update(block, jax.tree.unflatten(treedef, [
        0.3 * jax.random.normal(key, leaf.shape) for key, leaf in zip(keys, leaves, strict=True)]))
    params = {agc_optax.path_to_str(path): np.asarray(leaf, np.float64) for path, leaf
              in jax.tree_util.tree_leaves_with_path(nnx.state(block, nnx.Param))}
    assert ("attention/query_ln/scale" in params) == qk_norm
    x = np.asarray(jax.random.normal(jax.random.key(2), (2, 16, 32)), np.float64)
    np.testing.assert_allclose(block(jnp.asarray(x, jnp.float32)),
                               numpy_encoder_block(x, params, diagonal_mask, qk_norm),
                               rtol=1e-4, atol=1e-4)


def test_query_and_key_norm_scales_are_one_unit_each():
    spec = models.ViTSpec(patch_size=7, width=32, depth=1, num_heads=2, mlp_dim=64,
                          diagonal_mask=True, qk_norm=True)
    model = models.ViT(spec, 10, rngs=nnx.Rngs(0))
    unit_axes = optim.model_unit_axes(model, IMAGE)
    for name in ("query_ln", "key_ln"):
        # A (head_dim,) scale multiplies the normalized queries or keys: never contracted.
        scale = getattr(model.blocks[0].attention, name).scale[...]
        assert scale.shape == (16,)
        assert unit_axes(f"blocks/0/attention/{name}/scale", scale) == (0,)
    # The query kernel's units do not change: its input axis is the fan-in.
    kernel = model.blocks[0].attention.query.kernel[...]
    assert unit_axes("blocks/0/attention/query/kernel", kernel) == (0,)
