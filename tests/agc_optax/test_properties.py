"""Invariants of AGC on random shapes, fan-in axes and scales (hypothesis)."""

from __future__ import annotations

import jax
import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from agc_optax import agc


@st.composite
def clipping_problems(draw):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=5, min_side=1, max_side=5))
    fan_in = tuple(sorted(draw(st.sets(st.integers(0, max(len(shape) - 1, 0)),
                                       max_size=len(shape)))))
    elements = st.floats(-1e3, 1e3, allow_nan=False, width=32)
    param = draw(hnp.arrays(np.float32, shape, elements=elements))
    grad = draw(hnp.arrays(np.float32, shape, elements=elements))
    grad_scale = np.float32(10.0 ** draw(st.floats(-6, 2)))
    param_scale = np.float32(10.0 ** draw(st.floats(-6, 1)))
    clipping = draw(st.sampled_from([1e-3, 0.01, 0.05, 0.16, 1.0]))
    eps = draw(st.sampled_from([1e-6, 1e-3, 1e-1]))
    return flush_tiny(param * param_scale), flush_tiny(grad * grad_scale), fan_in, clipping, eps


def flush_tiny(x):
    """Zeroes elements below 1e-15, whose float32 squares would underflow.

    XLA flushes subnormals to zero, and squares of values below ~1e-19 underflow
    float32; the float64 reference would then see norms that float32 cannot.
    """
    return np.where(np.abs(x) < 1e-15, np.float32(0), x).astype(np.float32)


def test_zero_eps_zeroes_gradients_of_zero_params_without_nan():
    out = agc(0.01, 0.0).update([np.ones((3, 2), np.float32)], None, [np.zeros((3, 2))])[0][0]
    np.testing.assert_array_equal(np.asarray(out), 0.0)


def unit_view(x, fan_in):
    """Moves the fan-in axes last and flattens them: one row per unit."""
    unit_axes = [a for a in range(x.ndim) if a not in fan_in]
    moved = np.transpose(x, unit_axes + list(fan_in))
    n_units = int(np.prod([x.shape[a] for a in unit_axes]))
    return moved.reshape(n_units, -1)


@settings(max_examples=150, deadline=None)
@given(clipping_problems())
def test_agc_invariants(problem):
    param, grad, fan_in, clipping, eps = problem
    transform = agc(clipping, eps, unit_axes=lambda path, x: fan_in)
    out = np.asarray(transform.update([grad], None, [param])[0][0])
    assert out.dtype == grad.dtype
    assert np.isfinite(out).all()
    g_units, o_units = unit_view(grad, fan_in).astype(np.float64), unit_view(out, fan_in)
    p_units = unit_view(param, fan_in).astype(np.float64)
    limit = clipping * np.maximum(np.linalg.norm(p_units, axis=1), eps)
    g_norm = np.linalg.norm(g_units, axis=1)
    o_norm = np.linalg.norm(o_units.astype(np.float64), axis=1)
    # float32 rounding: AGC's two norms of a unit of n elements, each within n·2⁻²⁴.
    rtol = 1e-5 + 2 * g_units.shape[1] * 2.0**-24
    for i in range(len(g_units)):
        # Every unit ends within the bound.
        assert o_norm[i] <= limit[i] * (1 + rtol) + 1e-30 or np.array_equal(o_units[i],
                                                                             g_units[i])
        if np.array_equal(o_units[i], unit_view(grad, fan_in)[i]):
            # Unchanged units are exactly those within the bound.
            assert g_norm[i] <= limit[i] * (1 + rtol)
        else:
            # Clipped units: were over the bound, keep their direction, end on the bound.
            assert g_norm[i] >= limit[i] * (1 - rtol)
            np.testing.assert_allclose(o_norm[i], limit[i], rtol=rtol)
            cosine = o_units[i].astype(np.float64) @ g_units[i] / (o_norm[i] * g_norm[i])
            np.testing.assert_allclose(cosine, 1.0, rtol=rtol)


def one_unit_of_405_ones():
    """A 405-element unit of ones against a one-hot parameter: its float32 sums of squares
    round differently once clipped (found by hypothesis; relative change 3.1e-6)."""
    param = np.zeros((3, 3, 3, 3, 5), np.float32)
    param[0, 0, 0, 0, 0] = 1
    return param, np.ones_like(param), (0, 1, 2, 3, 4), 1e-3, 1e-6


@settings(max_examples=40, deadline=None)
@given(clipping_problems())
@example(one_unit_of_405_ones())
def test_agc_is_idempotent(problem):
    """Clipping an already clipped gradient changes nothing beyond rounding."""
    param, grad, fan_in, clipping, eps = problem
    update = jax.jit(agc(clipping, eps, unit_axes=lambda path, x: fan_in).update)
    once = update([grad], None, [param])[0]
    twice = update(once, None, [param])[0]
    # The second clip rescales a clipped unit by the rounding of two float32 norms of it,
    # each within n·2⁻²⁴ of exact for a sum of n squares.
    unit_size = int(np.prod([grad.shape[axis] for axis in fan_in]))
    rtol = 2e-6 + unit_size * 2.0**-24
    np.testing.assert_allclose(np.asarray(twice[0]), np.asarray(once[0]), rtol=rtol, atol=0)
