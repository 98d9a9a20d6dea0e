"""Where parameters meet the data: contractions, lookups and selections.

A parameter's fan-in are the axes summed where it (or a value computed from
parameters and constants only) meets a value derived from the data:

* ``dot_general`` with an activation: its contracting axes (batch axes never).
  With a constant or another parameter instead, nothing is decided yet: the
  product is followed on, each operand's contracted axes now behind the other
  operand's free axes (a kernel expanded in a fixed basis, ``x @ (a @ b)``);
* ``conv_general_dilated``: every kernel axis but the output-feature one;
* a gather or dynamic slice with data indices picks slices (a
  :class:`~agc_optax._jaxpr_state.Selected`): contracted with data next, the
  picked axes index kernels (mixture-of-experts, per-task weights); met any
  other way, it was an embedding lookup, one unit per looked-up row;
* an elementwise product with activations summed next (``reduce_sum``): the
  summed axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agc_optax._jaxpr_state import (
    DATA,
    NO_AXES,
    AxisMap,
    Lineage,
    Partial,
    Pick,
    Recorder,
    Selected,
    State,
    Use,
    Weighted,
    contraction,
    map_axes,
    picks_of,
    settle,
    shape_of,
    union,
)

_SELECTED = "selected by a data index"
_OVER_SLICES = " (added over slices)"


def _axes_union(sets: Sequence[frozenset[int]]) -> frozenset[int]:
    return frozenset().union(*sets)


class _Reads:
    """The contractions of one equation; those through picks wait in a :class:`Partial`."""

    def __init__(self, rec: Recorder, where: str, what: str = ""):
        self.rec, self.where, self.what = rec, where, what
        self.deferred: list[tuple[int, frozenset[int], str, str]] = []
        self.picks: set[Pick] = set()

    def add(self, lineage: Lineage, param: int, summed: frozenset[int]) -> None:
        picks = {pick for pick in picks_of(lineage) if pick[0] == param}
        if picks and summed and not self.rec.muted:
            self.deferred.append((param, summed, self.where, self.what))
            self.picks |= picks
        else:
            self.rec.use(param, contraction(summed, self.where, self.what))

    def result(self) -> State:
        return Partial(tuple(self.deferred), frozenset(self.picks)) if self.deferred else DATA


def _met(rec: Recorder, states: Sequence[State]) -> list[State]:
    """Settles each selection whose other operand is not data (a lookup), and products."""
    pending = (Weighted, Partial)
    out = settle(rec, [s if isinstance(s, pending) else None for s in states])
    for i, state in enumerate(states):
        if isinstance(state, Selected) and not any(
                s is DATA or isinstance(s, pending) for j, s in enumerate(states) if j != i):
            out[i] = settle(rec, [state])[0]
        elif not isinstance(state, pending):
            out[i] = state
    return out


def _param_side(rec: Recorder, state: State, summed_axes: Sequence[int]) -> Lineage:
    """The lineage of a parameter operand meeting data; a selection's rows become layers."""
    if not isinstance(state, Selected):
        return state if isinstance(state, dict) else {}
    for param, rows in state.rows.items():
        summed = _axes_union([state.lineage[param][a] for a in summed_axes])
        rec.layer(param, rows - summed, _SELECTED)
    return state.lineage


def dot_general(rec: Recorder, eqn: Any, states: Sequence[State], where: str) -> State:
    """Records the contracting axes of parameter operands meeting data, else follows on."""
    (contract_l, contract_r), _ = eqn.params["dimension_numbers"]
    states = _met(rec, states)
    if all(s is not DATA for s in states):
        return _product(eqn, states[0], states[1])
    reads = _Reads(rec, where)
    for state, contract in ((states[0], contract_l), (states[1], contract_r)):
        lineage = _param_side(rec, state, contract)
        for param, axis_map in lineage.items():
            reads.add(lineage, param, _axes_union([axis_map[a] for a in contract]))
    return reads.result()


def added(rec: Recorder, states: Sequence[State]) -> State | None:
    """A sum of contractions through picks (and constants); None if ``states`` are not.

    Contractions through different picks of the same parameter axes, added
    together, sum over those axes too (``sum(a[:, h] @ w[h] for h in ...)``).
    """
    partials = [s for s in states if isinstance(s, Partial)]
    if not partials or any(s is not None and not isinstance(s, Partial) for s in states):
        return None
    picks = frozenset().union(*(p.picks for p in partials))
    summed: dict[int, frozenset[int]] = {}
    for partial in partials:
        for param, axes in partial.summed.items():
            summed[param] = summed.get(param, NO_AXES) | axes
    found: dict[tuple[int, frozenset[int]], set[int]] = {}
    for param, axes, pick in picks:
        found.setdefault((param, axes), set()).add(pick)
    for (param, axes), ids in found.items():
        if len(ids) > 1 or axes <= summed.get(param, NO_AXES):
            summed[param] = summed.get(param, NO_AXES) | axes
    for param, axes in summed.items():
        rec.unlayer(param, axes)
    reads = tuple(
        (param, axes | summed[param], where, _OVER_SLICES) if param in summed
        else (param, axes, where, what)
        for partial in partials for param, axes, where, what in partial.reads)
    return Partial(reads, picks, summed)


