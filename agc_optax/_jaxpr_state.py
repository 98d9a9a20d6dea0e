"""What the jaxpr walk knows about each value, and where it records parameter reads.

Each jaxpr value has one of four states:

* ``None``: a constant (depends on neither the parameters nor the data);
* :data:`DATA`: depends on the traced function's data arguments (activations);
* a lineage ``{param_index: axis_map}``: computed from parameters and
  constants only, where ``axis_map[k]`` is the set of the parameter's axes
  that the value's axis ``k`` comes from;
* a :class:`Selected` lineage: slices of parameters picked by data indices
  (``w[ids]``). Contracted with data, it is a selection (the picked axes are
  not fan-in, like a stacked-layer axis); meeting the data any other way, it
  was an embedding lookup (one unit per row);
* a :class:`Weighted` lineage: activations times parameters. Summed next
  (``(x[:, :, None] * w).sum(1)``), it was a contraction; otherwise a read
  without one (a norm's scale).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

AxisMap = tuple[frozenset[int], ...]
Pick = tuple[int, frozenset[int], int]  # (parameter, its axes, id of the picking equation)


class Lineage(dict[int, AxisMap]):
    """``{param_index: axis_map}``, and the constant-index picks made on the way.

    Attributes:
        picks: ``(param, axes, pick id)`` for every slice picked by a constant
            index (``w[h]``); contractions through different picks of the same
            axes that are added together sum over those axes.
    """

    __slots__ = ("picks",)

    def __init__(self, items: Any = (), picks: frozenset[Pick] = frozenset()):
        super().__init__(items)
        self.picks = picks


def picks_of(lineage: Mapping[int, AxisMap]) -> frozenset[Pick]:
    """The picks of a lineage (none for a plain dict)."""
    return getattr(lineage, "picks", frozenset())


class _Data:
    def __repr__(self) -> str:
        return "DATA"


DATA = _Data()
NO_AXES: frozenset[int] = frozenset()


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


@dataclasses.dataclass(frozen=True, eq=False)
class Selected:
    """Parameter slices picked by data indices, not yet met by the data.

    Attributes:
        lineage: the axis maps of the picked value.
        rows: per parameter, its axes the data indices pick.
        lookups: per parameter, the use to record if the value turns out to be
            an embedding lookup (it meets the data other than by a contraction).
    """

    lineage: Lineage
    rows: Mapping[int, frozenset[int]]
    lookups: Mapping[int, Use]

    def remap(self, lineage: Lineage) -> Selected:
        """The same selection with its value's axes mapped anew."""
        return Selected(lineage, self.rows, self.lookups)


@dataclasses.dataclass(frozen=True, eq=False)
class Weighted:
    """Activations times parameters, elementwise (``x * w``): a contraction if summed next.

    Attributes:
        lineage: the parameters' axes behind the product's axes.
        note: the read to record if the product is not summed next.
    """

    lineage: Lineage
    note: str


@dataclasses.dataclass(frozen=True, eq=False)
class Partial:
    """A contraction's output through constant-index picks (``a[:, h] @ w[h]``).

    Attributes:
        reads: ``(param, summed axes, where, what)`` of the contractions, recorded
            when the value meets anything but another such value or a constant.
        picks: the picks the parameters went through.
        summed: per parameter, picked axes already summed over slices.
    """

    reads: tuple[tuple[int, frozenset[int], str, str], ...]
    picks: frozenset[Pick]
    summed: Mapping[int, frozenset[int]] = dataclasses.field(default_factory=dict)


State = None | _Data | Lineage | Selected | Weighted | Partial


@dataclasses.dataclass
class Recorder:
    """Collects, per parameter index, its reads and its layer (stacking) axes.

    Attributes:
        shapes: the parameters' shapes.
        uses: per parameter, its reads (an ordered set).
        layer_axes: per parameter, its axes that index layers, with the reason.
        muted: while positive, nothing is recorded (JAX's transpose of the
            forward pass inside it: backward-pass reads are not uses).
    """

    shapes: Sequence[tuple[int, ...]]
    uses: dict[int, dict[Use, None]] = dataclasses.field(default_factory=dict)
    layer_axes: dict[int, dict[int, str]] = dataclasses.field(default_factory=dict)
    muted: int = 0

    def use(self, param: int, use: Use) -> None:
        """Records one read of parameter ``param`` (duplicates are kept once)."""
        if not self.muted:
            self.uses.setdefault(param, {})[use] = None

    def unlayer(self, param: int, axes: frozenset[int]) -> None:
        """Takes back layer marks of ``axes`` of ``param`` (they were summed over)."""
        if not self.muted:
            for axis in axes:
                self.layer_axes.get(param, {}).pop(axis, None)

    def layer(self, param: int, axes: frozenset[int], why: str) -> None:
        """Marks the (non-trivial) ``axes`` of ``param`` as layer axes."""
        if self.muted:
            return
        for axis in axes:
            if self.shapes[param][axis] > 1:
                self.layer_axes.setdefault(param, {}).setdefault(axis, why)


