"""Shared fixtures and data generators for the agc-optax tests."""

from __future__ import annotations

import numpy as np
import pytest


def mixed_scale_pair(shape, fan_in_axes, seed=0, dtype=np.float32):
    """Params and gradients whose per-unit gradient scale spans four decades.

    With clipping around 0.01 to 0.1 roughly half of the units get clipped, so
    both branches of AGC are exercised on every leaf.
    """
    rng = np.random.default_rng(seed)
    param = rng.normal(0.0, 0.1, size=shape)
    grad = rng.normal(0.0, 1.0, size=shape)
    unit_shape = [1 if a in fan_in_axes else n for a, n in enumerate(shape)]
    grad = grad * 10.0 ** rng.uniform(-5, -1, size=unit_shape)
    return param.astype(dtype), grad.astype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
