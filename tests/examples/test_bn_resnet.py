"""The BatchNorm ResNet baseline against a float64 NumPy pre-activation ResNet.

The reference below is written from the definitions (Ioffe & Szegedy 2015 for BatchNorm,
He et al. 2016 for the pre-activation block) with explicit loops over kernel offsets; it
shares no code with Flax or the example.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import agc_optax
from examples.nf_resnet import bn_resnet, layers, models
from helpers.reference import reference_agc

EPS = 1e-5  # PyTorch's and Flax's default.
MOMENTUM = 0.9  # PyTorch's default (Flax: 0.99).


def np_conv_same(x: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """NHWC × HWIO convolution with TensorFlow's SAME padding, in float64."""
    n, height, width, _ = x.shape
    kh, kw, _, cout = kernel.shape
    out_h, out_w = -(-height // stride), -(-width // stride)
    pad_h = max((out_h - 1) * stride + kh - height, 0)
    pad_w = max((out_w - 1) * stride + kw - width, 0)
    x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                   (0, 0)))
    out = np.zeros((n, out_h, out_w, cout))
    for dy in range(kh):
        for dx in range(kw):
            window = x[:, dy:dy + (out_h - 1) * stride + 1:stride,
                       dx:dx + (out_w - 1) * stride + 1:stride, :]
            out += window @ kernel[dy, dx]
    return out


def np_batch_norm(x, scale, bias, mean=None, var=None):
    """Normalizes over N, H, W with the batch's statistics, or with ``mean`` and ``var``."""
    if mean is None:
        mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    return (x - mean) / np.sqrt(var + EPS) * scale + bias


def f64(variable) -> np.ndarray:
    return np.asarray(variable[...], np.float64)


def np_bn_of(norm: nnx.BatchNorm, x: np.ndarray, training: bool) -> np.ndarray:
    stats = {} if training else {"mean": f64(norm.mean), "var": f64(norm.var)}
    return np_batch_norm(x, f64(norm.scale), f64(norm.bias), **stats)


def np_block(block: bn_resnet.BNBlock, h: np.ndarray, training: bool) -> np.ndarray:
    """``shortcut + conv(relu(bn(… conv(relu(bn(h))))))``, stride on the 3×3 conv."""
    relu = lambda z: np.maximum(z, 0.0)  # noqa: E731
    out = relu(np_bn_of(block.norms[0], h, training))
    shortcut = h
    if block.shortcut is not None:
        shortcut = np_conv_same(out, f64(block.shortcut.kernel), block.shortcut.strides)
    for i, conv in enumerate(block.convs):
        if i > 0:
            out = relu(np_bn_of(block.norms[i], out, training))
        out = np_conv_same(out, f64(conv.kernel), conv.strides)
    return shortcut + out


def np_resnet(model: bn_resnet.BNResNet, x: np.ndarray, training: bool) -> np.ndarray:
    """The whole network: stem, blocks, final BN and ReLU, average pool, classifier."""
    h = np_conv_same(np.asarray(x, np.float64), f64(model.stem.kernel), model.stem.strides)
    for block in model.blocks:
        h = np_block(block, h, training)
    features = np.maximum(np_bn_of(model.final_norm, h, training), 0.0).mean(axis=(1, 2))
    return features @ f64(model.head.kernel) + f64(model.head.bias)


def randomize_affine(model: nnx.Module, seed: int) -> None:
    """Gives every BatchNorm and the classifier non-trivial parameters."""
    rng = np.random.default_rng(seed)
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.BatchNorm):
            node.scale.set_value(jnp.asarray(rng.uniform(0.5, 1.5, node.scale.shape), jnp.float32))
            node.bias.set_value(jnp.asarray(rng.normal(0, 0.3, node.bias.shape), jnp.float32))
    model.head.kernel.set_value(
        jnp.asarray(rng.normal(0, 0.3, model.head.kernel.shape), jnp.float32))


def jit_call(model: nnx.Module, x: jax.Array) -> tuple[jax.Array, nnx.State]:
    """Calls the model under jit; returns its output and its state afterwards."""
    graphdef, state = nnx.split(model)

    def apply(state, x):
        module = nnx.merge(graphdef, state)
        return module(x), nnx.state(module)

    return jax.jit(apply)(state, x)


def bn_nano(dtype=None) -> bn_resnet.BNResNet:
    return bn_resnet.BNResNet(models.VARIANTS["bn_resnet_nano"], 10, in_features=1,
                              dtype=dtype, rngs=nnx.Rngs(0))


