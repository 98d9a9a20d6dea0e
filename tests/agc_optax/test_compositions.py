"""AGC inside optax's combinators, under inject_hyperparams, and in nnx.Optimizer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from agc_optax import agc, default_unit_axes, nnx_unit_axes, with_agc
from helpers.flax_compat import as_pure
from helpers.reference import reference_agc
from helpers.trees import mixed_scale_pair


@pytest.fixture
def tree():
    w_param, w_grad = mixed_scale_pair((16, 8), (0,), seed=1)
    h_param, h_grad = mixed_scale_pair((8, 4), (0,), seed=2)
    params = {"body": {"kernel": jnp.asarray(w_param)}, "head": {"kernel": jnp.asarray(h_param)}}
    grads = {"body": {"kernel": jnp.asarray(w_grad)}, "head": {"kernel": jnp.asarray(h_grad)}}
    return params, grads


def reference_tree(grads, params, clipping, skip=()):
    def one(path, g, p):
        name = jax.tree_util.keystr(path)
        if any(s in name for s in skip):
            return np.asarray(g, np.float64)
        return reference_agc(g, p, (0,), clipping)[0]

    return jax.tree_util.tree_map_with_path(one, grads, params)


def assert_tree_close(got, want, rtol=2e-6):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=rtol),
                 got, want)


def test_with_agc_is_chain(tree):
    params, grads = tree
    transform = with_agc(optax.sgd(1.0), 0.02)
    updates, _ = jax.jit(transform.update)(grads, transform.init(params), params)
    want = jax.tree.map(lambda x: -x, reference_tree(grads, params, 0.02))
    assert_tree_close(updates, want)


def test_with_agc_after_clips_the_optimizers_updates(tree):
    # After SGD(0.5) the update is -0.5·g: each unit of it is clipped to λ·max(‖W_i‖, ε), so
    # it is -0.5·g where 0.5·‖g_i‖ is within the bound (not where ‖g_i‖ is, as before SGD).
    params, grads = tree
    transform = with_agc(optax.sgd(0.5), 0.02, placement="after")
    updates, _ = jax.jit(transform.update)(grads, transform.init(params), params)
    half_steps = jax.tree.map(lambda g: -0.5 * np.asarray(g, np.float64), grads)
    assert_tree_close(updates, reference_tree(half_steps, params, 0.02))
    before = with_agc(optax.sgd(0.5), 0.02)
    before_updates, _ = jax.jit(before.update)(grads, before.init(params), params)
    assert not np.allclose(before_updates["body"]["kernel"], updates["body"]["kernel"])


def test_with_agc_rejects_an_unknown_placement():
    with pytest.raises(ValueError, match=r"placement must be 'before'.*'after'.*got 'middle'"):
        with_agc(optax.sgd(0.1), 0.01, placement="middle")


def test_masked_clips_only_the_masked_in_leaves(tree):
    params, grads = tree
    mask = {"body": {"kernel": True}, "head": {"kernel": False}}
    transform = optax.masked(agc(0.02), mask)
    updates, _ = jax.jit(transform.update)(grads, transform.init(params), params)
    assert_tree_close(updates, reference_tree(grads, params, 0.02, skip=("head",)))


def test_multi_transform_gives_each_group_its_clipping(tree):
    params, grads = tree
    labels = {"body": {"kernel": "tight"}, "head": {"kernel": "loose"}}
    transform = optax.multi_transform({"tight": agc(0.005), "loose": agc(0.1)}, labels)
    updates, _ = jax.jit(transform.update)(grads, transform.init(params), params)
    np.testing.assert_allclose(
        updates["body"]["kernel"],
        reference_agc(grads["body"]["kernel"], params["body"]["kernel"], (0,), 0.005)[0],
        rtol=2e-6)
    np.testing.assert_allclose(
        updates["head"]["kernel"],
        reference_agc(grads["head"]["kernel"], params["head"]["kernel"], (0,), 0.1)[0], rtol=2e-6)


def test_multi_steps_clips_the_accumulated_gradient(tree):
    params, grads = tree
    transform = optax.MultiSteps(optax.chain(agc(0.02), optax.sgd(1.0)), every_k_schedule=2)
    state = transform.init(params)
    update = jax.jit(transform.update)
    first, state = update(grads, state, params)
    for leaf in jax.tree.leaves(first):
        np.testing.assert_array_equal(np.asarray(leaf), 0.0)
    doubled = jax.tree.map(lambda g: 3.0 * g, grads)
    second, state = update(doubled, state, params)
    mean = jax.tree.map(lambda g: 2.0 * g, grads)  # mean of g and 3g
    want = jax.tree.map(lambda x: -x, reference_tree(mean, params, 0.02))
    assert_tree_close(second, want, rtol=5e-6)


def test_inject_hyperparams_changes_clipping_without_recompiling(tree):
    params, grads = tree
    transform = optax.inject_hyperparams(agc)(clipping=0.02)
    state = transform.init(params)
    traces = []

    @jax.jit
    def step(grads, state, params):
        traces.append(1)
        return transform.update(grads, state, params)

    updates, state = step(grads, state, params)
    assert_tree_close(updates, reference_tree(grads, params, 0.02))
    state.hyperparams["clipping"] = jnp.asarray(0.005, jnp.float32)
    updates, state = step(grads, state, params)
    assert_tree_close(updates, reference_tree(grads, params, 0.005))
    assert len(traces) == 1


def test_inject_hyperparams_with_static_structural_arguments(tree):
    params, grads = tree
    exclude = lambda path, leaf: path.startswith("head")  # noqa: E731
    transform = optax.inject_hyperparams(agc, static_args=("unit_axes", "exclude"))(
        clipping=0.02, exclude=exclude, unit_axes=lambda path, leaf: (0,))
    updates, _ = jax.jit(transform.update)(grads, transform.init(params), params)
    assert_tree_close(updates, reference_tree(grads, params, 0.02, skip=("head",)))


def test_inject_hyperparams_without_static_args_fails_loudly():
    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    transform = optax.inject_hyperparams(agc)(clipping=0.02, unit_axes=nnx_unit_axes(model))
    with pytest.raises(TypeError, match="static_args"):
        transform.init(params)
    transform = optax.inject_hyperparams(agc)(clipping=0.02, axis=0)
    with pytest.raises(TypeError, match="static_args"):
        transform.init(params)


def test_no_retracing_across_steps(tree):
    params, grads = tree
    transform = optax.chain(agc(0.02, track_stats=True), optax.sgd(0.1, momentum=0.9))
    state = transform.init(params)
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(1)
        updates, state = transform.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(4):
        params, state = step(params, state, grads)
    assert len(traces) == 1


class TinyNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 4, (3,), rngs=rngs)  # Conv1D kernel (3, 1, 4)
        self.attention = nnx.MultiHeadAttention(num_heads=2, in_features=4, qkv_features=8,
                                                decode=False, rngs=rngs)
        self.head = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv(x))
        x = self.attention(x)
        return self.head(x.mean(axis=1))


def test_nnx_optimizer_trains_with_agc_stats_and_exclusion():
    model = TinyNet(nnx.Rngs(0))
    transform = optax.chain(
        agc(0.01, unit_axes=nnx_unit_axes(model), exclude="head", track_stats=True),
        optax.sgd(0.5))
    optimizer = nnx.Optimizer(model, transform, wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(0), (8, 6, 1))
    y = jax.random.randint(jax.random.key(1), (8,), 0, 2)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    head_before = np.asarray(model.head.kernel[...])
    losses = [float(train_step(model, optimizer, x, y)) for _ in range(5)]
    assert losses[-1] < losses[0]
    fraction = optax.tree_utils.tree_get(as_pure(optimizer.opt_state), "clip_fraction")
    assert 0.0 < float(fraction) <= 1.0
    # The head is excluded: it moves by the plain SGD step, larger than λ·‖W‖ allows.
    step = np.linalg.norm(np.asarray(model.head.kernel[...]) - head_before, axis=0)
    assert np.any(step > 0.01 * np.linalg.norm(head_before, axis=0) * 5)


def test_clipping_schedule_crossing_zero_never_flips_the_gradient(tree):
    """A traced λ ≤ 0 allows no gradient: the update is zero, never an ascent step."""
    params, grads = tree
    schedule = optax.linear_schedule(0.02, -0.02, transition_steps=4)  # 0.02, 0.01, 0, -0.01
    transform = optax.inject_hyperparams(agc)(clipping=schedule)
    state = transform.init(params)
    step = jax.jit(transform.update)
    for clipping in (0.02, 0.01, 0.0, -0.01):
        updates, state = step(grads, state, params)
        if clipping > 0:
            assert_tree_close(updates, reference_tree(grads, params, clipping))
        else:
            for leaf in jax.tree.leaves(updates):
                np.testing.assert_array_equal(np.asarray(leaf), 0.0)
    # Traced: a concrete array λ ≤ 0 is refused when agc is built.
    negative = jax.jit(lambda c: agc(c).update(grads, None, params)[0])(-0.01)
    for leaf in jax.tree.leaves(negative):
        np.testing.assert_array_equal(np.asarray(leaf), 0.0)


def test_default_unit_axes_through_inject_hyperparams(tree):
    params, grads = tree
    transform = optax.inject_hyperparams(agc, static_args=("unit_axes",))(
        clipping=0.02, unit_axes=default_unit_axes)
    updates, _ = jax.jit(transform.update)(grads, transform.init(params), params)
    assert_tree_close(updates, reference_tree(grads, params, 0.02))
    unmarked = optax.inject_hyperparams(agc)(clipping=0.02, unit_axes=default_unit_axes)
    with pytest.raises(TypeError, match=r"default_unit_axes was called with one argument.*"
                                        r"static_args"):
        unmarked.init(params)


def test_a_one_argument_rule_gets_the_static_args_hint(tree):
    params, _ = tree
    for argument in ("unit_axes", "exclude", "axis_name"):
        with pytest.raises(TypeError, match=rf"{argument}=.*\(path, leaf\).*static_args"):
            agc(0.01, **{argument: lambda path: None}).init(params)
