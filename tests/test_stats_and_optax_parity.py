"""Clipping statistics, and parity with optax.adaptive_grad_clip where its rule is right."""

from __future__ import annotations

import importlib
import types
import unittest

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import agc_optax
from agc_optax import AGCState, agc
from helpers.reference import reference_agc
from helpers.trees import mixed_scale_pair

SHAPES = {"conv": ((3, 3, 4, 16), (0, 1, 2)), "dense": ((32, 24), (0,)), "bias": ((24,), (0,)),
          "head": ((24, 10), (0,))}


def make_tree():
    pairs = {k: mixed_scale_pair(s, a, seed=i) for i, (k, (s, a)) in enumerate(SHAPES.items())}
    return {k: p for k, (p, _) in pairs.items()}, {k: g for k, (_, g) in pairs.items()}


def test_statistics_match_the_reference_and_skip_excluded_leaves():
    params, grads = make_tree()
    transform = agc(0.01, exclude="head", track_stats=True)
    _, state = jax.jit(transform.update)(grads, transform.init(params), params)
    assert isinstance(state, AGCState)
    masks = {k: reference_agc(grads[k], params[k], SHAPES[k][1], 0.01)[1] for k in SHAPES}
    total = sum(int(masks[k].sum()) for k in SHAPES if k != "head")
    units = sum(masks[k].size for k in SHAPES if k != "head")
    assert state.clip_fraction.dtype == jnp.float32
    np.testing.assert_allclose(float(state.clip_fraction), total / units, rtol=1e-6)
    assert set(state.leaf_clip_fraction) == {"conv", "dense", "bias"}
    for key, fraction in state.leaf_clip_fraction.items():
        np.testing.assert_allclose(float(fraction), masks[key].mean(), rtol=1e-6, err_msg=key)


def reference_norm_statistics(grads, params, exclude, clipping, eps=1e-3):
    """Per-leaf (‖G‖, ‖clipped G‖, max_i ‖G_i‖ / max(‖W_i‖, ε)) in float64, from the definition."""
    out = {}
    for key, (_, axes) in SHAPES.items():
        if key == exclude:
            continue
        g, w = np.asarray(grads[key], np.float64), np.asarray(params[key], np.float64)
        clipped, _ = reference_agc(g, w, axes, clipping, eps)
        unit_g = np.sqrt(np.sum(g**2, axis=axes))
        unit_w = np.maximum(np.sqrt(np.sum(w**2, axis=axes)), eps)
        out[key] = (np.linalg.norm(g), np.linalg.norm(clipped), np.max(unit_g / unit_w))
    return out


