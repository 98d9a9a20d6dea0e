"""Clipping statistics; parity with optax.adaptive_grad_clip where its rule is right.

Where optax goes wrong (README's comparison table), the same test runs on agc-optax and on
optax, whose case is marked ``optax_bug``: an expected failure, strict on the optax releases
known to have the bug, lenient on newer ones, so a fixed optax shows as an XPASS instead of
breaking the suite (the reasoning is in ``tests/helpers/optax_bugs.py``).
"""

from __future__ import annotations

import importlib
import pathlib
import types
import unittest

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import agc_optax
from agc_optax import AGCState, agc
from helpers.optax_bugs import LAST_CHECKED, optax_bug
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


# Kernels whose units optax's rank rule gets wrong: README's "fan-in rule", "(1, out)
# kernel" and "ranks" rows. (name, shape, fan-in axes, optax's mistake, how it shows.)
WRONG_UNITS = [
    ("conv1d", (5, 12, 16), (0, 1), "rank 3 is always (0,), wrong for Conv1D", AssertionError),
    ("attention_out", (4, 8, 32), (0, 1),
     "rank 3 is always (0,): an attention output kernel's units are (head, out) pairs",
     AssertionError),
    ("single_input", (1, 64), (0,), "a (1, out) kernel is squeezed into one unit",
     AssertionError),
    ("rank6", (2, 2, 2, 2, 3, 8), (0, 1, 2, 3, 4), "ranks above 5 raise", ValueError),
]


def agc_and_optax(bug: str, raises: type[BaseException] = AssertionError) -> pytest.MarkDecorator:
    """Runs a test on agc-optax's ``agc`` and on optax's, which has ``bug``; see optax_bugs."""
    return pytest.mark.parametrize("clip", [
        pytest.param(agc, id="agc_optax"),
        pytest.param(optax.adaptive_grad_clip, id="optax", marks=optax_bug(bug, raises)),
    ])


@pytest.mark.parametrize(("clip", "shape", "fan_in"), [
    param
    for name, shape, fan_in, bug, raises in WRONG_UNITS
    for param in (
        pytest.param(agc, shape, fan_in, id=f"agc_optax-{name}"),
        pytest.param(optax.adaptive_grad_clip, shape, fan_in, id=f"optax-{name}",
                     marks=optax_bug(bug, raises)),
    )
])
def test_every_unit_is_clipped_on_its_own(clip, shape, fan_in):
    """Where optax's units are wrong; optax's cases fail where it has the bug (optax_bugs)."""
    param, grad = mixed_scale_pair(shape, fan_in, seed=len(shape))
    clipped = clip(0.02).update([grad], None, [param])[0][0]
    np.testing.assert_allclose(np.asarray(clipped), reference_agc(grad, param, fan_in, 0.02)[0],
                               rtol=2e-6)


@agc_and_optax("a float16 unit whose ‖g‖² overflows float16 is zeroed")
def test_a_float16_unit_whose_squared_norm_overflows_is_clipped(clip):
    grad, param = [jnp.full((64, 4), 1e4, jnp.float16)], [jnp.ones((64, 4), jnp.float16)]
    clipped = clip(0.01).update(grad, None, param)[0][0]
    np.testing.assert_allclose(np.linalg.norm(np.asarray(clipped, np.float64), axis=0), 0.08,
                               rtol=2e-3)


@agc_and_optax("a finite float32 unit whose ‖g‖² overflows float32 is zeroed")
def test_a_float32_unit_whose_squared_norm_overflows_is_clipped_to_its_bound(clip):
    grad, param = [jnp.full((64, 4), 1e20, jnp.float32)], [jnp.ones((64, 4), jnp.float32)]
    clipped = clip(0.01).update(grad, None, param)[0][0]
    np.testing.assert_allclose(np.linalg.norm(np.asarray(clipped, np.float64), axis=0), 0.08,
                               rtol=1e-6)


@agc_and_optax("the gradient through it at an all-zero unit is NaN (sqrt(0))")
def test_the_gradient_through_clipping_at_an_all_zero_unit_is_finite(clip):
    params = {"w": jnp.ones((4, 3))}
    grads = {"w": jnp.zeros((4, 3)).at[:, 0].set(5.0)}
    transform = clip(0.01)

    def loss(g):
        return jnp.sum(transform.update(g, optax.EmptyState(), params)[0]["w"])

    assert np.isfinite(np.asarray(jax.grad(loss)(grads)["w"])).all()


def test_readme_compares_with_the_optax_release_last_checked():
    """README's comparison table describes optax LAST_CHECKED, the release optax_bug trusts."""
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"| `optax.adaptive_grad_clip` {LAST_CHECKED} |" in readme
