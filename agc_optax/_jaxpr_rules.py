"""Per-primitive rules: where a parameter's axes go through one jaxpr equation.

The states are those of :mod:`agc_optax._jaxpr_state`. A lineage survives
casts, elementwise arithmetic between parameters and constants (weight
standardisation, gains), broadcasts, transposes, reshapes, reductions and
slices. It ends where the parameter meets the data: at a contraction or a
lookup (:mod:`agc_optax._jaxpr_contract`), or at any other operation with an
activation, noted as a read without contraction. Axes picked by a single
index (a layer of a stacked parameter) are noted as layer axes; the walker in
:mod:`agc_optax._jaxpr_walk` adds the scanned-over ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agc_optax import _jaxpr_contract
from agc_optax._jaxpr_state import (
    DATA,
    NO_AXES,
    AxisMap,
    Lineage,
    Recorder,
    Selected,
    State,
    Weighted,
    map_axes,
    mix,
    read_by,
    shape_of,
)


def _reshape_map(in_shape: Sequence[int], out_shape: Sequence[int], m: AxisMap) -> AxisMap:
    """Maps axes through a reshape by grouping axes whose sizes multiply to the same."""
    ins = [a for a, n in enumerate(in_shape) if n != 1]
    outs = [a for a, n in enumerate(out_shape) if n != 1]
    out: list[frozenset[int]] = [NO_AXES] * len(out_shape)
    if 0 in in_shape:
        return tuple(frozenset().union(*m) if n != 1 else NO_AXES for n in out_shape)
    i = j = 0
    while i < len(ins) and j < len(outs):
        group_in, group_out = [ins[i]], [outs[j]]
        size_in, size_out = in_shape[ins[i]], out_shape[outs[j]]
        i, j = i + 1, j + 1
        while size_in != size_out:
            if size_in < size_out:
                group_in.append(ins[i])
                size_in, i = size_in * in_shape[ins[i]], i + 1
            else:
                group_out.append(outs[j])
                size_out, j = size_out * out_shape[outs[j]], j + 1
        source = frozenset().union(*(m[a] for a in group_in))
        for axis in group_out:
            out[axis] = source
    return tuple(out)


def _squeeze_like(rec: Recorder, eqn: Any, lineage: Lineage, where: str) -> Lineage:
    """Squeeze and reshape (also one that transposes first, as vmap writes).

    Dropped size-1 axes of larger parameter axes are picks.
    """
    name, in_shape = eqn.primitive.name, shape_of(eqn.invars[0])
    out_shape = shape_of(eqn.outvars[0])
    if name == "squeeze":
        dropped = tuple(a % len(in_shape) for a in eqn.params["dimensions"])
        out = map_axes(lineage, lambda m: tuple(x for a, x in enumerate(m) if a not in dropped))
        return _jaxpr_contract.picked(rec, eqn, lineage, dropped, where, out)
    order = eqn.params.get("dimensions") or range(len(in_shape))
    ones = [a for a in order if in_shape[a] == 1]
    in_shape = tuple(in_shape[a] for a in order)  # A reshape may transpose first (vmap's).
    out = map_axes(lineage, lambda m: _reshape_map(in_shape, out_shape, tuple(m[a] for a in order)))
    return _jaxpr_contract.picked(rec, eqn, lineage, ones, where, out) if ones else out


def _one_operand(rec: Recorder, eqn: Any, lineage: Lineage, where: str) -> Lineage | None:
    """Axis maps for single-operand shape operations; None if ``eqn`` is not one."""
    name, p = eqn.primitive.name, eqn.params
    if name == "transpose":
        return map_axes(lineage, lambda m: tuple(m[a] for a in p["permutation"]))
    if name == "broadcast_in_dim":
        rank = len(p["shape"])

        def broadcast(m: AxisMap) -> AxisMap:
            out = [NO_AXES] * rank
            for source, target in enumerate(p["broadcast_dimensions"]):
                out[target] = m[source]
            return tuple(out)

        return map_axes(lineage, broadcast)
    if name in ("squeeze", "reshape"):
        return _squeeze_like(rec, eqn, lineage, where)
    if name.startswith(("reduce_", "arg")) and "axes" in p:
        return map_axes(lineage, lambda m: tuple(x for a, x in enumerate(m) if a not in p["axes"]))
    if name in ("slice", "pad", "all_gather"):
        if len(shape_of(eqn.invars[0])) == len(shape_of(eqn.outvars[0])):
            return lineage  # Windows, padding and tiled gathers.
        if name == "all_gather":  # Untiled: a new device axis in front of the shard's.
            at = p["all_gather_dimension"]
            return map_axes(lineage, lambda m: (*m[:at], NO_AXES, *m[at:]))
    return None


_AXIS_PRESERVING = frozenset({"concatenate", "dynamic_update_slice", "split"})


def _elementwise(eqn: Any) -> bool:
    """One output; every operand a scalar or of the output's rank, broadcasting size-1 axes."""
    if len(eqn.outvars) != 1:
        return False
    out_shape = shape_of(eqn.outvars[0])
    return all(
        not shape or (len(shape) == len(out_shape)
                      and all(n in (m, 1) for n, m in zip(shape, out_shape, strict=True)))
        for shape in map(shape_of, eqn.invars)
    )