def lineage_of(states: Sequence[State]) -> list[Lineage]:
    """The states that are plain lineages (values computed from parameters only)."""
    return [s for s in states if isinstance(s, dict)]


def carries_params(states: Sequence[State]) -> bool:
    """Whether any of ``states`` follows parameters (a lineage, selection or product)."""
    return any(isinstance(s, dict | Selected | Weighted | Partial) for s in states)


def union(maps: Sequence[Lineage]) -> Lineage:
    """One lineage holding every parameter of ``maps``, axis sets joined."""
    if len(maps) == 1:
        return maps[0]  # Lineages are never changed in place.
    picks = [p for p in map(picks_of, maps) if p]
    out = Lineage(picks=frozenset().union(*picks) if picks else frozenset())
    for lineage in maps:
        for param, axis_map in lineage.items():
            old = out.get(param)
            out[param] = axis_map if old is None else tuple(
                a | b for a, b in zip(old, axis_map, strict=True))
    return out


def join(a: State, b: State) -> State:
    """The least state covering ``a`` and ``b`` (loop carries, cond branches; never selections)."""
    if a is DATA or b is DATA:
        return DATA
    if a is None or b is None:
        return b if a is None else a
    return union([a, b])


def map_axes(lineage: Lineage, fn: Callable[[AxisMap], AxisMap]) -> Lineage:
    """Applies ``fn`` to every parameter's axis map."""
    return Lineage({param: fn(axis_map) for param, axis_map in lineage.items()},
                   picks_of(lineage))


def contraction(summed: frozenset[int], where: str, what: str = "") -> Use:
    """The use of a contraction summing ``summed`` axes of a parameter (none: a plain read)."""
    if summed:
        fan_in = tuple(sorted(summed))
        return Use(fan_in, f"{where} sums {fan_in}{what}")
    return Use(None, f"no contraction (output axis of {where})")


def settle(rec: Recorder, states: Sequence[State]) -> list[State]:
    """Records every selection and product in ``states`` as the read it turned out to be.

    A selection was a lookup; a product of activations and parameters that is
    not summed was a read without contraction.

    Returns:
        ``states`` with each of them replaced by :data:`DATA`.
    """
    out: list[State] = []
    for state in states:
        if isinstance(state, Selected):
            for param, use in state.lookups.items():
                rec.use(param, use)
            state = DATA
        elif isinstance(state, Weighted):
            for param in state.lineage:
                rec.use(param, Use(None, state.note))
            state = DATA
        elif isinstance(state, Partial):
            for param, summed, where, what in state.reads:
                rec.use(param, contraction(summed, where, what))
            state = DATA
        out.append(state)
    return out


def read_by(rec: Recorder, states: Sequence[State], note: str, lost: bool = False) -> None:
    """Records a read without contraction of every parameter behind ``states``."""
    for lineage in lineage_of(settle(rec, states)):
        for param in lineage:
            rec.use(param, Use(None, note, lost))


def shape_of(var: Any) -> tuple[int, ...]:
    """The shape of a jaxpr variable or literal."""
    return tuple(var.aval.shape)


def mix(rec: Recorder, where: str, states: Sequence[State], rank: int) -> State:
    """Combines operands whose lineages are mapped onto the rank-``rank`` output.

    A lineage of another rank (a scalar operand) contributes no axes. Meeting
    an activation (or a selection meeting anything but constants) ends every
    lineage, recorded as a read without contraction.
    """
    selected = [s for s in states if isinstance(s, Selected)]
    if len(selected) == 1 and all(s is None or s is selected[0] for s in states):
        return selected[0]  # A selection scaled or cast by constants stays one.
    if any(s is DATA or isinstance(s, Weighted | Partial) for s in states) or selected:
        read_by(rec, states, f"no contraction ({where.rsplit('/', 1)[-1]} with activations)")
        return DATA
    lineages = [
        s if len(next(iter(s.values()))) == rank else map_axes(s, lambda m: (NO_AXES,) * rank)
        for s in lineage_of(states)
    ]
    return union(lineages) if lineages else None
