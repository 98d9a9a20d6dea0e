"""DeepMind's NFNet-F0…F7 and NF-ResNet-50…200 in NNX: sizes, names, layers, the trainer.

Parameter counts, leaf counts and (for F0 and NF-ResNet-50) every parameter's name and
shape are compared with those of DeepMind's Haiku networks (``tests/data/deepmind_nfnets``);
the layers against float64 NumPy references written from their definitions.
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agc_optax import path_to_str
from examples.common import errors
from examples.nf_resnet import bn_resnet, layers, models, networks, nfnet, nfnet_specs, pretrained
from examples.nf_resnet.configs import TrainConfig
from helpers import deepmind_fixtures

DEEPMIND = deepmind_fixtures.variants()
# Building a network abstractly costs time quadratic in its depth (JAX traces every
# initialiser); the deep ones run with the slow tests.
FAST = {"nfnet_f0", "nfnet_f1", "nf_resnet_50", "nf_resnet_101", "nf_resnet_152"}


def abstract(name: str, num_classes: int = 1000) -> nfnet.NFNet:
    return nnx.eval_shape(lambda: nfnet.NFNet(nfnet_specs.VARIANTS[name], num_classes,
                                              rngs=nnx.Rngs(0)))


def param_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]
    return {path_to_str(path): tuple(leaf.shape) for path, leaf in leaves}


def test_the_table_holds_deepmind_variants_and_image_sizes():
    assert set(nfnet_specs.VARIANTS) == set(DEEPMIND)
    for name, facts in DEEPMIND.items():
        spec = nfnet_specs.VARIANTS[name]
        if "train_imsize" in facts:
            assert (spec.train_imsize, spec.test_imsize) == (facts["train_imsize"],
                                                             facts["test_imsize"])


@pytest.mark.parametrize("name", [
    name if name in FAST else pytest.param(name, marks=pytest.mark.slow) for name in DEEPMIND])
def test_parameter_and_leaf_counts_equal_deepmind(name):
    shapes = param_shapes(abstract(name))
    assert sum(int(np.prod(s)) for s in shapes.values()) == DEEPMIND[name]["params"]
    assert len(shapes) == DEEPMIND[name]["leaves"]


@pytest.mark.parametrize("name", ["nfnet_f0", "nf_resnet_50"])
def test_every_parameter_has_deepmind_name_and_shape(name):
    spec = nfnet_specs.VARIANTS[name]
    ours = {"/".join(pretrained.deepmind_name(path, spec)): shape
            for path, shape in param_shapes(abstract(name)).items()}
    theirs = {key: tuple(shape) for key, shape in DEEPMIND[name]["names"].items()}
    assert ours == theirs


def test_block_betas_follow_the_expected_variance_by_hand():
    spec = dataclasses.replace(nfnet_specs.VARIANTS["nf_resnet_50"], depths=(2, 3, 1, 1))
    a2 = 0.2**2
    # β² starts at 1 and grows by α² per block; a stage's first block sees the grown
    # variance, but its output restarts at 1 + α² (its shortcut is a conv of act(h) / β).
    expected = [1, 1 + a2, 1 + 2 * a2, 1 + a2, 1 + 2 * a2, 1 + 3 * a2, 1 + a2]
    np.testing.assert_allclose(nfnet.block_betas(spec), np.sqrt(expected))


def test_nfnet_f0_layout_by_hand():
    model = abstract("nfnet_f0")
    assert [c.kernel.shape for c in model.stem.convs] == [
        (3, 3, 3, 16), (3, 3, 16, 32), (3, 3, 32, 64), (3, 3, 64, 128)]
    assert [c.strides for c in model.stem.convs] == [2, 1, 1, 2] and not model.stem.max_pool
    first, strided = model.blocks[0], model.blocks[1]
    # Inner width 0.5 × 256 = 128, groups of 128 channels: one group; then 256, two groups.
    assert [c.kernel.shape for c in first.convs] == [
        (1, 1, 128, 128), (3, 3, 128, 128), (3, 3, 128, 128), (1, 1, 128, 256)]
    assert [c.groups for c in strided.convs] == [1, 2, 2, 1]
    assert strided.pool_shortcut and strided.shortcut.strides == 1
    assert strided.squeeze_excite.reduce.kernel.shape == (512, 256)
    assert model.final_conv.kernel.shape == (1, 1, 1536, 3072)
    assert model.head.kernel.shape == (3072, 1000)


def test_nf_resnet_50_has_the_convolutions_of_bn_resnet_50():
    nf = abstract("nf_resnet_50")
    bn = nnx.eval_shape(lambda: bn_resnet.BNResNet(models.VARIANTS["bn_resnet_50"], 1000,
                                                   rngs=nnx.Rngs(0)))
    assert nf.stem.convs[0].kernel.shape == bn.stem.kernel.shape == (7, 7, 3, 64)
    assert nf.stem.max_pool and bn.stem_pool
    # The strided bottleneck of stage 2 by hand: 1×1 to 128, 3×3 stride 2, 1×1 to 512.
    assert [c.kernel.shape for c in nf.blocks[3].convs] == [
        (1, 1, 256, 128), (3, 3, 128, 128), (1, 1, 128, 512)]
    assert nf.blocks[3].convs[1].strides == 2
    assert nf.blocks[3].shortcut.strides == 2 and not nf.blocks[3].pool_shortcut
    for a, b in zip(nf.blocks, bn.blocks, strict=True):
        assert [c.kernel.shape for c in a.convs] == [c.kernel.shape for c in b.convs]
        assert (a.shortcut is None) == (b.shortcut is None)
    assert nf.final_conv is None and nf.blocks[0].squeeze_excite is None


def reference_ws_conv(x, kernel, gain, bias, stride, groups, eps=1e-4):
    """Grouped SAME convolution with a scaled weight-standardised kernel, float64 NumPy."""
    x, kernel = x.astype(np.float64), kernel.astype(np.float64)
    k, _, cin_g, cout = kernel.shape
    fan_in = k * k * cin_g
    mean = kernel.mean(axis=(0, 1, 2))
    var = kernel.var(axis=(0, 1, 2))
    w = (kernel - mean) / np.sqrt(np.maximum(var * fan_in, eps)) * gain
    n, h, wd, _ = x.shape
    out_h, out_w = -(-h // stride), -(-wd // stride)
    pad_h = max((out_h - 1) * stride + k - h, 0)
    pad_w = max((out_w - 1) * stride + k - wd, 0)
    xp = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                    (0, 0)))
    out = np.zeros((n, out_h, out_w, cout))
    cout_g = cout // groups
    for o in range(cout):
        g = o // cout_g
        for i in range(out_h):
            for j in range(out_w):
                patch = xp[:, i * stride:i * stride + k, j * stride:j * stride + k,
                           g * cin_g:(g + 1) * cin_g]
                out[:, i, j, o] = np.einsum("nabc,abc->n", patch, w[..., o])
    return out + bias


@pytest.mark.parametrize(("stride", "groups"), [(1, 2), (2, 3)])
def test_grouped_ws_conv_matches_a_numpy_reference(stride, groups):
    rng = np.random.default_rng(0)
    conv = layers.WSConv(6, 6, 3, strides=stride, groups=groups, rngs=nnx.Rngs(0))
    assert conv.kernel.shape == (3, 3, 6 // groups, 6)
    conv.kernel.set_value(jnp.asarray(rng.normal(size=conv.kernel.shape) * 3 + 1, jnp.float32))
    conv.gain.set_value(jnp.asarray(rng.uniform(0.5, 2, 6), jnp.float32))
    conv.bias.set_value(jnp.asarray(rng.normal(size=6), jnp.float32))
    x = rng.normal(size=(2, 7, 7, 6)).astype(np.float32)
    expected = reference_ws_conv(x, np.asarray(conv.kernel[...]), np.asarray(conv.gain[...]),
                                 np.asarray(conv.bias[...]), stride, groups)
    np.testing.assert_allclose(np.asarray(conv(x)), expected, rtol=1e-4, atol=1e-4)


def test_ws_conv_floors_the_fan_in_variance_at_deepmind_eps():
    # A tiny kernel: var(W) · fan_in ≈ 3e-9, below ε = 1e-4, which then divides.
    rng = np.random.default_rng(1)
    conv = layers.WSConv(3, 4, 3, rngs=nnx.Rngs(0))
    kernel = 1e-5 * rng.normal(size=conv.kernel.shape)
    conv.kernel.set_value(jnp.asarray(kernel, jnp.float32))
    kernel = np.asarray(conv.kernel[...], np.float64)
    expected = (kernel - kernel.mean(axis=(0, 1, 2))) / np.sqrt(1e-4)
    np.testing.assert_allclose(np.asarray(conv.standardized_kernel()), expected, rtol=1e-4)


def test_ws_conv_rejects_groups_that_do_not_divide():
    with pytest.raises(ValueError, match="3 groups do not divide 4 input"):
        layers.WSConv(4, 6, 3, groups=3, rngs=nnx.Rngs(0))


def test_stochastic_depth_drops_whole_examples_without_rescaling():
    drop = layers.StochasticDepth(0.5, rngs=nnx.Rngs(dropout=1))
    x = jnp.ones((256, 2, 2, 3))
    y = np.asarray(drop(x))
    per_example = y.reshape(256, -1)
    # Each example is kept whole (all ones, not 1 / 0.5) or dropped whole.
    assert set(np.unique(per_example)) <= {0.0, 1.0}
    assert np.all(per_example.min(axis=1) == per_example.max(axis=1))
    assert 0.35 < per_example[:, 0].mean() < 0.65
    np.testing.assert_array_equal(np.asarray(nnx.view(drop, deterministic=True)(x)), 1.0)


def test_evaluation_view_turns_stochastic_depth_and_dropout_off():
    fixture = deepmind_fixtures.load("nfnet_tiny")
    model = nnx.eval_shape(lambda: nfnet.NFNet(fixture.spec, 10, drop_path_rate=0.9,
                                               dropout_rate=0.9, rngs=nnx.Rngs(0)))
    model = pretrained.materialize(
        model, pretrained.deepmind_values(model, fixture.params, fixture.spec), seed=0)
    training = deepmind_fixtures.apply(model, fixture.x)
    view = nnx.view(model, deterministic=True)
    assert all(block.stochastic_depth.deterministic for block in view.blocks)
    deepmind_fixtures.assert_logits_close(deepmind_fixtures.apply(view, fixture.x),
                                          fixture.logits)
    assert np.abs(training - fixture.logits).max() > 1e-2


def test_inner_width_below_the_group_width_is_an_error():
    spec = dataclasses.replace(nfnet_specs.VARIANTS["nfnet_f0"], widths=(64, 512, 1536, 1536))
    with pytest.raises(ValueError, match="stage 0: inner width 32 is below the group width 128"):
        nnx.eval_shape(lambda: nfnet.NFNet(spec, 10, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("name", ["nfnet_f0", "nf_resnet_50", "nf_resnet_cpu"])
def test_the_trainer_builds_every_kind_of_model(name):
    config = TrainConfig(model=name, drop_path_rate=0.1, dropout_rate=0.2)
    model = nnx.eval_shape(lambda: networks.create_model(config, 10, 3, nnx.Rngs(0)))
    assert model.head.kernel.shape[-1] == 10
    if name in nfnet_specs.VARIANTS:
        assert model.dropout.rate == 0.2
        assert model.blocks[-1].stochastic_depth.rate == pytest.approx(
            0.1 * (len(model.blocks) - 1) / len(model.blocks))


def test_the_trainer_refuses_an_activation_for_a_deepmind_network():
    config = TrainConfig(model="nfnet_f0", activation="silu")
    with pytest.raises(errors.UserError, match="--activation 'silu': --model nfnet_f0 fixes"):
        networks.create_model(config, 10, 3, nnx.Rngs(0))


def test_the_docs_table_is_deepmind_counts_and_the_rows():
    page = (deepmind_fixtures.DATA.parents[2] / "docs" / "examples" / "nfnets.md").read_text()
    rows = [line.split("|")[1:-1] for line in page.splitlines()
            if re.match(r"\| `(nfnet_f\d|nf_resnet_\d+)` \|", line)]
    assert len(rows) == len(DEEPMIND)
    for cells in rows:
        name, count, leaves, depths, sizes = (c.strip() for c in cells)
        name = name.strip("`")
        spec = nfnet_specs.VARIANTS[name]
        assert int(count.replace(",", "")) == DEEPMIND[name]["params"]
        assert int(leaves) == DEEPMIND[name]["leaves"]
        assert tuple(int(d) for d in depths.split(",")) == spec.depths
        assert sizes == f"{spec.train_imsize} / {spec.test_imsize}"