def test_training_forward_matches_float64_reference_and_updates_running_averages():
    model = bn_nano()
    randomize_affine(model, seed=1)
    x = jax.random.normal(jax.random.key(2), (6, 28, 28, 1)) * 2.0 + 0.5
    logits, state = jit_call(model, x)
    np.testing.assert_allclose(np.asarray(logits), np_resnet(model, np.asarray(x), True),
                               rtol=1e-4, atol=1e-4)
    # Running averages: mean ← m·mean + (1 − m)·batch mean, var likewise with the batch's
    # (biased) variance; initial mean 0 and variance 1. Checked on the stem's output.
    nnx.update(model, state)
    h = np_conv_same(np.asarray(x, np.float64), f64(model.stem.kernel), 2)
    norm = model.blocks[0].norms[0]
    np.testing.assert_allclose(f64(norm.mean), (1 - MOMENTUM) * h.mean(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(f64(norm.var), MOMENTUM + (1 - MOMENTUM) * h.var(axis=(0, 1, 2)),
                               rtol=1e-4)


def test_evaluation_uses_the_running_averages_and_leaves_them_alone():
    model = bn_nano()
    randomize_affine(model, seed=3)
    rng = np.random.default_rng(4)
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.BatchNorm):
            node.mean.set_value(jnp.asarray(rng.normal(0, 0.5, node.mean.shape), jnp.float32))
            node.var.set_value(jnp.asarray(rng.uniform(0.5, 2.0, node.var.shape), jnp.float32))
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))
    x = jax.random.normal(jax.random.key(5), (3, 28, 28, 1))
    logits, state = jit_call(nnx.view(model, deterministic=True, use_running_average=True), x)
    np.testing.assert_allclose(np.asarray(logits), np_resnet(model, np.asarray(x), False),
                               rtol=1e-4, atol=1e-4)
    after = nnx.state(state, nnx.BatchStat)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, after))


def test_bfloat16_compute_keeps_float32_statistics_and_parameters():
    norm = bn_resnet.batch_norm(2, jnp.bfloat16, nnx.Rngs(0))
    # 1000.3 is not a bfloat16 (its neighbours are 1000 and 1004): a bfloat16 running mean
    # would shift every normalized value by 0.3.
    norm.mean.set_value(jnp.array([1000.3, -0.7], jnp.float32))
    x = jnp.array([1000.0, 1004.0, 0.0, 2.0], jnp.bfloat16).reshape(2, 1, 1, 2)
    y = nnx.view(norm, use_running_average=True)(x)
    assert y.dtype == jnp.bfloat16
    expected = (np.array([1000.0, 1004.0, 0.0, 2.0]).reshape(2, 1, 1, 2)
                - np.array([1000.3, -0.7])) / np.sqrt(1.0 + EPS)
    np.testing.assert_allclose(np.asarray(y, np.float64), expected, rtol=2**-8)
    # Training: the batch statistics are float32 reductions of the bfloat16 input.
    samples = 1000.0 + 4.0 * np.arange(64) % 7
    batch = jnp.asarray(np.stack([samples, samples / 1000.0], -1).reshape(64, 1, 1, 2),
                        jnp.bfloat16)
    norm = bn_resnet.batch_norm(2, jnp.bfloat16, nnx.Rngs(0))
    norm(batch)
    assert {norm.mean[...].dtype, norm.var[...].dtype} == {jnp.dtype(jnp.float32)}
    values = np.asarray(batch, np.float64).reshape(64, 2)
    np.testing.assert_allclose(f64(norm.mean), (1 - MOMENTUM) * values.mean(0), rtol=1e-6)
    np.testing.assert_allclose(f64(norm.var), MOMENTUM + (1 - MOMENTUM) * values.var(0),
                               rtol=1e-6)
    model = bn_nano(jnp.bfloat16)
    assert model(jnp.ones((2, 28, 28, 1))).dtype == jnp.float32
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param)) + jax.tree.leaves(
        nnx.state(model, nnx.BatchStat))
    assert {x.dtype for x in leaves} == {jnp.dtype(jnp.float32)}


def conv_kernel_shapes(block: nnx.Module) -> list[tuple[int, ...]]:
    shapes = [conv.kernel.shape for conv in block.convs]
    return shapes + ([block.shortcut.kernel.shape] if block.shortcut is not None else [])


