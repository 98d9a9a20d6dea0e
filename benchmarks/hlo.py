"""Counting the kernels a compiled XLA program launches, from its HLO text.

Launch overhead shows in the number of top-level kernels (the entry computation's
instructions other than parameters, constants, tuples and bitcasts) even without an
accelerator to time them on.
"""

from __future__ import annotations

import re

# HLO instructions that launch no work of their own.
_NOT_KERNELS = frozenset({"parameter", "constant", "tuple", "get-tuple-element", "bitcast"})
_ENTRY_OPCODE = re.compile(r"=\s+(?:\([^)]*\)|\S+)\s+([\w\-]+)\(")


def _computation(hlo_text: str, header: str) -> str:
    """The body of the computation whose header line starts with ``header``."""
    start = hlo_text.index(header)
    return hlo_text[start : hlo_text.index("\n}", start)]


def _kernels(body: str) -> list[str]:
    opcodes = [m[1] for line in body.splitlines()[1:] if (m := _ENTRY_OPCODE.search(line))]
    return [op for op in opcodes if op not in _NOT_KERNELS]


def count_kernels(hlo_text: str, num_leaves: int) -> dict[str, float]:
    """Kernels and fusions a compiled program launches in an ordinary step.

    Counts the instructions of the entry computation other than parameters,
    constants, tuples and bitcasts, plus those of the cheaper branch of each
    conditional (agc's fast path; the exact branch runs only in a step with a
    unit out of the float32 sums' range and is reported on its own).

    Args:
        hlo_text: the compiled HLO text (``jit(f).lower(...).compile().as_text()``).
        num_leaves: the parameter tree's leaf count, for the per-leaf figure.

    Returns:
        ``kernels``, ``fusions``, ``conditionals``, ``kernels_per_leaf`` and
        ``rare_branch_kernels`` (the costlier branches' kernels, summed).
    """
    entry = _kernels(_computation(hlo_text, "\nENTRY"))
    taken, rare = [], 0
    for line in _computation(hlo_text, "\nENTRY").splitlines():
        branches = re.search(r"branch_computations=\{([^}]*)\}", line)
        if branches is None:
            continue
        names = [name.strip() for name in branches[1].split(",")]
        counts = sorted(
            (_kernels(_computation(hlo_text, f"\n{name} ")) for name in names), key=len
        )
        taken += counts[0]
        rare += sum(len(c) for c in counts[1:])
    kernels = entry + taken
    return {
        "kernels": len(kernels),
        "fusions": kernels.count("fusion"),
        "conditionals": entry.count("conditional"),
        "kernels_per_leaf": round(len(kernels) / max(num_leaves, 1), 2),
        "rare_branch_kernels": rare,
    }
