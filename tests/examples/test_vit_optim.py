"""The ViT example's optimizer: AGC before or after AdamW, global norm, decay mask, schedule,
unit rules."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import agc_optax
from examples.vit import models, optim, train
from examples.vit.configs import TrainConfig

NANO = models.VARIANTS["vit_nano"]
IMAGE = (2, 28, 28, 1)
CONFIG = TrainConfig(model="vit_nano", lr=1e-2, weight_decay=0.1, warmup_epochs=1, clipping=0.0,
                     clip_global_norm=0.0)


def nano_params() -> tuple[models.ViT, dict]:
    model = models.ViT(NANO, 10, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    # A non-zero head, so every leaf has a norm.
    params = jax.tree.map(lambda x: x + 0.01, params)
    return model, params


def flat(tree) -> dict[str, np.ndarray]:
    return {agc_optax.path_to_str(p): np.asarray(x, np.float64)
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def random_like(tree, seed: int, scale: float = 1.0):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        treedef, [scale * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)])


def one_update(config, params, grads, unit_axes=None):
    with pytest.MonkeyPatch.context() as patch:  # AGC's units for these toy parameters.
        patch.setattr(models, "unit_axes", lambda _: unit_axes)
        tx, _ = train.create_optimizer(config, total_steps=100, steps_per_epoch=1)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    return updates, state


def test_schedule_warms_up_linearly_then_decays_to_zero_by_a_cosine():
    config = dataclasses.replace(CONFIG, warmup_epochs=2)
    _, schedule = train.create_optimizer(config, total_steps=100, steps_per_epoch=10)
    np.testing.assert_allclose([schedule(0), schedule(10), schedule(20)], [0, 5e-3, 1e-2])
    np.testing.assert_allclose(schedule(60), 1e-2 * 0.5 * (1 + np.cos(np.pi * 40 / 80)),
                               rtol=1e-5)
    np.testing.assert_allclose(schedule(100), 0.0, atol=1e-9)


def test_weight_decay_is_decoupled_and_applies_to_kernels_only():
    # With a zero gradient Adam's step is 0, so only the decoupled decay moves a parameter:
    # by -lr · wd · W for kernels, not at all for biases, scales and the position embedding.
    _, params = nano_params()
    config = dataclasses.replace(CONFIG, warmup_epochs=0)
    updates, _ = one_update(config, params, jax.tree.map(jnp.zeros_like, params))
    for path, update in flat(updates).items():
        expected = -1e-2 * 0.1 * flat(params)[path] if path.endswith("kernel") else 0.0
        np.testing.assert_allclose(update, expected, rtol=1e-5, atol=1e-12, err_msg=path)


def test_agc_after_adamw_bounds_every_units_update_by_its_weights():
    model, params = nano_params()
    unit_axes = optim.model_unit_axes(model, IMAGE)
    config = dataclasses.replace(CONFIG, agc_placement="after", clipping=0.001, warmup_epochs=0)
    grads = random_like(params, seed=1)
    updates, state = one_update(config, params, grads, unit_axes)
    unclipped, _ = one_update(dataclasses.replace(config, clipping=0.0), params, grads)
    w, u, free = flat(params), flat(updates), flat(unclipped)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = agc_optax.path_to_str(path)
        if name.startswith("head/"):
            np.testing.assert_allclose(u[name], free[name], err_msg=name)
            continue
        axes = unit_axes(name, leaf)
        w_norm = np.sqrt((w[name] ** 2).sum(axis=axes, keepdims=True))
        u_norm = np.sqrt((free[name] ** 2).sum(axis=axes, keepdims=True))
        bound = 0.001 * np.maximum(w_norm, 1e-3)
        expected = np.where(u_norm > bound, free[name] * bound / u_norm, free[name])
        np.testing.assert_allclose(u[name], expected, rtol=1e-4, atol=1e-12, err_msg=name)
    assert float(optax.tree_utils.tree_get(state, "clip_fraction")) > 0.5


def test_agc_before_adamw_clips_the_gradient_adamw_sees():
    # Adam's first step is lr · g / (|g| + eps): clipping a unit rescales it, so the
    # step's sign is unchanged and its magnitude stays ~lr, except where |g| ~ eps.
    # The check: the update equals plain AdamW applied to the float64 AGC reference.
    model, params = nano_params()
    unit_axes = optim.model_unit_axes(model, IMAGE)
    config = dataclasses.replace(CONFIG, agc_placement="before", clipping=0.01, warmup_epochs=0,
                                 weight_decay=0.0)
    grads = random_like(params, seed=2, scale=1e-6)
    updates, _ = one_update(config, params, grads, unit_axes)
    w, g = flat(params), flat(grads)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = agc_optax.path_to_str(path)
        clipped = g[name]
        if not name.startswith("head/"):
            axes = unit_axes(name, leaf)
            w_norm = np.sqrt((w[name] ** 2).sum(axis=axes, keepdims=True))
            g_norm = np.sqrt((g[name] ** 2).sum(axis=axes, keepdims=True))
            bound = 0.01 * np.maximum(w_norm, 1e-3)
            clipped = np.where(g_norm > bound, g[name] * bound / g_norm, g[name])
        # Adam's first step, bias-corrected: m̂ = g, v̂ = g², step = -lr · g / (|g| + eps).
        expected = -1e-2 * clipped / (np.abs(clipped) + 1e-8)
        np.testing.assert_allclose(flat(updates)[name], expected, rtol=1e-4, atol=1e-9,
                                   err_msg=name)


def test_global_norm_placement_scales_the_gradient_before_adamw():
    _, params = nano_params()
    config = dataclasses.replace(CONFIG, clip_global_norm=1e-7, warmup_epochs=0, weight_decay=0.0)
    grads = random_like(params, seed=3, scale=1e-6)
    updates, _ = one_update(config, params, grads)
    g = flat(grads)
    scale = 1e-7 / np.sqrt(sum((x**2).sum() for x in g.values()))
    for name, update in flat(updates).items():
        clipped = g[name] * scale
        np.testing.assert_allclose(update, -1e-2 * clipped / (np.abs(clipped) + 1e-8),
                                   rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("clip_norms_and_biases", [True, False])
def test_norms_and_biases_are_clipped_or_excluded_and_the_head_never(clip_norms_and_biases):
    model, params = nano_params()
    config = dataclasses.replace(CONFIG, clipping=0.01, clip_norms_and_biases=clip_norms_and_biases)
    _, state = one_update(config, params, params, optim.model_unit_axes(model, IMAGE))
    clipped = set(optax.tree_utils.tree_get(state, "leaf_clip_fraction"))
    every = set(flat(params))
    vectors = {p for p in every if p.endswith(("/bias", "/scale"))}
    head = {"head/kernel", "head/bias"}
    assert clipped == (every - head if clip_norms_and_biases else every - head - vectors)
    assert "position_embedding" in clipped


def test_optax_rank_rule_gives_optax_adaptive_grad_clip_its_units():
    _, params = nano_params()
    grads = random_like(params, seed=4, scale=0.05)
    expected, _ = optax.adaptive_grad_clip(0.01).update(grads, None, params)
    ours = agc_optax.clip_grads(grads, params, 0.01, unit_axes=optim.optax_rank_unit_axes)
    for name, x in flat(ours).items():
        np.testing.assert_allclose(x, flat(expected)[name], rtol=1e-5, err_msg=name)


@pytest.mark.parametrize(("shape", "axes"), [
    ((32, 2, 16), (0,)),  # query kernel: right.
    ((2, 16, 32), (0,)),  # attention output kernel: units per (head, out), not per out.
    ((2, 16), (0,)),  # query bias: one unit per head_dim index, over heads.
    ((7, 7, 1, 32), (0, 1, 2)),
    ((32,), (0,)),
    ((1, 16), (0, 1)),
    ((1, 2, 3, 4, 5), (0, 1, 2, 3)),
])
def test_optax_rank_rule_by_hand(shape, axes):
    assert optim.optax_rank_unit_axes("w", jnp.zeros(shape)) == axes


def test_optax_rank_rule_refuses_rank_six():
    with pytest.raises(ValueError, match="'w' of shape"):
        optim.optax_rank_unit_axes("w", jnp.zeros((2,) * 6))


@pytest.mark.parametrize(("name", "expected"), [("shape", None),
                                                ("optax_rank", optim.optax_rank_unit_axes)])
def test_unit_rules_by_name(name, expected):
    assert optim.unit_axes_rule(name, None, IMAGE) is expected


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="--agc-units 'rank'"):
        optim.unit_axes_rule("rank", None, IMAGE)
    with pytest.raises(ValueError, match="--agc-placement 'middle'"):
        train.create_optimizer(dataclasses.replace(CONFIG, clipping=0.01, agc_placement="middle"),
                               10, 1)
