"""AGC against the float64 NumPy reference, for every layer kind, under jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agc_optax import agc, clip_grads, unitwise_norm
from helpers.reference import reference_agc
from helpers.trees import mixed_scale_pair

# (name, shape, fan-in axes the default rule must pick)
LAYER_KINDS = [
    ("scalar_skip_gain", (), ()),
    ("bias", (64,), (0,)),
    ("dense", (48, 32), (0,)),
    ("dense_single_input", (1, 256), (0,)),
    ("conv1d", (5, 12, 16), (0, 1)),
    ("conv2d", (3, 3, 8, 16), (0, 1, 2)),
    ("depthwise_conv2d", (3, 3, 1, 24), (0, 1, 2)),
    ("conv3d", (3, 3, 3, 4, 8), (0, 1, 2, 3)),
    ("rank6", (2, 2, 2, 2, 3, 24), (0, 1, 2, 3, 4)),
    ("attention_out", (4, 8, 32), (0, 1)),
]


def run_agc(grads, params, clipping, **kwargs):
    transform = agc(clipping, **kwargs)
    state = transform.init(params)
    updates, _ = jax.jit(transform.update)(grads, state, params)
    return updates


@pytest.mark.parametrize("clipping", [0.01, 0.05])
@pytest.mark.parametrize(("name", "shape", "fan_in"), LAYER_KINDS)
def test_default_rule_matches_reference(name, shape, fan_in, clipping):
    param, grad = mixed_scale_pair(shape, fan_in, seed=len(name))
    got = run_agc({name: grad}, {name: param}, clipping)[name]
    want, clipped = reference_agc(grad, param, fan_in, clipping)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2e-6, atol=0)
    if clipped.size > 4:
        assert 0 < clipped.mean() < 1, "test data must exercise both branches"


@pytest.mark.parametrize(
    ("name", "shape", "fan_in"),
    [
        ("attention_query", (32, 4, 8), (0,)),  # (in, heads, dim): only axis 0 is fan-in.
        ("embedding", (50, 16), (1,)),  # one unit per row.
        ("pytorch_conv2d", (16, 8, 3, 3), (1, 2, 3)),  # output-first layout.
    ],
)
def test_explicit_axes_match_reference(name, shape, fan_in):
    param, grad = mixed_scale_pair(shape, fan_in, seed=7)
    got = run_agc({name: grad}, {name: param}, 0.02, unit_axes={name: fan_in})[name]
    want, _ = reference_agc(grad, param, fan_in, 0.02)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2e-6, atol=0)


def test_output_first_layout_matches_reference():
    shapes = {"linear": (32, 48), "conv": (16, 8, 3, 3), "bias": (16,)}
    fan_ins = {"linear": (1,), "conv": (1, 2, 3), "bias": (0,)}
    pairs = {k: mixed_scale_pair(s, fan_ins[k], seed=i) for i, (k, s) in enumerate(shapes.items())}
    params = {k: p for k, (p, _) in pairs.items()}
    grads = {k: g for k, (_, g) in pairs.items()}
    got = run_agc(grads, params, 0.03, unit_axes="output_first")
    for key in shapes:
        want, _ = reference_agc(grads[key], params[key], fan_ins[key], 0.03)
        np.testing.assert_allclose(np.asarray(got[key], np.float64), want, rtol=2e-6, err_msg=key)


def test_unclipped_units_are_bit_for_bit_unchanged():
    param, grad = mixed_scale_pair((3, 3, 8, 32), (0, 1, 2), seed=3)
    got = np.asarray(run_agc([grad], [param], 0.01)[0])
    _, clipped = reference_agc(grad, param, (0, 1, 2), 0.01)
    untouched = ~clipped
    assert untouched.any()
    np.testing.assert_array_equal(got[..., untouched], grad[..., untouched])


def test_clipped_units_end_exactly_at_the_threshold():
    param, grad = mixed_scale_pair((64, 40), (0,), seed=5)
    got = run_agc([grad], [param], 0.01)[0]
    _, clipped = reference_agc(grad, param, (0,), 0.01)
    got_norm = np.linalg.norm(np.asarray(got, np.float64), axis=0)
    limit = 0.01 * np.maximum(np.linalg.norm(param.astype(np.float64), axis=0), 1e-3)
    np.testing.assert_allclose(got_norm[clipped], limit[clipped], rtol=1e-6)


def test_zero_initialised_params_still_learn():
    """ε floors the parameter norm, so zero biases and skip gains get a nonzero step."""
    params = {"bias": jnp.zeros(8), "skip_gain": jnp.zeros(())}
    grads = {"bias": jnp.full(8, 3.0), "skip_gain": jnp.asarray(-2.0)}
    got = run_agc(grads, params, 0.01, eps=1e-3)
    np.testing.assert_allclose(np.linalg.norm(got["bias"]), 0.01 * 1e-3, rtol=1e-6)
    np.testing.assert_allclose(got["skip_gain"], -0.01 * 1e-3, rtol=1e-6)


def test_clip_grads_is_the_same_computation():
    param, grad = mixed_scale_pair((3, 3, 4, 8), (0, 1, 2), seed=11)
    functional = jax.jit(lambda g, p: clip_grads(g, p, 0.02))({"w": grad}, {"w": param})
    want, _ = reference_agc(grad, param, (0, 1, 2), 0.02)
    np.testing.assert_allclose(np.asarray(functional["w"], np.float64), want, rtol=2e-6)


def test_clip_grads_honours_its_clipping_argument():
    """Composer's apply_agc ignores its threshold; ours must not."""
    param, grad = mixed_scale_pair((32, 16), (0,), seed=2)
    loose = clip_grads([grad], [param], 0.1)[0]
    tight = clip_grads([grad], [param], 0.001)[0]
    assert np.linalg.norm(tight) < np.linalg.norm(loose)


