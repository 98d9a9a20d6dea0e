"""The result of :func:`agc_optax.infer_unit_axes`: a ``unit_axes`` rule and its table."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from agc_optax import _missing_leaf, _paths, _unit_axes

Axes = tuple[int, ...]
FALLBACK = "FALLBACK default rule"


class Entry(NamedTuple):
    """What :func:`agc_optax.infer_unit_axes` decided for one parameter.

    Attributes:
        path: the parameter's path string.
        shape: its shape.
        fan_in: the axes a unit's norm sums over.
        evidence: which read decided it, or why none did.
        used: False if the forward pass never reads the parameter.
        fallback: True if no rule decided it and it keeps
            :func:`agc_optax.default_unit_axes` (its evidence starts with
            ``FALLBACK``).
    """

    path: str
    shape: tuple[int, ...]
    fan_in: Axes
    evidence: str
    used: bool = True
    fallback: bool = False

    @property
    def num_units(self) -> int:
        """Number of units: the product of the sizes of the non-fan-in axes."""
        return math.prod(n for a, n in enumerate(self.shape) if a not in self.fan_in)


class InferredUnitAxes:
    """A ``unit_axes`` callable holding each parameter's fan-in axes read from a jaxpr.

    Pass it as ``agc(unit_axes=...)``. It is called as ``(path, leaf) -> axes``
    with ``path`` a path string (as :func:`agc_optax.path_to_str` prints it) or
    a raw JAX key path. A leaf not in its table (a parameter of another model, or
    of another tree: the whole ``variables`` against ``variables["params"]``)
    raises, naming the table's nearest paths, unless the table was made with
    :meth:`with_fallback`.
    ``print(rule)`` shows the table: path, shape, fan-in axes, number of units
    and the evidence. Built by :func:`agc_optax.infer_unit_axes`.

    Attributes:
        entries: one :class:`Entry` per parameter, keyed by path string.
    """

    def __init__(self, entries: Mapping[str, Entry], fallback: Callable[..., Any] | None = None):
        self.entries = dict(entries)
        self.fallback = fallback

    def with_fallback(
        self, rule: Callable[..., Any] = _unit_axes.default_unit_axes
    ) -> InferredUnitAxes:
        """The same table, giving leaves it does not hold ``rule(path, leaf)`` instead of raising.

        Args:
            rule: the ``(path, leaf) -> axes`` rule for leaves not in the table.

        Returns:
            A new :class:`InferredUnitAxes`.
        """
        return InferredUnitAxes(self.entries, fallback=rule)

    def __call__(self, path: Any, leaf: Any = _unit_axes._MISSING) -> Axes:
        """Returns the fan-in axes of the parameter at ``path`` (path string or key path)."""
        if leaf is _unit_axes._MISSING:
            raise TypeError(
                f"infer_unit_axes(...) was called with one argument. {_unit_axes.INJECT_HINT}"
            )
        path = _paths.as_path_str(path)
        entry = self.entries.get(path)
        if entry is None:
            if self.fallback is None:
                raise _missing_leaf.missing_leaf_error("infer_unit_axes", path, self.entries)
            return self.fallback(path, leaf)
        ndim = _unit_axes.leaf_ndim(leaf)
        if ndim != len(entry.shape):
            raise ValueError(
                f"infer_unit_axes: leaf {path!r} has rank {ndim}, but it had shape "
                f"{entry.shape} when its fan-in was inferred. Was the rule built from a "
                "different model? Rebuild it with infer_unit_axes for the model being trained."
            )
        return entry.fan_in

    @property
    def unused(self) -> list[str]:
        """Paths of the parameters the forward pass never reads (they keep the default rule)."""
        return [path for path, entry in self.entries.items() if not entry.used]

    def table(self) -> str:
        """The table that ``print`` shows: one row per parameter."""
        header = ("path", "shape", "fan-in", "units", "evidence")
        rows = [header] + [
            (e.path, str(e.shape), str(e.fan_in), str(e.num_units), e.evidence)
            for e in self.entries.values()
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        lines = []
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            lines.append("  ".join([*cells, row[-1]]).rstrip())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"InferredUnitAxes(\n{self.table()}\n)"
