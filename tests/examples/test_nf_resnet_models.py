"""The NF-ResNet example's model: layers, output shapes, signal propagation at init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from examples.nf_resnet import layers, models

ALPHA = 0.2


def jit_apply(model: nnx.Module, method: str, x: jax.Array, **view: bool):
    """Calls ``model.method(x)`` under jit with the model's state as an argument.

    (Closing over a module's arrays makes them jit constants, which XLA:CPU constant-folds
    slowly and, for some graphs, wrongly.)
    """
    graphdef, state = nnx.split(nnx.view(model, **view) if view else model)
    return jax.jit(lambda state, x: getattr(nnx.merge(graphdef, state), method)(x))(state, x)


def channel_variance(h: jax.Array) -> float:
    """The average over channels of the variance over batch and space (the paper's metric)."""
    return float(jnp.mean(jnp.var(h.astype(jnp.float32), axis=(0, 1, 2))))


@pytest.mark.parametrize("name", sorted(layers.ACTIVATION_GAMMAS))
def test_scaled_activation_has_unit_variance_on_standard_normal(name):
    z = jax.random.normal(jax.random.key(0), (1_000_000,))
    np.testing.assert_allclose(float(jnp.var(layers.scaled_activation(name)(z))), 1.0, atol=0.01)


def test_ws_conv_kernel_is_standardised_per_output_unit():
    conv = layers.WSConv(5, 7, 3, rngs=nnx.Rngs(0))
    conv.kernel.set_value(conv.kernel[...] * 10.0 + 3.0)  # Scale and shift do not matter.
    conv.gain.set_value(jnp.arange(1.0, 8.0))
    w = np.asarray(conv.standardized_kernel(), np.float64).reshape(-1, 7)
    np.testing.assert_allclose(w.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.sqrt((w**2).sum(axis=0)), np.arange(1.0, 8.0), rtol=1e-4)


def test_ws_conv_preserves_unit_variance_and_computes_in_its_dtype():
    conv = layers.WSConv(64, 64, 3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (8, 32, 32, 64))
    y = jit_apply(conv, "__call__", x)
    assert y.dtype == jnp.bfloat16 and conv.kernel[...].dtype == jnp.float32
    np.testing.assert_allclose(channel_variance(y[:, 1:-1, 1:-1]), 1.0, atol=0.05)


def test_squeeze_excite_keeps_the_shape():
    se = layers.SqueezeExcite(16, 4, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 5, 5, 16))
    assert se(x).shape == x.shape


@pytest.mark.parametrize(
    ("name", "size", "channels"),
    [("nf_resnet_nano", 28, 1), ("nf_resnet_cpu", 28, 1), ("nf_resnet_18", 32, 3),
     pytest.param("nf_resnet_50", 32, 3, marks=pytest.mark.slow)],
)
def test_every_variant_gives_logits_of_the_right_shape(name, size, channels):
    model = models.NFResNet(models.VARIANTS[name], 10, in_features=channels, se_ratio=0.25,
                            drop_path_rate=0.1, dropout_rate=0.2, rngs=nnx.Rngs(0))
    x = jnp.zeros((2, size, size, channels))
    logits = jit_apply(model, "__call__", x, deterministic=True)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    # The classifier starts at zero, the rest of the network does not.
    np.testing.assert_array_equal(np.asarray(logits), 0.0)
    assert len(model.blocks) == sum(models.VARIANTS[name].depths)


def test_bfloat16_compute_keeps_float32_params():
    model = models.NFResNet(models.VARIANTS["nf_resnet_nano"], 10, in_features=1,
                            dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert model(jnp.ones((2, 28, 28, 1))).dtype == jnp.float32
    dtypes = {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))}
    assert dtypes == {jnp.dtype(jnp.float32)}


def test_no_normalization_layer_anywhere():
    model = models.NFResNet(models.VARIANTS["nf_resnet_18"], 10, rngs=nnx.Rngs(0))
    kinds = {type(node).__name__ for _, node in nnx.iter_graph(model)}
    assert not {"BatchNorm", "LayerNorm", "GroupNorm", "RMSNorm"} & kinds


def test_stochastic_depth_grows_linearly_with_block_index():
    model = models.NFResNet(models.VARIANTS["nf_resnet_50"], 10, drop_path_rate=0.2,
                            rngs=nnx.Rngs(0))
    rates = [block.drop_path.rate for block in model.blocks]
    np.testing.assert_allclose(rates, 0.2 * np.arange(16) / 16)


def test_expected_variance_schedule_grows_by_alpha_squared_and_resets_at_transitions():
    model = models.NFResNet(models.VARIANTS["nf_resnet_50"], 10, rngs=nnx.Rngs(0))
    expected = model.expected_variances()
    stage_lengths = models.VARIANTS["nf_resnet_50"].depths
    schedule = [1.0 + ALPHA**2 * (i + 1) for depth in stage_lengths for i in range(depth)]
    np.testing.assert_allclose(expected, schedule)
    betas = [block.beta for block in model.blocks]
    np.testing.assert_allclose(betas[1:], np.sqrt(schedule[:-1]))


# (variant, input size, tolerance): SAME zero padding lowers the variance near borders, so
# small feature maps (the last stages) need larger inputs or a looser tolerance.
SIGNAL_CASES = [
    ("nf_resnet_nano", 32, 0.1),
    ("nf_resnet_cpu", 32, 0.1),
    ("nf_resnet_18", 64, 0.15),
    pytest.param("nf_resnet_50", 128, 0.1, marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "size", "tolerance"), SIGNAL_CASES)
def test_signal_propagation_follows_the_expected_variance_at_init(name, size, tolerance):
    # With unit skip gains every branch contributes, so the residual stream's variance must
    # grow by about α² per block and reset to 1 + α² after every transition.
    model = models.NFResNet(models.VARIANTS[name], 10, in_features=3, alpha=ALPHA,
                            skip_gain_init=1.0, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (8, size, size, 3))
    stream = jit_apply(model, "residual_stream", x)
    measured = np.array([channel_variance(h) for h in stream[1:]])
    expected = np.array(model.expected_variances())
    np.testing.assert_allclose(measured, expected, rtol=tolerance)
    # Within a stage the variance grows block after block.
    for block, before, after in zip(model.blocks[1:], measured[:-1], measured[1:], strict=True):
        if not block.is_transition:
            assert after > before


def test_skip_init_makes_every_block_an_identity_or_a_shortcut_at_init():
    model = models.NFResNet(models.VARIANTS["nf_resnet_cpu"], 10, in_features=3,
                            rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    stream = model.residual_stream(x)
    for block, before, after in zip(model.blocks, stream[:-1], stream[1:], strict=True):
        if not block.is_transition:
            np.testing.assert_array_equal(np.asarray(after), np.asarray(before))
