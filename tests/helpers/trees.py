"""Parameter and gradient arrays that exercise both branches of AGC."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def mixed_scale_pair(
    shape: Sequence[int],
    fan_in_axes: Sequence[int],
    seed: int = 0,
    dtype: npt.DTypeLike = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Params and gradients whose per-unit gradient scale spans four decades.

    With clipping around 0.01 to 0.1 roughly half of the units get clipped, so both
    branches of AGC are exercised on every leaf.

    Args:
      shape: the shape of both arrays.
      fan_in_axes: the axes summed within a unit; every unit draws one gradient scale.
      seed: seed of NumPy's default generator.
      dtype: the dtype of both arrays.

    Returns:
      ``(param, grad)``: params ~ N(0, 0.1²); each unit's gradient ~ N(0, 1) times
      10^u with u ~ U(-5, -1).
    """
    rng = np.random.default_rng(seed)
    param = rng.normal(0.0, 0.1, size=shape)
    grad = rng.normal(0.0, 1.0, size=shape)
    unit_shape = [1 if a in fan_in_axes else n for a, n in enumerate(shape)]
    grad = grad * 10.0 ** rng.uniform(-5, -1, size=unit_shape)
    return param.astype(dtype), grad.astype(dtype)