@pytest.mark.parametrize("scale", [1.0, 1e25], ids=["ordinary", "blow_up"])
def test_norm_statistics_match_the_float64_reference(scale):
    """Issue 30 item 6: norms before and after clipping and the largest ratio, per leaf and
    in total; also in a blow-up step, whose float32 sums of squares overflow."""
    params, grads = make_tree()
    grads = jax.tree.map(lambda g: (g * scale).astype(np.float32), grads)
    transform = agc(0.01, exclude="head", track_stats=True)
    _, state = jax.jit(transform.update)(grads, transform.init(params), params)
    want = reference_norm_statistics(grads, params, "head", 0.01)
    assert set(state.leaf_grad_norm) == set(want) == set(state.leaf_max_ratio)
    for key, (norm, clipped_norm, ratio) in want.items():
        np.testing.assert_allclose(state.leaf_grad_norm[key], norm, rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(state.leaf_clipped_grad_norm[key], clipped_norm, rtol=1e-5,
                                   err_msg=key)
        np.testing.assert_allclose(state.leaf_max_ratio[key], ratio, rtol=1e-5, err_msg=key)
    values = np.array(list(want.values()))
    np.testing.assert_allclose(state.grad_norm, np.linalg.norm(values[:, 0]), rtol=1e-5)
    np.testing.assert_allclose(state.clipped_grad_norm, np.linalg.norm(values[:, 1]), rtol=1e-5)
    np.testing.assert_allclose(state.max_ratio, values[:, 2].max(), rtol=1e-5)
    for leaf in jax.tree.leaves(state):
        assert leaf.dtype == jnp.float32


def test_statistics_read_the_gradients_no_more_than_clipping_does():
    """The norms come from the per-unit sums: no extra full-size reduction."""
    params, grads = make_tree()

    def full_size_reductions(transform):
        jaxpr = jax.make_jaxpr(transform.update)(grads, transform.init(params), params).jaxpr
        shapes = {np.shape(leaf) for leaf in jax.tree.leaves(params)}
        return sorted(
            (eqn.primitive.name, eqn.invars[0].aval.shape) for eqn in jaxpr.eqns
            if eqn.primitive.name.startswith("reduce") and eqn.invars[0].aval.shape in shapes
        )

    assert full_size_reductions(agc(0.01, track_stats=True)) == full_size_reductions(agc(0.01))


def test_statistics_readable_with_tree_get_through_chain_and_inject():
    params, grads = make_tree()
    transform = optax.inject_hyperparams(
        lambda clipping: optax.chain(agc(clipping, track_stats=True), optax.sgd(0.1)))(
            clipping=0.01)
    _, state = jax.jit(transform.update)(grads, transform.init(params), params)
    fraction = optax.tree_utils.tree_get(state, "clip_fraction")
    assert 0.0 < float(fraction) < 1.0


def test_without_statistics_the_state_is_empty():
    params, grads = make_tree()
    transform = agc(0.01)
    assert transform.init(params) == optax.EmptyState()
    _, state = transform.update(grads, optax.EmptyState(), params)
    assert state == optax.EmptyState()
    # optax-style call with no state at all.
    _, state = transform.update(grads, None, params)
    assert state is None


def test_statistics_add_no_work_when_off():
    params, grads = make_tree()

    def top_level_sums(transform):
        jaxpr = jax.make_jaxpr(transform.update)(grads, transform.init(params), params).jaxpr
        return [eqn.primitive.name for eqn in jaxpr.eqns].count("reduce_sum")

    # Two reductions per leaf (‖g‖² and ‖p‖²), and nothing else, when statistics are off.
    assert top_level_sums(agc(0.01)) == 2 * len(SHAPES)
    assert top_level_sums(agc(0.01, track_stats=True)) > 2 * len(SHAPES)


@pytest.mark.parametrize(
    "shape",
    [(16,), (24, 12), (3, 3, 8, 16), (2, 2, 2, 4, 8)],
    ids=["rank1", "rank2", "rank4", "rank5"],
)
def test_parity_with_optax_where_its_rule_is_right(shape):
    param, grad = mixed_scale_pair(shape, tuple(range(max(len(shape) - 1, 1))), seed=len(shape))
    ours = jax.jit(agc(0.02).update)([grad], None, [param])[0][0]
    theirs = jax.jit(optax.adaptive_grad_clip(0.02).update)([grad], None, [param])[0][0]
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-6, atol=1e-12)


def test_optax_is_wrong_on_conv1d_and_we_are_not():
    param, grad = mixed_scale_pair((5, 12, 16), (0, 1), seed=12)
    want = reference_agc(grad, param, (0, 1), 0.02)[0]
    ours = agc(0.02).update([grad], None, [param])[0][0]
    theirs = optax.adaptive_grad_clip(0.02).update([grad], None, [param])[0][0]
    np.testing.assert_allclose(np.asarray(ours), want, rtol=2e-6)
    assert not np.allclose(np.asarray(theirs), want, rtol=1e-3)


OPTAX_TESTS_THAT_APPLY = [
    "test_adaptive_grad_clip",
    "test_adaptive_grad_clip_with_axis",
    "test_adaptive_grad_clip_default_axis_conv3d",
]


@pytest.mark.parametrize("name", OPTAX_TESTS_THAT_APPLY)
def test_optax_own_adaptive_grad_clip_tests_pass_against_ours(name, monkeypatch):
    """optax's own tests, with `_clipping.adaptive_grad_clip` pointing at agc_optax.

    `test_unitwise_norm_with_axis` is left out: it asserts optax's unitwise_norm
    rank rules (rank 6 raises, norms broadcast to full shape) that agc-optax replaces.
    `unitwise_norm` stays optax's: the tests use it only to check results.
    """
    clipping_test = importlib.import_module("optax.transforms._clipping_test")
    shim = types.SimpleNamespace(
        adaptive_grad_clip=agc_optax.adaptive_grad_clip,
        unitwise_norm=clipping_test._clipping.unitwise_norm,
    )
    monkeypatch.setattr(clipping_test, "_clipping", shim)
    result = unittest.TestResult()
    clipping_test.ClippingTest(name).run(result)
    assert result.testsRun == 1
    assert not result.errors and not result.failures, result.errors + result.failures


