"""Dtypes, special values, size-0 and empty leaves, and differentiability."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agc_optax import agc
from helpers.reference import reference_agc
from helpers.trees import mixed_scale_pair


def clip(grads, params, clipping=0.01, **kwargs):
    transform = agc(clipping, **kwargs)
    return jax.jit(transform.update)(grads, transform.init(params), params)[0]


def units_clipped_by_agc(grad_in, grad_out):
    return ~np.all(np.asarray(grad_in) == np.asarray(grad_out), axis=0)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_makes_the_float64_decisions(dtype):
    param32, grad32 = mixed_scale_pair((128, 256), (0,), seed=4)
    param, grad = jnp.asarray(param32, dtype), jnp.asarray(grad32, dtype)
    got = clip([grad], [param], 0.01)[0]
    assert got.dtype == dtype
    # The reference sees exactly the low-precision values, widened to float64.
    want, clipped = reference_agc(np.asarray(grad, np.float64), np.asarray(param, np.float64),
                                  (0,), 0.01)
    np.testing.assert_array_equal(units_clipped_by_agc(grad, got), clipped)
    # float16 stores these small values as subnormals (spacing 6e-8), hence the atol.
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-2, atol=1e-6)


def test_float16_sum_of_squares_overflow_is_clipped_not_zeroed():
    # Each element squared is 1e8 > float16 max (65504): a float16 accumulator overflows.
    grad = jnp.full((64, 4), 1e4, jnp.float16)
    param = jnp.ones((64, 4), jnp.float16)
    got = clip([grad], [param], 0.01)[0]
    assert got.dtype == jnp.float16
    assert np.all(np.isfinite(np.asarray(got)))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(got, np.float64), axis=0), 0.01 * 8.0,
                               rtol=2e-3)


def test_float64_leaves_accumulate_in_float64():
    with jax.enable_x64(True):
        param, grad = mixed_scale_pair((40, 30), (0,), seed=1, dtype=np.float64)
        got = clip([jnp.asarray(grad)], [jnp.asarray(param)], 0.01)[0]
        assert got.dtype == jnp.float64
        want, _ = reference_agc(grad, param, (0,), 0.01)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)


def test_updates_keep_their_dtype_when_params_have_another():
    param32, grad32 = mixed_scale_pair((32, 16), (0,), seed=8)
    grad = jnp.asarray(grad32, jnp.bfloat16)
    got = clip([grad], [jnp.asarray(param32)], 0.01)[0]
    assert got.dtype == jnp.bfloat16


def test_zero_gradients_stay_zero_without_nan():
    params = {"w": jnp.zeros((8, 4)), "b": jnp.ones(4)}
    grads = jax.tree.map(jnp.zeros_like, params)
    got = clip(grads, params)
    for leaf in jax.tree.leaves(got):
        np.testing.assert_array_equal(np.asarray(leaf), 0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_gradients_stay_non_finite(bad):
    param, grad = mixed_scale_pair((16, 8), (0,), seed=2)
    grad = grad.copy()
    grad[3, 5] = bad
    got = np.asarray(clip([grad], [param])[0])
    assert not np.isfinite(got[:, 5]).all()
    finite_units = [u for u in range(8) if u != 5]
    assert np.isfinite(got[:, finite_units]).all()


def test_apply_if_finite_still_skips_a_non_finite_step():
    params = {"w": jnp.ones((4, 4))}
    transform = optax.apply_if_finite(optax.chain(agc(0.01), optax.sgd(1.0)), 3)
    state = transform.init(params)
    bad = {"w": jnp.full((4, 4), jnp.inf)}
    updates, state = jax.jit(transform.update)(bad, state, params)
    np.testing.assert_array_equal(np.asarray(updates["w"]), 0.0)
    assert int(state.notfinite_count) == 1


@pytest.mark.parametrize("peak", [3e19, 1e37], ids=["sum_overflows", "near_float32_max"])
def test_float32_sum_of_squares_overflow_keeps_the_direction(peak):
    """A unit whose float32 sum of squares is inf is rescaled to the threshold, not zeroed."""
    param, grad = mixed_scale_pair((16, 6), (0,), seed=3)
    grad = grad.copy()
    grad[:, 1] = np.random.default_rng(1).normal(size=16) * peak  # overflows alone
    grad[:, 4] = peak  # every element equal and huge
    with np.errstate(over="ignore"):
        assert np.isinf(np.sum(np.square(grad), axis=0, dtype=np.float32)[[1, 4]]).all()
    got = np.asarray(clip([grad], [param], 0.01)[0])
    want, clipped = reference_agc(grad, param, (0,), 0.01)
    assert clipped[[1, 4]].all() and not clipped.all()
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=0)


def test_exact_path_costs_nothing_when_every_unit_is_in_range():
    """The second pass over gradients and params lives only in the cond's exact branch."""
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    jaxpr = jax.make_jaxpr(agc(0.01).update)(params, optax.EmptyState(), params).jaxpr
    reductions = [
        (eqn.primitive.name, eqn.invars[0].aval.shape)
        for eqn in jaxpr.eqns
        if eqn.primitive.name.startswith("reduce")
    ]
    full_size = sorted(r for r in reductions if r[1] in {(4, 3), (3,)})
    # ‖g‖² and ‖p‖² per leaf read the leaves, nothing more; the range check reduces only
    # per-unit values: (1, 3) for w and (1,) for b.
    assert full_size == [("reduce_sum", (3,))] * 2 + [("reduce_sum", (4, 3))] * 2
    assert sorted(r for r in reductions if r not in full_size) == [
        ("reduce_and", (1,)), ("reduce_and", (1, 3))
    ]
    (cond,) = [eqn for eqn in jaxpr.eqns if eqn.primitive.name == "cond"]
    exact, fast = (branch.jaxpr.eqns for branch in cond.params["branches"])
    assert not [e for e in fast if e.primitive.name.startswith("reduce")]
    exact_reductions = sorted(
        e.primitive.name for e in exact if e.primitive.name.startswith("reduce")
    )
    # Per leaf and per tree (gradient and parameter): the peak and the scaled sum of squares.
    assert exact_reductions == ["reduce_max"] * 4 + ["reduce_sum"] * 4


