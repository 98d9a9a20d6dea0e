"""Find the cross-device collectives in compiled HLO and the bytes each one moves.

After SPMD partitioning, every byte that crosses devices goes through a
collective instruction (``all-reduce``, ``all-gather``, ``reduce-scatter``,
``all-to-all``, ``collective-permute``, ...). This module reads them from the
text of a compiled executable, with their operand and result shapes, so that a
test can assert "only per-unit norm arrays are reduced across devices, nothing
is gathered" and a benchmark can report the bytes::

    compiled = jax.jit(update).lower(grads, params).compile()
    ops = parse_collectives(compiled.as_text())
    assert not [op for op in ops if op.kind != "all-reduce"]

Byte counts are per device: for each collective, the larger of the bytes the
device contributes (operands) and the bytes it ends with (results). That is the
payload size; how many bytes a ring or tree algorithm puts on the wire for it
is a small multiple of it that depends on the group size (``group_size``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable

COLLECTIVE_KINDS = (
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "all-to-all",
    "ragged-all-to-all",
    "collective-permute",
    "collective-broadcast",
)

# Bytes per element of each HLO primitive type (pred is stored as one byte).
_DTYPE_BYTES = {
    "pred": 1,
    "s2": 1,
    "s4": 1,
    "u2": 1,
    "u4": 1,
    "s8": 1,
    "u8": 1,
    "f8e4m3fn": 1,
    "f8e5m2": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
    "c64": 8,
    "c128": 16,
}

# `[ROOT] %name = <result type> <opcode>(<operands>), <attributes>`. The result
# type is an array type `f32[16,32]{1,0}` or a tuple `(f32[16]{0}, ...)`; layouts
# may hold parentheses (`{1,0:T(8,128)}`), so types and operands are matched by
# counting brackets rather than by one regular expression.
_HEAD = re.compile(r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*")
_OPCODE = re.compile(r"\s*(?P<opcode>[\w\-]+)\(")
_ARRAY_TYPE = re.compile(r"\b(?P<dtype>[a-z]+\d*(?:e\d+m\d+\w*)?)\[(?P<dims>[\d,]*)\]")
_OPERAND_NAME = re.compile(r"%([\w.\-]+)")


@dataclasses.dataclass(frozen=True)
class ArrayShape:
    """An HLO array type: primitive type name and dimensions."""

    dtype: str
    dims: tuple[int, ...]

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.dims)

    @property
    def nbytes(self) -> int:
        """Bytes of one device's copy."""
        return self.size * _DTYPE_BYTES.get(self.dtype, 4)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.dims))}]"


@dataclasses.dataclass(frozen=True)
class Collective:
    """One cross-device collective instruction of a compiled HLO module."""

    kind: str
    name: str
    operands: tuple[ArrayShape, ...]
    results: tuple[ArrayShape, ...]
    group_size: int | None

    @property
    def nbytes(self) -> int:
        """Per-device payload: the larger of operand and result bytes."""
        return max(sum(s.nbytes for s in self.operands), sum(s.nbytes for s in self.results))

    def __str__(self) -> str:
        operands = ", ".join(map(str, self.operands)) or "?"
        return f"{self.kind} {self.name}({operands}) group={self.group_size}"