def test_where_optax_fails_and_we_do_not_float16_overflow_and_zero_units():
    """The README's comparison table claims these two optax failures; check both."""
    grad16, param16 = [jnp.full((64, 4), 1e4, jnp.float16)], [jnp.ones((64, 4), jnp.float16)]
    theirs = optax.adaptive_grad_clip(0.01).update(grad16, None, param16)[0][0]
    ours = agc(0.01).update(grad16, None, param16)[0][0]
    np.testing.assert_array_equal(np.asarray(theirs), 0.0)  # optax zeroes the gradient
    np.testing.assert_allclose(np.linalg.norm(np.asarray(ours, np.float64), axis=0), 0.08,
                               rtol=2e-3)

    params = {"w": jnp.ones((4, 3))}
    grads = {"w": jnp.zeros((4, 3)).at[:, 0].set(5.0)}

    def loss(transform):
        return lambda g: jnp.sum(transform.update(g, optax.EmptyState(), params)[0]["w"])

    assert np.isnan(np.asarray(jax.grad(loss(optax.adaptive_grad_clip(0.01)))(grads)["w"])).any()
    assert np.isfinite(np.asarray(jax.grad(loss(agc(0.01)))(grads)["w"])).all()


def test_optax_squeezes_a_single_input_kernel_into_one_unit():
    """The comparison's "(1, out) kernel" row: optax clips the whole row as one unit."""
    param, grad = mixed_scale_pair((1, 64), (0,), seed=5)
    theirs = np.asarray(optax.adaptive_grad_clip(0.01).update([grad], None, [param])[0][0])
    ours = np.asarray(agc(0.01).update([grad], None, [param])[0][0])
    np.testing.assert_allclose(theirs, reference_agc(grad, param, (0, 1), 0.01)[0], rtol=2e-6)
    np.testing.assert_allclose(ours, reference_agc(grad, param, (0,), 0.01)[0], rtol=2e-6)
    assert not np.allclose(theirs, ours, rtol=1e-3)


def test_optax_raises_above_rank_5_and_we_do_not():
    """The comparison's "ranks" row."""
    param, grad = mixed_scale_pair((2, 2, 2, 2, 3, 8), (0, 1, 2, 3, 4), seed=6)
    with pytest.raises(ValueError, match="Expected parameter with shape"):
        optax.adaptive_grad_clip(0.01).update([grad], None, [param])
    ours = agc(0.01).update([grad], None, [param])[0][0]
    np.testing.assert_allclose(ours, reference_agc(grad, param, (0, 1, 2, 3, 4), 0.01)[0],
                               rtol=2e-6)


def test_optax_reduces_only_axis_0_of_an_attention_output_kernel():
    """The comparison's "rank 3 is always (0,)" cell, for a (heads, head_dim, out) kernel."""
    param, grad = mixed_scale_pair((4, 8, 32), (0, 1), seed=7)
    theirs = np.asarray(optax.adaptive_grad_clip(0.02).update([grad], None, [param])[0][0])
    ours = np.asarray(agc(0.02).update([grad], None, [param])[0][0])
    np.testing.assert_allclose(theirs, reference_agc(grad, param, (0,), 0.02)[0], rtol=2e-6)
    np.testing.assert_allclose(ours, reference_agc(grad, param, (0, 1), 0.02)[0], rtol=2e-6)
    assert not np.allclose(theirs, ours, rtol=1e-3)


def test_where_optax_fails_and_we_do_not_float32_overflow():
    """For a comparison-table row: a finite float32 unit whose ‖g‖² overflows (1e20 here)."""
    grad, param = [jnp.full((64, 4), 1e20, jnp.float32)], [jnp.ones((64, 4), jnp.float32)]
    theirs = optax.adaptive_grad_clip(0.01).update(grad, None, param)[0][0]
    ours = agc(0.01).update(grad, None, param)[0][0]
    np.testing.assert_array_equal(np.asarray(theirs), 0.0)  # optax zeroes the gradient
    np.testing.assert_allclose(np.linalg.norm(np.asarray(ours, np.float64), axis=0), 0.08,
                               rtol=1e-6)