def test_tiny_gradients_and_zero_params_stay_finite():
    tiny = jnp.full((8, 2), 1e-30, jnp.float32)
    assert np.isfinite(np.asarray(clip([tiny], [jnp.zeros((8, 2))])[0])).all()


def test_complex_leaves_use_squared_modulus():
    rng = np.random.default_rng(0)
    param = (rng.normal(size=(12, 6)) + 1j * rng.normal(size=(12, 6))).astype(np.complex64)
    grad = (rng.normal(size=(12, 6)) + 1j * rng.normal(size=(12, 6))).astype(np.complex64)
    grad *= 10.0 ** rng.uniform(-3, 0, size=(1, 6))
    got = clip([grad], [param], 0.05)[0]
    assert got.dtype == jnp.complex64
    want, _ = reference_agc(grad, param, (0,), 0.05)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6, atol=1e-7)


def test_size_zero_none_and_masked_nodes_pass_through():
    params = {"empty": jnp.zeros((0, 4)), "none": None, "masked": optax.MaskedNode(),
              "w": jnp.ones((3, 2))}
    grads = {"empty": jnp.zeros((0, 4)), "none": None, "masked": optax.MaskedNode(),
             "w": jnp.full((3, 2), 5.0)}
    got = clip(grads, params, track_stats=False)
    assert got["none"] is None
    assert isinstance(got["masked"], optax.MaskedNode)
    assert got["empty"].shape == (0, 4)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(got["w"]), axis=0), 0.01 * np.sqrt(3),
                               rtol=1e-6)


def test_size_zero_leaves_do_not_count_as_units():
    params = {"empty": jnp.zeros((0, 4)), "w": jnp.ones((3, 2))}
    grads = {"empty": jnp.zeros((0, 4)), "w": jnp.full((3, 2), 5.0)}
    transform = agc(0.01, track_stats=True)
    _, state = transform.update(grads, transform.init(params), params)
    np.testing.assert_allclose(state.clip_fraction, 1.0)


def test_gradient_through_agc_is_finite_where_a_unit_is_zero():
    """Meta-learning differentiates through AGC; optax's sqrt(0) gives NaN here."""
    params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
    grads = {"w": jnp.zeros((4, 3)).at[:, 0].set(5.0), "b": jnp.zeros(3)}
    transform = agc(0.01)

    def loss(grads, params):
        updates, _ = transform.update(grads, optax.EmptyState(), params)
        return sum(jnp.sum(u**2) + jnp.sum(u) for u in jax.tree.leaves(updates))

    d_grads, d_params = jax.jit(jax.grad(loss, argnums=(0, 1)))(grads, params)
    for leaf in jax.tree.leaves((d_grads, d_params)):
        assert np.isfinite(np.asarray(leaf)).all()
    # Unclipped zero units pass through with derivative 1 (d/du of sum(u) + sum(u²)).
    np.testing.assert_allclose(np.asarray(d_grads["w"][:, 1:]), 1.0)


def test_gradient_matches_finite_differences_on_a_clipped_unit():
    param = jnp.asarray([[1.0], [2.0]])
    grad = jnp.asarray([[3.0], [4.0]])
    transform = agc(0.1)

    def loss(g):
        return jnp.sum(transform.update([g], optax.EmptyState(), [param])[0][0] * jnp.arange(2.0))

    analytic = jax.grad(loss)(grad)
    step = 1e-3
    numeric = np.zeros(2)
    for i in range(2):
        bump = jnp.zeros_like(grad).at[i, 0].set(step)
        numeric[i] = (loss(grad + bump) - loss(grad - bump)) / (2 * step)
    np.testing.assert_allclose(np.asarray(analytic)[:, 0], numeric, rtol=1e-2)


@pytest.mark.parametrize("clipping, eps", [(0.0, 1e-3), (0.01, 0.0)], ids=["lambda_0", "eps_0"])
def test_gradient_through_agc_is_finite_where_the_threshold_is_zero(clipping, eps):
    """A zero threshold (λ = 0, or ε = 0 on a zero unit) clips to 0 with a finite derivative."""
    params = {"w": jnp.ones((4, 3)).at[:, 0].set(0.0)}
    grads = {"w": jnp.full((4, 3), 5.0)}

    def loss(grads, params, clipping):
        # λ traced: a concrete λ of 0 is refused when agc is built.
        updates, _ = agc(clipping, eps).update(grads, optax.EmptyState(), params)
        return jnp.sum(updates["w"] ** 2) + jnp.sum(updates["w"])

    clipping = np.float32(clipping)
    update = jax.jit(lambda g, p, c: agc(c, eps).update(g, optax.EmptyState(), p)[0])
    updates = update(grads, params, clipping)
    np.testing.assert_array_equal(np.asarray(updates["w"][:, 0]), 0.0)
    d_grads, d_params = jax.jit(jax.grad(loss, argnums=(0, 1)))(grads, params, clipping)
    for leaf in jax.tree.leaves((d_grads, d_params)):
        assert np.isfinite(np.asarray(leaf)).all()