def _closing(text: str, start: int) -> int:
    """Index just past the bracket group that opens at ``text[start]``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] in "({[":
            depth += 1
        elif text[i] in ")}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def _split_instruction(line: str) -> tuple[str, str, str, str, str] | None:
    """``(name, result type, opcode, operands, attributes)`` of one HLO line, or None."""
    head = _HEAD.match(line)
    if head is None:
        return None
    pos = head.end()
    if line.startswith("(", pos):
        type_end = _closing(line, pos)
    else:
        type_end = pos
        while type_end < len(line) and not line[type_end].isspace():
            # An array type `f32[4]{0:T(4)}`: skip whole bracket groups.
            if line[type_end] in "({[":
                type_end = _closing(line, type_end)
            else:
                type_end += 1
    opcode = _OPCODE.match(line, type_end)
    if opcode is None:
        return None
    operands_end = _closing(line, opcode.end() - 1)
    return (
        head["name"],
        line[pos:type_end],
        opcode["opcode"],
        line[opcode.end() : operands_end - 1],
        line[operands_end:],
    )


def _array_types(text: str) -> tuple[ArrayShape, ...]:
    shapes = []
    for match in _ARRAY_TYPE.finditer(text):
        if match["dtype"] not in _DTYPE_BYTES:
            continue  # Tokens and other non-array types.
        dims = tuple(int(d) for d in match["dims"].split(",") if d)
        shapes.append(ArrayShape(match["dtype"], dims))
    return tuple(shapes)


def _group_size(attrs: str) -> int | None:
    """Devices per replica group, from any of the HLO spellings of ``replica_groups``."""
    mesh = re.search(r"replica_groups=mesh\[(?P<axes>[^\]]*)\]", attrs)
    if mesh:
        sizes = dict(re.findall(r"'([^']+)'=(\d+)", mesh["axes"]))
        chosen = re.search(r"\{(?P<names>'[^}]*)\}", attrs[mesh.end() :])
        if chosen is None:
            return None
        return math.prod(int(sizes[n]) for n in re.findall(r"'([^']+)'", chosen["names"]))
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", attrs)
    if iota:
        return int(iota[2])
    listed = re.search(r"replica_groups=\{\{(?P<first>[\d,]*)\}", attrs)
    if listed:
        return len([d for d in listed["first"].split(",") if d])
    pairs = re.search(r"source_target_pairs=\{", attrs)
    return 2 if pairs else None


def parse_collectives(hlo_text: str) -> list[Collective]:
    """Lists every collective instruction of an HLO module, with its shapes.

    Asynchronous pairs (``all-gather-start`` / ``all-gather-done``) count once,
    at their ``-start``. Operand shapes are looked up from the instructions
    that define them, since compiled HLO prints operands by name only.

    Args:
        hlo_text: ``compiled.as_text()`` of a ``jax.jit(...).lower(...).compile()``.

    Returns:
        The collectives in program order.
    """
    shapes: dict[str, tuple[ArrayShape, ...]] = {}
    found = []
    for line in hlo_text.splitlines():
        # Computation headers (`%fused (p: f32[4]) -> f32[4] {`) declare parameters inline.
        for param, param_type in re.findall(r"([\w.\-]+): (\w+\[[\d,]*\])", line):
            shapes.setdefault(param, _array_types(param_type))
        parts = _split_instruction(line)
        if parts is None:
            continue
        name, result_type, opcode, operand_text, attrs = parts
        result = _array_types(result_type)
        shapes[name] = result
        if opcode.endswith("-done"):
            continue
        kind = opcode.removesuffix("-start")
        if kind not in COLLECTIVE_KINDS:
            continue
        operand_names = _OPERAND_NAME.findall(operand_text)
        operands = tuple(s for n in operand_names for s in shapes.get(n, ()))
        if opcode.endswith("-start") and kind != "all-reduce":
            # The -start result is a tuple (operands..., results..., scratch); keep results.
            result = result[len(operands) : 2 * len(operands)] or result
        found.append(Collective(kind, name, operands, result, _group_size(attrs)))
    return found


def summarize(collectives: Iterable[Collective]) -> dict[str, dict[str, int]]:
    """Counts and per-device bytes of collectives, by kind.

    Args:
        collectives: as returned by :func:`parse_collectives`.

    Returns:
        ``{kind: {"count": n, "bytes": b}}`` for each kind present, plus a
        ``"total"`` entry.
    """
    table: dict[str, dict[str, int]] = {}
    total = {"count": 0, "bytes": 0}
    for op in collectives:
        entry = table.setdefault(op.kind, {"count": 0, "bytes": 0})
        for row in (entry, total):
            row["count"] += 1
            row["bytes"] += op.nbytes
    table["total"] = total
    return table