def _follow(rec: Recorder, eqn: Any, state: State, where: str) -> State | None:
    """The state of a single-operand shape operation's output; None if not one."""
    if isinstance(state, Selected):
        mapped = _one_operand(rec, eqn, state.lineage, where)
        return None if mapped is None else state.remap(mapped)
    return _one_operand(rec, eqn, state, where) if isinstance(state, dict) else None


_CONTRACTIONS = {"dot_general": _jaxpr_contract.dot_general,
                 "conv_general_dilated": _jaxpr_contract.conv,
                 "gather": _jaxpr_contract.gather,
                 "dynamic_slice": _jaxpr_contract.dynamic_slice}


def apply(rec: Recorder, eqn: Any, states: list[State], where: str) -> list[State]:
    """Output states of one equation without sub-jaxprs, recording the reads it makes.

    Args:
        rec: where the parameter reads are recorded.
        eqn: the jaxpr equation.
        states: the states of its operands (at least one follows a parameter).
        where: the equation's location (``scan/jit/dot_general``) for the notes.

    Returns:
        One state per output.
    """
    name, n_out = eqn.primitive.name, len(eqn.outvars)
    rank = len(shape_of(eqn.outvars[0])) if n_out else 0
    contraction = _CONTRACTIONS.get(name)
    if contraction is not None:
        return [contraction(rec, eqn, states, where)]
    if name == "reduce_sum" and isinstance(states[0], Weighted):
        return [_jaxpr_contract.summed(rec, eqn, states[0], where)]
    product = None
    if name == "mul" and _elementwise(eqn):
        product = _jaxpr_contract.weighted(eqn, states, where)
    elif name in ("add", "add_any"):
        product = _jaxpr_contract.added(rec, states)
    if product is not None:
        return [product]
    if n_out == 1:
        mapped = _follow(rec, eqn, states[0], where)
        if mapped is not None:
            return [mix(rec, where, [mapped, *states[1:]], rank)]
    if name in _AXIS_PRESERVING or _elementwise(eqn):
        return [mix(rec, where, states, rank)] * n_out
    if len(states) == n_out and all(
        shape_of(v) == shape_of(o) for v, o in zip(eqn.invars, eqn.outvars, strict=True)
    ):  # device_put, optimization_barrier and other per-operand identities.
        pairs = zip(states, eqn.invars, strict=True)
        return [mix(rec, where, [s], len(shape_of(v))) for s, v in pairs]
    read_by(rec, states, f"not followed through {name}", lost=True)
    return [DATA] * n_out
