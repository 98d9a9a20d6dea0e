"""AGC over each dtype's whole finite range, against the float64 reference (issue 25, 1-3).

The guarantee tested (and stated in docs/guides/numerics.md): for finite float32,
bfloat16 and float16 gradients and parameters, λ > 0 and ε ≥ 0, a unit within
its bound comes back bit for bit; a clipped unit matches the float64 reference
to float32 rounding in the output dtype, so it is on its bound, keeps its
direction, and is zero only where the reference's elements are below the
output dtype's smallest normal number. Elements below float32's smallest normal
number (1.2e-38) count as zero, as XLA flushes them.
"""

from __future__ import annotations

import jax
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agc_optax import agc
from helpers.reference import reference_agc

F32_TINY = float(np.finfo(np.float32).tiny)
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def finfo(dtype):
    return ml_dtypes.finfo(dtype) if dtype == ml_dtypes.bfloat16 else np.finfo(dtype)


@jax.jit
def clip_traced(grad, param, clipping, eps):
    """AGC with traced λ and ε, so that one compilation serves every draw."""
    return agc(clipping, eps).update([grad], None, [param])[0][0]


def run(grad, param, clipping, eps):
    return np.asarray(clip_traced(grad, param, np.float32(clipping), np.float32(eps)))


def flushed(x):
    """The values AGC computes with: float32 subnormals count as zero."""
    wide = np.asarray(x, np.float64)
    return np.where(np.abs(wide) < F32_TINY, 0.0, wide)


def check_against_reference(grad, param, clipping, eps):
    """Every unit (axis 1) of a (fan_in, units) pair, against the float64 reference."""
    dtype = grad.dtype
    got = run(grad, param, clipping, eps)
    assert got.dtype == dtype
    want, _ = reference_agc(flushed(grad), flushed(param), (0,), clipping, eps)
    g64, p64 = flushed(grad), flushed(param)
    fan_in = grad.shape[0]
    # float32 sums of n squares round within n·2⁻²⁴; the output rounds to its own dtype.
    decision_tol = 4e-6 + 2 * fan_in * 2.0**-24
    out_rtol = decision_tol + float(finfo(dtype).eps)
    out_atol = float(finfo(dtype).smallest_subnormal) if dtype == np.float16 else F32_TINY
    for unit in range(grad.shape[1]):
        bound = clipping * max(np.linalg.norm(p64[:, unit]), eps)
        ratio = np.linalg.norm(g64[:, unit]) / bound if bound > 0 else np.inf
        if np.linalg.norm(g64[:, unit]) == 0:
            ratio = 0.0
        context = f"unit {unit}: ratio {ratio:.3g}, bound {bound:.3g}, {dtype}"
        assert np.isfinite(np.asarray(got[:, unit], np.float64)).all(), context
        if ratio <= 1 - decision_tol:
            # Within the bound: bit for bit, subnormals included.
            assert got[:, unit].tobytes() == grad[:, unit].tobytes(), context
        elif ratio >= 1 + decision_tol:
            np.testing.assert_allclose(
                np.asarray(got[:, unit], np.float64), want[:, unit], rtol=out_rtol,
                atol=out_atol, err_msg=context,
            )
            if np.abs(want[:, unit]).max() > 2 * out_atol / (1 - out_rtol):
                assert np.any(got[:, unit] != 0), context


@st.composite
def ranged_problems(draw):
    """A (fan_in, units) gradient and parameter with magnitudes log-uniform over ``dtype``."""
    dtype = DTYPES[draw(st.sampled_from(sorted(DTYPES)))]
    info = finfo(dtype)
    low, high = np.log2(float(info.smallest_subnormal)), np.log2(float(info.max))
    fan_in = draw(st.sampled_from([1, 3, 16]))
    units = 4

    def magnitudes():
        # One scale per unit, log-uniform over the finite range, or a zero unit.
        exps = st.one_of(st.floats(low, high), st.just(-np.inf))
        return np.exp2(np.array(draw(st.lists(exps, min_size=units, max_size=units))))

    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def leaf(scale):
        # Elements within a unit spread over 2⁻¹² to 1 of the unit's scale, with signs.
        shape = (fan_in, units)
        spread = np.exp2(rng.uniform(-12, 0, shape)) * rng.choice([-1.0, 1.0], shape)
        with np.errstate(over="ignore"):
            values = (spread * scale).astype(dtype)
        return np.where(np.isfinite(values.astype(np.float64)), values, info.max).astype(dtype)

    grad, param = leaf(magnitudes()), leaf(magnitudes())
    clipping = float(10.0 ** draw(st.floats(-4, 0)))
    eps = draw(st.sampled_from([0.0, 1e-3]))
    return grad, param, clipping, eps


@settings(max_examples=300, deadline=None)
@given(ranged_problems())
def test_whole_range_matches_the_float64_reference(problem):
    check_against_reference(*problem)


