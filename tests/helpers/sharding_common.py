"""Shared pieces of the multi-device checks: kernels, data, a float64 AGC, HLO checks.

Imported by the check modules that ``tests/agc_optax/test_sharding.py`` runs in a child
process with 8 simulated CPU devices; nothing here creates devices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tools import hlo_collectives

CLIPPING = 0.01
EPS = 1e-3
# Relative error allowed between a sharded and the unsharded float32 result.
SHARDED_RTOL = 1e-6

# Kernels in Flax layout with their fan-in axes. Attention kernels as
# flax.nnx.MultiHeadAttention stores them: query/key/value (embed, heads,
# head_dim) reduce only the embedding axis; the output (heads, head_dim, embed)
# reduces heads and head_dim.
KERNELS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "dense": ((64, 32), (0,)),
    "conv": ((3, 3, 16, 32), (0, 1, 2)),
    "attn_qkv": ((32, 8, 4), (0,)),
    "attn_out": ((8, 4, 32), (0, 1)),
}

MESH_1D = ((8,), ("x",))
MESH_2D = ((4, 2), ("data", "model"))

# Per kernel: which mesh and PartitionSpec entries give each layout.
#   fan_in: the fan-in axes split over all 8 devices (FSDP-style);
#   unit:   the unit (output) axis split over all 8 devices (tensor parallel);
#   both:   a 2-D mesh splitting fan-in over one mesh axis and units over the other;
#   fan_in_2d: the fan-in split over both axes of the 2-D mesh at once.
LAYOUTS: dict[str, dict[str, tuple[tuple[tuple[int, ...], tuple[str, ...]], tuple]]] = {
    "dense": {
        "fan_in": (MESH_1D, ("x", None)),
        "unit": (MESH_1D, (None, "x")),
        "both": (MESH_2D, ("data", "model")),
        "fan_in_2d": (MESH_2D, (("data", "model"), None)),
    },
    "conv": {
        "fan_in": (MESH_1D, (None, None, "x", None)),
        "unit": (MESH_1D, (None, None, None, "x")),
        "both": (MESH_2D, (None, None, "data", "model")),
        "fan_in_2d": (MESH_2D, (None, None, ("data", "model"), None)),
    },
    "attn_qkv": {
        "fan_in": (MESH_1D, ("x", None, None)),
        "unit": (MESH_1D, (None, "x", None)),
        "both": (MESH_2D, ("data", "model", None)),
        "fan_in_2d": (MESH_2D, (("model", "data"), None, None)),
    },
    "attn_out": {
        "fan_in": (MESH_1D, ("x", None, None)),
        "unit": (MESH_1D, (None, None, "x")),
        "both": (MESH_2D, ("model", None, "data")),
        "fan_in_2d": (MESH_2D, ("data", "model", None)),
    },
}


def kernel_and_grad(
    shape: Sequence[int], fan_in: Sequence[int], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A float32 kernel and a gradient of which about half the units get clipped.

    Each unit's gradient norm is its parameter norm times a ratio spread
    log-uniformly over a decade either side of ``CLIPPING``.
    """
    rng = np.random.default_rng(seed)
    param = rng.normal(0.0, 0.05, shape).astype(np.float32)
    unit_shape = [1 if i in fan_in else n for i, n in enumerate(shape)]
    ratio = CLIPPING * 10.0 ** rng.uniform(-1.0, 1.0, unit_shape)
    raw = rng.normal(0.0, 1.0, shape)
    grad = raw / np.sqrt(np.sum(raw**2, axis=tuple(fan_in), keepdims=True))
    grad *= ratio * np.sqrt(
        np.sum(param.astype(np.float64) ** 2, axis=tuple(fan_in), keepdims=True)
    )
    return param, grad.astype(np.float32)


def assert_close_relative(
    actual: np.ndarray, expected: np.ndarray, rtol: float, *, floor_at_max: bool = False
) -> None:
    """Elementwise relative error at most ``rtol``.

    With ``floor_at_max`` the error of each element is taken relative to at
    least ``rtol`` times the array's largest magnitude: for parameters after
    an update, where ``p - lr * u`` can cancel to near zero.
    """
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    atol = rtol * np.max(np.abs(expected)) if floor_at_max else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def local_units(fan_in: Sequence[int], shard_shape: Sequence[int]) -> int:
    """Units one device holds (the size of its per-unit norm array)."""
    return math.prod(n for i, n in enumerate(shard_shape) if i not in fan_in)


def is_overflow_flag(op: hlo_collectives.Collective) -> bool:
    """An all-reduce of scalars only: agc's "did a sum of squares overflow" check.

    The check is the max of each leaf's per-unit sums of squares (a float32
    scalar), or its predicate; a norm array is never a scalar when units are
    whole on every device.
    """
    return op.kind == "all-reduce" and all(
        s.dtype in ("pred", "f32") and s.size == 1 for s in op.operands
    )


def assert_only_norm_reductions(
    hlo_text: str, max_norm_size: int, *, expect_reduction: bool | None = None
) -> list[hlo_collectives.Collective]:
    """Asserts the only collectives are all-reduces of arrays no bigger than a norm array.

    Besides the norms, agc all-reduces one scalar per leaf when units are split
    across devices: the largest sum of squares, whose finiteness picks the
    branch that rescales overflowed units.

    Args:
        hlo_text: compiled HLO.
        max_norm_size: the most elements a per-unit norm array (or a scalar
            statistic) has on one device.
        expect_reduction: if True, at least one all-reduce of norms must exist
            (fan-in split across devices); if False, none may (nothing to
            combine; the overflow predicate is allowed).

    Returns:
        The collectives found.
    """
    ops = hlo_collectives.parse_collectives(hlo_text)
    listing = "\n".join(map(str, ops)) or "(none)"
    moving = [op for op in ops if op.kind != "all-reduce"]
    assert not moving, f"collectives other than all-reduce move tensors:\n{listing}"
    too_big = [op for op in ops if any(s.size > max_norm_size for s in op.operands)]
    assert not too_big, f"all-reduce of arrays above {max_norm_size} elements:\n{listing}"
    unknown = [op for op in ops if not op.operands]
    assert not unknown, f"could not read the operand shapes of:\n{listing}"
    norms = [op for op in ops if not is_overflow_flag(op)]
    if expect_reduction is True:
        assert norms, "the fan-in is split across devices, yet no all-reduce combines the norms"
    if expect_reduction is False:
        assert not norms, f"units are whole on every device, yet norms are reduced:\n{listing}"
    return ops
