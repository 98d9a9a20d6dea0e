"""Per-primitive rules: where a parameter's axes go through one jaxpr equation.

Each jaxpr value has one of three states:

* ``None``: a constant (depends on neither the parameters nor the data);
* :data:`DATA`: depends on the traced function's data arguments (activations);
* a lineage ``{param_index: axis_map}``: computed from parameters (and
  constants) only, where ``axis_map[k]`` is the set of the parameter's axes
  that the value's axis ``k`` comes from.

A lineage survives casts, elementwise arithmetic between parameters and
constants (weight standardisation, gains), broadcasts, transposes, reshapes,
reductions and slices. It ends where the parameter meets the data: at a
contraction (``dot_general``, ``conv_general_dilated``, a gather or dynamic
slice with data indices), which the :class:`Recorder` notes as a use with
fan-in axes, or at any other operation with an activation, noted as a read
without contraction. Axes picked by a single index (a layer of a stacked
parameter) are noted as layer axes; the walker in :mod:`agc_optax._jaxpr_walk`
adds the scanned-over ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

AxisMap = tuple[frozenset[int], ...]
Lineage = dict[int, AxisMap]


class _Data:
    def __repr__(self) -> str:
        return "DATA"


DATA = _Data()
State = None | _Data | Lineage
_NONE: frozenset[int] = frozenset()


@dataclasses.dataclass(frozen=True)
class Use:
    """One read of a parameter.

    Attributes:
        fan_in: the parameter axes the read sums over, or None for a read that
            contracts none of them.
        note: what read it and where (``scan/dot_general sums (1,)``).
        lost: the parameter reached an operation the rules do not follow.
    """

    fan_in: tuple[int, ...] | None
    note: str
    lost: bool = False


@dataclasses.dataclass
class Recorder:
    """Collects, per parameter index, its reads and its layer (stacking) axes."""

    shapes: Sequence[tuple[int, ...]]
    uses: dict[int, dict[Use, None]] = dataclasses.field(default_factory=dict)
    layer_axes: dict[int, dict[int, str]] = dataclasses.field(default_factory=dict)

    def use(self, param: int, use: Use) -> None:
        """Records one read of parameter ``param`` (duplicates are kept once)."""
        self.uses.setdefault(param, {})[use] = None

    def layer(self, param: int, axes: frozenset[int], why: str) -> None:
        """Marks the (non-trivial) ``axes`` of ``param`` as layer axes."""
        for axis in axes:
            if self.shapes[param][axis] > 1:
                self.layer_axes.setdefault(param, {}).setdefault(axis, why)


def lineage_of(states: Sequence[State]) -> list[Lineage]:
    """The states that are lineages (values computed from parameters only)."""
    return [s for s in states if isinstance(s, dict)]


def _union(maps: Sequence[Lineage]) -> Lineage:
    out: Lineage = {}
    for lineage in maps:
        for param, axis_map in lineage.items():
            old = out.get(param)
            out[param] = axis_map if old is None else tuple(
                a | b for a, b in zip(old, axis_map, strict=True))
    return out


def join(a: State, b: State) -> State:
    """The least state covering ``a`` and ``b`` (for loop carries and cond branches)."""
    if a is DATA or b is DATA:
        return DATA
    if a is None or b is None:
        return b if a is None else a
    return _union([a, b])


def _map(lineage: Lineage, fn: Callable[[AxisMap], AxisMap]) -> Lineage:
    return {param: fn(axis_map) for param, axis_map in lineage.items()}


def read_by(rec: Recorder, states: Sequence[State], note: str, lost: bool = False) -> None:
    """Records a read without contraction of every parameter behind ``states``."""
    for lineage in lineage_of(states):
        for param in lineage:
            rec.use(param, Use(None, note, lost))


def mix(rec: Recorder, where: str, states: Sequence[State], rank: int) -> State:
    """Combines operands whose lineages are mapped onto the rank-``rank`` output.

    A lineage of another rank (a scalar operand) contributes no axes. Meeting
    an activation ends every lineage, recorded as a read without contraction.
    """
    if any(s is DATA for s in states):
        read_by(rec, states, f"no contraction ({where.rsplit('/', 1)[-1]} with activations)")
        return DATA
    lineages = [s if len(next(iter(s.values()))) == rank else _map(s, lambda m: (_NONE,) * rank)
                for s in lineage_of(states)]
    return _union(lineages) if lineages else None


def shape_of(var: Any) -> tuple[int, ...]:
    """The shape of a jaxpr variable or literal."""
    return tuple(var.aval.shape)


def _picked(rec: Recorder, lineage: Lineage, axes: Sequence[int], where: str) -> None:
    """Notes the parameter axes behind dropped size-1 value ``axes`` as picked layers."""
    for param, axis_map in lineage.items():
        for axis in axes:
            rec.layer(param, axis_map[axis], f"indexed by {where.rsplit('/', 1)[-1]}")


def _reshape_map(in_shape: Sequence[int], out_shape: Sequence[int], m: AxisMap) -> AxisMap:
    """Maps axes through a reshape by grouping axes whose sizes multiply to the same."""
    ins = [a for a, n in enumerate(in_shape) if n != 1]
    outs = [a for a, n in enumerate(out_shape) if n != 1]
    out: list[frozenset[int]] = [_NONE] * len(out_shape)
    if 0 in in_shape:
        return tuple(frozenset().union(*m) if n != 1 else _NONE for n in out_shape)
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


def _contracted(rec: Recorder, param: int, summed: frozenset[int], where: str,
                what: str = "") -> None:
    """Records a contraction summing ``summed`` axes of ``param`` (none: a plain read)."""
    if summed:
        fan_in = tuple(sorted(summed))
        rec.use(param, Use(fan_in, f"{where} sums {fan_in}{what}"))
    else:
        rec.use(param, Use(None, f"no contraction (output axis of {where})"))


def _dot_general(rec: Recorder, eqn: Any, states: Sequence[State], where: str) -> State:
    """Records the contracting axes of each parameter operand (batch axes never are)."""
    contract_l, contract_r = eqn.params["dimension_numbers"][0]
    for state, contract in ((states[0], contract_l), (states[1], contract_r)):
        for param, axis_map in (state.items() if isinstance(state, dict) else ()):
            _contracted(rec, param, frozenset().union(*(axis_map[a] for a in contract)), where)
    return DATA if any(s is not None for s in states) else None


def _conv(rec: Recorder, eqn: Any, states: Sequence[State], where: str) -> State:
    """Records every kernel axis but the output-feature one (any rank, grouping, transpose)."""
    lhs, rhs = states
    out_feature = eqn.params["dimension_numbers"].rhs_spec[0]
    for param, axis_map in (rhs.items() if isinstance(rhs, dict) else ()):
        kept = [m for a, m in enumerate(axis_map) if a != out_feature]
        summed = frozenset().union(*kept) - axis_map[out_feature]
        _contracted(rec, param, summed, where, " (all but output)")
    read_by(rec, [lhs], f"no contraction (input of {where})")
    return DATA if any(s is not None for s in states) else None


def _lookup(rec: Recorder, lineage: Lineage, looked_up: Sequence[int], where: str,
            batch: Sequence[int] = ()) -> None:
    """Records an embedding lookup: every axis but the looked-up (and batch) ones is fan-in."""
    for param, axis_map in lineage.items():
        rows = frozenset().union(*(axis_map[a] for a in (*looked_up, *batch)))
        fan_in = tuple(sorted(frozenset().union(*axis_map) - rows))
        rec.use(param, Use(fan_in, f"{where} lookup sums {fan_in} (one unit per row)"))


def _gather(rec: Recorder, eqn: Any, states: Sequence[State], where: str) -> State:
    """A gather with data indices is a lookup; with constant indices, a pick or a slice."""
    operand, indices = states
    if not isinstance(operand, dict):
        return DATA if indices is DATA or operand is DATA else None
    dn = eqn.params["dimension_numbers"]
    if indices is DATA:  # Axes indexed with a window narrower than the axis are looked up.
        in_shape, sizes = shape_of(eqn.invars[0]), eqn.params["slice_sizes"]
        looked_up = [a for a in dn.start_index_map if sizes[a] < in_shape[a]]
        _lookup(rec, operand, looked_up, where, dn.operand_batching_dims)
        return DATA
    out_rank = len(shape_of(eqn.outvars[0]))
    sliced = [a for a in range(len(shape_of(eqn.invars[0])))
              if a not in dn.collapsed_slice_dims and a not in dn.operand_batching_dims]
    batch_out = [a for a in range(out_rank) if a not in dn.offset_dims]
    if len(shape_of(eqn.invars[1])) == 1:  # One index vector: a single pick.
        _picked(rec, operand, dn.collapsed_slice_dims, where)

    def gather_map(m: AxisMap) -> AxisMap:
        out = [_NONE] * out_rank
        for out_axis, in_axis in zip(dn.offset_dims, sliced, strict=True):
            out[out_axis] = m[in_axis]
        rows = frozenset().union(*(m[a] for a in dn.collapsed_slice_dims))
        # Output batch axes follow the indices' axes (the index vector is the last).
        for index_axis, out_axis in enumerate(batch_out):
            if index_axis in dn.start_indices_batching_dims:
                j = dn.start_indices_batching_dims.index(index_axis)
                out[out_axis] = m[dn.operand_batching_dims[j]]
            else:
                out[out_axis] = rows
        return tuple(out)

    return _map(operand, gather_map)


def _dynamic_slice(rec: Recorder, eqn: Any, states: Sequence[State], where: str) -> State:
    """A size-1 slice at a data index is a lookup (``table[token]``); others are windows."""
    operand, indices = states[0], states[1:]
    if not isinstance(operand, dict):
        return DATA if any(s is DATA for s in states) else None
    sizes = eqn.params["slice_sizes"]
    looked_up = [a for a, (s, n) in enumerate(zip(indices, sizes, strict=True))
                 if s is DATA and n == 1]
    if looked_up:
        _lookup(rec, operand, looked_up, where)
        return DATA
    return operand


def _squeeze_like(rec: Recorder, eqn: Any, lineage: Lineage, where: str) -> Lineage | None:
    """Squeeze and reshape; dropped size-1 axes of larger parameter axes are picks."""
    name, in_shape = eqn.primitive.name, shape_of(eqn.invars[0])
    out_shape = shape_of(eqn.outvars[0])
    if name == "squeeze":
        dropped = tuple(a % len(in_shape) for a in eqn.params["dimensions"])
        _picked(rec, lineage, dropped, where)
        return _map(lineage, lambda m: tuple(x for a, x in enumerate(m) if a not in dropped))
    if eqn.params.get("dimensions") is not None:
        return None  # A reshape that also transposes: not followed.
    _picked(rec, lineage, [a for a, n in enumerate(in_shape) if n == 1], where)
    return _map(lineage, lambda m: _reshape_map(in_shape, out_shape, m))


def _one_operand(rec: Recorder, eqn: Any, lineage: Lineage, where: str) -> Lineage | None:
    """Axis maps for single-operand shape operations; None if ``eqn`` is not one."""
    name, p = eqn.primitive.name, eqn.params
    if name == "transpose":
        return _map(lineage, lambda m: tuple(m[a] for a in p["permutation"]))
    if name == "broadcast_in_dim":
        rank = len(p["shape"])

        def broadcast(m: AxisMap) -> AxisMap:
            out = [_NONE] * rank
            for source, target in enumerate(p["broadcast_dimensions"]):
                out[target] = m[source]
            return tuple(out)

        return _map(lineage, broadcast)
    if name in ("squeeze", "reshape"):
        return _squeeze_like(rec, eqn, lineage, where)
    if name.startswith(("reduce_", "arg")) and "axes" in p:
        return _map(lineage, lambda m: tuple(x for a, x in enumerate(m) if a not in p["axes"]))
    if name in ("slice", "pad", "all_gather"):
        rank_kept = len(shape_of(eqn.invars[0])) == len(shape_of(eqn.outvars[0]))
        return lineage if rank_kept else None  # Windows, padding and tiled gathers.
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


def apply(rec: Recorder, eqn: Any, states: list[State], where: str) -> list[State]:
    """Output states of one equation without sub-jaxprs, recording the reads it makes.

    Args:
        rec: where the parameter reads are recorded.
        eqn: the jaxpr equation.
        states: the states of its operands (at least one is a lineage).
        where: the equation's location (``scan/jit/dot_general``) for the notes.

    Returns:
        One state per output.
    """
    name, n_out = eqn.primitive.name, len(eqn.outvars)
    rank = len(shape_of(eqn.outvars[0])) if n_out else 0
    contraction = {"dot_general": _dot_general, "conv_general_dilated": _conv,
                   "gather": _gather, "dynamic_slice": _dynamic_slice}.get(name)
    if contraction is not None:
        return [contraction(rec, eqn, states, where)]
    if isinstance(states[0], dict) and n_out == 1:
        mapped = _one_operand(rec, eqn, states[0], where)
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