def test_unitwise_norm_matches_numpy_and_keeps_dims():
    x = np.random.default_rng(0).normal(size=(3, 3, 4, 5)).astype(np.float32)
    got = unitwise_norm(x, (0, 1, 2))
    assert got.shape == (1, 1, 1, 5)
    want = np.sqrt((x.astype(np.float64) ** 2).sum(axis=(0, 1, 2), keepdims=True))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
    assert unitwise_norm(x, -1).shape == (3, 3, 4, 1)


@pytest.mark.parametrize(
    ("shape", "axes"),
    [((7,), (0,)), ((5, 3), (0,)), ((3, 3, 2, 4), (0, 1, 2)), ((2, 2, 2, 3, 4), (0, 1, 2, 3))],
)
def test_unitwise_norm_takes_optax_calls_and_agrees_where_the_rules_do(shape, axes):
    x = np.random.default_rng(len(shape)).normal(size=shape).astype(np.float32)
    want = np.sqrt((x.astype(np.float64) ** 2).sum(axis=axes, keepdims=True))
    np.testing.assert_allclose(unitwise_norm(x), want, rtol=1e-6)
    np.testing.assert_allclose(unitwise_norm(x, axis=axes), want, rtol=1e-6)
    theirs = optax.transforms.unitwise_norm(x)
    np.testing.assert_allclose(jnp.broadcast_to(unitwise_norm(x), x.shape), theirs, rtol=1e-6)


def test_unitwise_norm_differs_from_optax_where_its_docstring_says():
    rng = np.random.default_rng(0)
    conv1d = rng.normal(size=(5, 12, 16)).astype(np.float32)  # optax: axis 0 only
    np.testing.assert_allclose(
        unitwise_norm(conv1d),
        np.sqrt((conv1d.astype(np.float64) ** 2).sum(axis=(0, 1), keepdims=True)),
        rtol=1e-6)
    single_input = rng.normal(size=(1, 6)).astype(np.float32)  # optax: one vector
    np.testing.assert_allclose(unitwise_norm(single_input), np.abs(single_input), rtol=1e-6)
    assert unitwise_norm(np.ones((2,) * 6)).shape == (1,) * 5 + (2,)  # optax: raises
    with pytest.raises(TypeError, match="axes= or optax's axis="):
        unitwise_norm(conv1d, 0, axis=0)


def test_unitwise_norm_has_a_finite_gradient_at_zero():
    grad = jax.grad(lambda x: unitwise_norm(x, 0).sum())(jnp.zeros((4, 3)))
    np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_chained_with_sgd_applies_clipped_step():
    param, grad = mixed_scale_pair((16, 8), (0,), seed=9)
    transform = optax.chain(agc(0.02), optax.sgd(0.5))
    state = transform.init([param])
    updates, _ = jax.jit(transform.update)([grad], state, [param])
    want, _ = reference_agc(grad, param, (0,), 0.02)
    np.testing.assert_allclose(np.asarray(updates[0], np.float64), -0.5 * want, rtol=2e-6)
