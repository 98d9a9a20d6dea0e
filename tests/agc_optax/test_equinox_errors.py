"""An Equinox module handed over whole (its non-array fields included) gets our message.

Its Python int/float fields (a patch size, a dropout rate) are pytree leaves: traced
as parameters they fail inside JAX, and eqx.filter_grad leaves them out of the
gradients. Both places name the field and eqx.partition/eqx.filter.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

from agc_optax import agc, infer_unit_axes


class Patches(eqx.Module):
    kernel: jax.Array
    patch_size: int
    dropout: float

    def __init__(self, key):
        self.kernel = jax.random.normal(key, (4 * 4, 8))
        self.patch_size = 4
        self.dropout = 0.1

    def __call__(self, image):
        n = image.shape[0] // self.patch_size
        patches = image.reshape(n, self.patch_size, n, self.patch_size).transpose(0, 2, 1, 3)
        return patches.reshape(n * n, -1) @ self.kernel * (1 - self.dropout)


IMAGE = jnp.zeros((8, 8))


def test_infer_unit_axes_names_the_scalar_field():
    model = Patches(jax.random.key(0))
    message = r"leaf 'patch_size' is a Python int, not an array \(a static field.*eqx.partition"
    with pytest.raises(TypeError, match=message):
        infer_unit_axes(lambda m, x: m(x), model, IMAGE)
    arrays, static = eqx.partition(model, eqx.is_array)
    rule = infer_unit_axes(lambda p, x: eqx.combine(p, static)(x), arrays, IMAGE)
    assert rule.entries["kernel"].fan_in == (0,)


def test_agc_update_with_unfiltered_model_names_fields_and_eqx_filter():
    model = Patches(jax.random.key(0))
    grads = eqx.filter_grad(lambda m: m(IMAGE).sum())(model)
    tx = agc(0.01)
    with pytest.raises(ValueError, match=r"only in the params: \['patch_size', 'dropout'\].*"
                                         r"eqx.filter\(model, eqx.is_inexact_array\)"):
        tx.update(grads, tx.init(eqx.filter(model, eqx.is_inexact_array)), model)
    params = eqx.filter(model, eqx.is_inexact_array)
    clipped, _ = tx.update(grads, tx.init(params), params)
    assert clipped.kernel.shape == (16, 8)