def _product(eqn: Any, lhs: State, rhs: State) -> State:
    """The lineage of a contraction among parameters and constants (no data).

    The output's axes are the batch axes, then the left operand's free axes,
    then the right one's. A parameter's contracted axes go behind the other
    operand's free axes of size above 1: every element there sums over all of
    them (a size-1 axis, as in a power iteration's ``u @ w.T``, would later read
    as a picked layer).
    """
    (contract_l, contract_r), (batch_l, batch_r) = eqn.params["dimension_numbers"]
    shape_l, shape_r = shape_of(eqn.invars[0]), shape_of(eqn.invars[1])
    free_l = [a for a in range(len(shape_l)) if a not in contract_l and a not in batch_l]
    free_r = [a for a in range(len(shape_r)) if a not in contract_r and a not in batch_r]

    def side(m: AxisMap, contract: Sequence[int], batch: Sequence[int], free: Sequence[int],
             other_sizes: Sequence[int], first: bool) -> AxisMap:
        own = [m[a] for a in free]
        summed = _axes_union([m[a] for a in contract])
        other = [summed if n > 1 else NO_AXES for n in other_sizes]
        return (*[m[a] for a in batch], *(own + other if first else other + own))

    sizes_l, sizes_r = [shape_l[a] for a in free_l], [shape_r[a] for a in free_r]
    parts = []
    if isinstance(lhs, dict):
        parts.append(map_axes(lhs, lambda m: side(m, contract_l, batch_l, free_l,
                                                  sizes_r, True)))
    if isinstance(rhs, dict):
        parts.append(map_axes(rhs, lambda m: side(m, contract_r, batch_r, free_r,
                                                  sizes_l, False)))
    return union(parts) if parts else None


def conv(rec: Recorder, eqn: Any, states: Sequence[State], where: str) -> State:
    """Records every kernel axis but the output-feature one (any rank, grouping, transpose)."""
    lhs, rhs = _met(rec, states)
    out_feature = eqn.params["dimension_numbers"].rhs_spec[0]
    kept = [a for a in range(len(shape_of(eqn.invars[1]))) if a != out_feature]
    reads = _Reads(rec, where, " (all but output)")
    lineage = _param_side(rec, rhs, kept)
    for param, axis_map in lineage.items():
        reads.add(lineage, param, _axes_union([axis_map[a] for a in kept]) - axis_map[out_feature])
    if isinstance(lhs, dict):
        for param in lhs:
            rec.use(param, Use(None, f"no contraction (input of {where})"))
    return reads.result()


def weighted(eqn: Any, states: Sequence[State], where: str) -> State | None:
    """``x * w`` (a ``mul``): activations times parameters, kept in case a sum follows.

    Returns:
        A :class:`Weighted` state, or None if ``states`` are not one activation
        and one parameter lineage of the output's rank.
    """
    lineages = [s for s in states if isinstance(s, dict)]
    if len(lineages) != 1 or not any(s is DATA for s in states):
        return None
    rank = len(shape_of(eqn.outvars[0]))
    lineage = lineages[0]
    if len(next(iter(lineage.values()))) != rank:
        return None  # A scalar parameter: no axis to sum.
    return Weighted(lineage, f"no contraction ({where.rsplit('/', 1)[-1]} with activations)")


def summed(rec: Recorder, eqn: Any, state: Weighted, where: str) -> State:
    """``reduce_sum`` of activations times parameters: a contraction over the summed axes."""
    for param, axis_map in state.lineage.items():
        axes = _axes_union([axis_map[a] for a in eqn.params["axes"]])
        rec.use(param, contraction(axes, where, " (of a product with activations)"))
    return DATA


def _lookup_use(axis_map: AxisMap, rows: frozenset[int], where: str) -> Use:
    """The use of a looked-up parameter: the axes of a row are its fan-in."""
    fan_in = tuple(sorted(_axes_union(axis_map) - rows))
    if not fan_in:
        return Use(None, f"{where} picks single elements by data indices: cannot infer, "
                   "override", lost=True)
    return Use(fan_in, f"{where} lookup sums {fan_in} (one unit per row)")