@pytest.mark.parametrize("size", ["nano", "cpu", "18", "50"])
def test_same_layout_as_the_nf_resnet_of_the_same_size(size):
    # Abstract models (shapes only): building the large ones eagerly takes long on a CPU.
    nf = nnx.eval_shape(lambda: models.NFResNet(models.VARIANTS[f"nf_resnet_{size}"], 10,
                                                rngs=nnx.Rngs(0)))
    bn = nnx.eval_shape(lambda: bn_resnet.BNResNet(models.VARIANTS[f"bn_resnet_{size}"], 10,
                                                   rngs=nnx.Rngs(0)))
    assert bn.stem.kernel.shape == nf.stem.kernel.shape and bn.stem_pool == nf.stem_pool
    assert bn.stem.strides == nf.stem.strides
    assert [conv_kernel_shapes(b) for b in bn.blocks] == [conv_kernel_shapes(b) for b in nf.blocks]
    strides = lambda model: [[c.strides for c in b.convs] for b in model.blocks]  # noqa: E731
    assert strides(bn) == strides(nf)
    assert bn.head.kernel.shape == nf.head.kernel.shape
    # A BatchNorm before every conv of a branch, over that conv's input channels.
    for block in bn.blocks:
        assert [n.num_features for n in block.norms] == [c.in_features for c in block.convs]
    # Plain convolutions: no weight standardisation, no conv bias, no scalar or skip gains.
    kinds = {type(node).__name__ for _, node in nnx.iter_graph(bn)}
    assert "WSConv" not in kinds and "BatchNorm" in kinds
    paths = ["/".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(bn, nnx.Param))]
    assert all(p.endswith(("kernel", "scale", "bias")) for p in paths)
    assert not [p for p in paths if p.endswith("bias") and "/convs/" in p]


def test_strides_of_a_bottleneck_sit_on_its_3x3_conv():
    layout = models.BlockLayout(64, 256, 2)
    block = bn_resnet.BNBlock(layout, kind="bottleneck", bottleneck_ratio=0.25,
                              activation="relu", se_ratio=None, drop_path_rate=0.0,
                              dtype=None, rngs=nnx.Rngs(0))
    assert [c.strides for c in block.convs] == [1, 2, 1]
    assert block.shortcut.strides == 2
    assert block(jnp.ones((2, 8, 8, 64))).shape == (2, 4, 4, 256)


def test_the_classifier_starts_at_zero_and_the_activation_is_unscaled():
    model = bn_resnet.BNResNet(models.VARIANTS["bn_resnet_nano"], 10, in_features=1,
                               se_ratio=0.25, drop_path_rate=0.1, dropout_rate=0.2,
                               rngs=nnx.Rngs(0))
    logits, _ = jit_call(model, jnp.ones((2, 28, 28, 1)))
    np.testing.assert_array_equal(np.asarray(logits), 0.0)
    z = jnp.linspace(-2.0, 2.0, 9)
    np.testing.assert_array_equal(model.activation(z), np.maximum(np.asarray(z), 0.0))
    assert layers.activation("relu") is jax.nn.relu


def test_each_family_refuses_the_other_familys_layout():
    with pytest.raises(ValueError, match="NFResNet builds normalization='none'"):
        models.NFResNet(models.VARIANTS["bn_resnet_nano"], 10, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="BNResNet builds normalization='batch'"):
        bn_resnet.BNResNet(models.VARIANTS["nf_resnet_nano"], 10, rngs=nnx.Rngs(0))


def test_agc_clips_each_batch_norm_scale_and_bias_as_one_unit():
    # The default unit rule makes a vector one unit: AGC compares the whole scale (or bias)
    # vector's gradient norm with the vector's norm, as for the NF-ResNet's gains and biases.
    model = nnx.eval_shape(lambda: bn_nano())
    params = nnx.state(model, nnx.Param)
    rng = np.random.default_rng(6)
    params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 10.0 ** rng.uniform(
        -3, 0, size=p.shape[-1:]), jnp.float32), params)
    clipped = agc_optax.clip_grads(grads, params, 0.05)
    flat = lambda tree: dict(nnx.to_flat_state(tree))  # noqa: E731
    checked = 0
    for path, grad in flat(grads).items():
        if path[-1] in ("scale", "bias") and path[0] != "head":
            expected, _ = reference_agc(np.asarray(grad[...]), np.asarray(flat(params)[path][...]),
                                        fan_in_axes=(0,), clipping=0.05)
            np.testing.assert_allclose(np.asarray(flat(clipped)[path][...]), expected, rtol=1e-5)
            checked += 1
    assert checked == 2 * 5  # Scale and bias of 2 norms in each of 2 blocks, and the final one.
