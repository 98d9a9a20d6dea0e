"""An independent float64 NumPy implementation of AGC, written from the paper's definition.

Brock et al. 2021 (arXiv:2102.06171), section 4.1: for every unit i,
G_i <- λ · max(‖W_i‖, ε) / ‖G_i‖ · G_i  when  ‖G_i‖ / max(‖W_i‖, ε) > λ.

The unit loop is explicit (one slice at a time) so that it shares no code or
vectorisation trick with the library.
"""

from __future__ import annotations

import itertools

import numpy as np


def reference_agc(grad, param, fan_in_axes, clipping, eps=1e-3):
    """Returns (clipped gradient in float64 or complex128, boolean array of clipped units)."""
    grad = np.asarray(grad)
    wide = np.complex128 if np.iscomplexobj(grad) else np.float64
    grad = grad.astype(wide)
    param = np.asarray(param).astype(np.complex128 if np.iscomplexobj(param) else np.float64)
    ndim = grad.ndim
    fan_in_axes = tuple(sorted(a % ndim for a in fan_in_axes)) if ndim else ()
    unit_axes = [a for a in range(ndim) if a not in fan_in_axes]
    out = grad.copy()
    clipped = np.zeros([grad.shape[a] for a in unit_axes], dtype=bool)
    for unit_index in itertools.product(*(range(grad.shape[a]) for a in unit_axes)):
        selector = [slice(None)] * ndim
        for axis, i in zip(unit_axes, unit_index, strict=True):
            selector[axis] = i
        selector = tuple(selector)
        g_unit, w_unit = grad[selector], param[selector]
        g_norm = np.sqrt(np.sum(np.abs(g_unit) ** 2))
        w_norm = max(np.sqrt(np.sum(np.abs(w_unit) ** 2)), eps)
        if g_norm > clipping * w_norm:  # No division: w_norm is 0 where ε = 0.
            out[selector] = clipping * w_norm / g_norm * g_unit
            clipped[unit_index] = True
    return out, clipped