def _selected(lineage: Lineage, operand: Lineage, rows: dict[int, frozenset[int]],
              kept: dict[int, frozenset[int]], where: str) -> Selected:
    """A selection of ``operand``'s ``rows``; ``kept`` axes are never a row's fan-in."""
    lookups = {param: _lookup_use(m, rows[param] | kept[param], where)
               for param, m in operand.items()}
    return Selected(lineage, rows, lookups)


def gather(rec: Recorder, eqn: Any, states: Sequence[State], where: str) -> State:
    """A gather with data indices selects slices; with constant ones, picks or slices."""
    operand, indices = settle(rec, states)
    if not isinstance(operand, dict):
        return DATA if DATA in (indices, operand) else None
    dn = eqn.params["dimension_numbers"]
    in_shape, out_rank = shape_of(eqn.invars[0]), len(shape_of(eqn.outvars[0]))
    sliced = [a for a in range(len(in_shape))
              if a not in dn.collapsed_slice_dims and a not in dn.operand_batching_dims]
    batch_out = [a for a in range(out_rank) if a not in dn.offset_dims]

    def gather_map(m: AxisMap) -> AxisMap:
        out = [NO_AXES] * out_rank
        for out_axis, in_axis in zip(dn.offset_dims, sliced, strict=True):
            out[out_axis] = m[in_axis]
        rows = _axes_union([m[a] for a in dn.collapsed_slice_dims])
        # Output batch axes follow the indices' axes (the index vector is the last).
        for index_axis, out_axis in enumerate(batch_out):
            if index_axis in dn.start_indices_batching_dims:
                j = dn.start_indices_batching_dims.index(index_axis)
                out[out_axis] = m[dn.operand_batching_dims[j]]
            else:
                out[out_axis] = rows
        return tuple(out)

    lineage = map_axes(operand, gather_map)
    if indices is DATA:
        # Axes indexed with a window narrower than the axis are picked by the data.
        # Whole axes kept in front of the picked rows, when the rows keep axes of
        # their own behind them (vmap over a stack of tables, ``t[:, ids]``), index
        # tables; batching axes pair tables with index rows.
        sizes = eqn.params["slice_sizes"]
        picked = [a for a in dn.start_index_map if sizes[a] < in_shape[a]]
        first_row, last_row = min(batch_out, default=out_rank), max(batch_out, default=-1)
        tables = [a for o, a in zip(dn.offset_dims, sliced, strict=True)
                  if o < first_row and a not in picked]
        if not any(o > last_row for o in dn.offset_dims):
            tables = []  # A table stored (features, rows): the features are the row.
        rows = {p: _axes_union([m[a] for a in picked]) for p, m in operand.items()}
        kept = {p: _axes_union([m[a] for a in (*tables, *dn.operand_batching_dims)])
                for p, m in operand.items()}
        return _selected(lineage, operand, rows, kept, where)
    if len(shape_of(eqn.invars[1])) == 1:  # One index vector: a single pick.
        return picked(rec, eqn, operand, dn.collapsed_slice_dims, where, lineage)
    return lineage


def picked(rec: Recorder, eqn: Any, lineage: Lineage, axes: Sequence[int], where: str,
           out: Lineage) -> Lineage:
    """Notes the parameter axes behind ``axes`` of ``lineage`` as picked by a constant index.

    They are layer axes (a stacked layer picked), unless contractions through
    different picks are added together later (see :func:`added`).

    Returns:
        ``out`` (the picked value's lineage) with the picks added.
    """
    why = f"indexed by {where.rsplit('/', 1)[-1]}"
    picks = set(picks_of(out))
    for param, axis_map in lineage.items():
        for axis in axes:
            rec.layer(param, axis_map[axis], why)
            if axis_map[axis]:
                picks.add((param, axis_map[axis], id(eqn)))
    return Lineage(out, frozenset(picks))


def dynamic_slice(rec: Recorder, eqn: Any, states: Sequence[State], where: str) -> State:
    """A size-1 slice at a data index selects (``w[task]``); other slices are windows."""
    operand, *indices = settle(rec, states)
    if not isinstance(operand, dict):
        return DATA if any(s is DATA for s in (operand, *indices)) else None
    sizes = eqn.params["slice_sizes"]
    picked = [a for a, (s, n) in enumerate(zip(indices, sizes, strict=True))
              if s is DATA and n == 1]
    if not picked:
        return operand
    rows = {p: _axes_union([m[a] for a in picked]) for p, m in operand.items()}
    # The picked axes keep size 1 here: they map to no parameter axis from now on.
    lineage = map_axes(operand, lambda m: tuple(
        NO_AXES if a in picked else x for a, x in enumerate(m)))
    return _selected(lineage, operand, rows, {p: NO_AXES for p in operand}, where)