def gaussian_pair(shape, grad_value, dtype=np.float32, seed=0):
    """Params ~ 0.05 · N(0, 1) and a constant gradient (at most the dtype's largest value)."""
    param = (0.05 * np.random.default_rng(seed).normal(size=shape)).astype(dtype)
    return np.full(shape, min(grad_value, float(finfo(dtype).max)), dtype), param


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("value", [1e15, 1e16, 1e17, 1e18, 1e19])
def test_gradients_of_1e15_to_1e19_are_clipped_not_zeroed(value, dtype):
    """The issue's example: a float32 bound/‖G‖ ratio of squares underflowed to 0."""
    grad, param = gaussian_pair((256, 4), value, DTYPES[dtype])
    got = run(grad, param, 0.01, 1e-3)
    want_norms = 0.01 * np.linalg.norm(np.asarray(param, np.float64), axis=0)
    rtol = 1e-5 if dtype == "float32" else 1e-2
    np.testing.assert_allclose(np.linalg.norm(np.asarray(got, np.float64), axis=0), want_norms,
                               rtol=rtol)
    check_against_reference(grad, param, 0.01, 1e-3)


@pytest.mark.parametrize("value", [1e16, 1e19, 1e30, 3.4e38])
def test_a_zero_skip_gain_gets_lambda_times_eps(value):
    got = run(np.full((1, 1), value, np.float32), np.zeros((1, 1), np.float32), 0.01, 1e-3)
    np.testing.assert_allclose(got, 1e-5, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("value", [8.5e37, 1e38, 2e38, 3.4e38])
def test_gradients_near_the_largest_float_are_clipped_not_nan(value, dtype):
    grad, param = gaussian_pair((64, 3), value, DTYPES[dtype])
    grad[:, 1] = -grad[:, 1]
    grad[::2, 2] = 1.0  # A unit mixing the largest and ordinary values.
    got = run(grad, param, 0.01, 1e-3)
    assert np.isfinite(np.asarray(got, np.float64)).all()
    check_against_reference(grad, param, 0.01, 1e-3)


@pytest.mark.parametrize("value", [1e20, 1e30, 3e38])
def test_parameter_units_whose_squared_norm_overflows_are_still_clipped(value):
    """‖W‖² overflows float32, λ · ‖W‖ does not: a gradient above it must be clipped."""
    param = np.full((16, 2), value, np.float32)
    grad = np.full((16, 2), value * 1e-3, np.float32)  # ‖G‖/‖W‖ = 1e-3 > λ = 1e-4.
    got = run(grad, param, 1e-4, 1e-3)
    np.testing.assert_allclose(got, value * 1e-4, rtol=1e-5)
    check_against_reference(grad, param, 1e-4, 1e-3)


@pytest.mark.parametrize("value", [1e-20, 1e-25, 1e-30, 1e-36])
def test_tiny_units_with_zero_eps_are_clipped(value):
    """With ε = 0 the bound λ · ‖W‖ of a tiny unit is tiny too, yet a normal number."""
    param = np.full((16, 2), value, np.float32)
    grad = np.full((16, 2), value * 10, np.float32)  # ‖G‖/‖W‖ = 10 > λ = 0.5.
    got = run(grad, param, 0.5, 0.0)
    np.testing.assert_allclose(got, value * 0.5, rtol=1e-5)
    check_against_reference(grad, param, 0.5, 0.0)


def test_subnormal_units_pass_bit_for_bit_and_count_as_zero():
    """XLA flushes subnormal inputs: a subnormal unit has norm 0, and passes unchanged."""
    grad = np.full((4, 2), 1e-40, np.float32)
    param = np.full((4, 2), 1e-40, np.float32)
    got = run(grad, param, 0.01, 0.0)
    assert got.tobytes() == grad.tobytes()
    # A subnormal parameter counts as zero: with ε = 0 its bound is 0, the gradient too.
    got = run(np.ones((4, 2), np.float32), param, 0.01, 0.0)
    np.testing.assert_array_equal(got, 0.0)


def test_a_bound_below_the_smallest_normal_may_give_zero():
    """The documented exception: every element of the clipped unit would be subnormal."""
    param = np.full((4, 1), 2e-38, np.float32)  # normal, ‖W‖ = 4e-38
    grad = np.full((4, 1), 1.0, np.float32)
    got = run(grad, param, 0.1, 0.0)  # bound 4e-39: elements 2e-39, subnormal
    assert np.all(np.abs(got) <= F32_TINY)
    check_against_reference(grad, param, 0.1, 0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("scale", [1.0, 1e30])
def test_non_finite_inputs_stay_non_finite_on_the_exact_path_too(bad, scale):
    grad = np.full((8, 3), scale, np.float32)
    grad[2, 1] = bad
    got = run(grad, np.ones((8, 3), np.float32), 0.01, 1e-3)
    assert not np.isfinite(got[:, 1]).all()
    assert np.isfinite(got[:, [0, 2]]).all()
