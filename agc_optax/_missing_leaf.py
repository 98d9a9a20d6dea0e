"""The error a unit-axes table gives for a leaf it does not hold.

A table built on one tree and used on another (Linen's whole ``variables`` at
inference, ``variables["params"]`` in the optimizer) would otherwise miss on
every path and clip each leaf over the default axes without a word.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection


def _wrapping_prefix(inner: str, outer_paths: Collection[str]) -> str | None:
    """The prefix ``p`` such that ``p/inner`` is one of ``outer_paths``, if any."""
    suffix = f"/{inner}"
    for outer in outer_paths:
        if outer.endswith(suffix):
            return outer[: -len(suffix)]
    return None


def _likely_cause(path: str, known: Collection[str]) -> str:
    prefix = _wrapping_prefix(path, known)
    if prefix is not None:
        return (
            f"The table holds {prefix + '/' + path!r}: it was built on a tree that wraps the "
            f"one being clipped (e.g. on Linen's whole `variables`, while the optimizer gets "
            f"`variables[{prefix!r}]`). Build it on the tree the optimizer gets, e.g. "
            f"infer_unit_axes(lambda p, x: model.apply({{{prefix!r}: p}}, x), "
            f"variables[{prefix!r}], x)."
        )
    parts = path.split("/")
    for i in range(1, len(parts)):
        if "/".join(parts[i:]) in known:
            outer = "/".join(parts[:i])
            return (
                f"The table holds {'/'.join(parts[i:])!r}: it was built on a subtree (e.g. "
                f"`variables[{outer!r}]`) of the tree being clipped (e.g. the whole "
                f"`variables`). Give the optimizer the tree the table was built on."
            )
    return (
        "Was the table built from a different model? Rebuild it for the model being trained."
    )


def missing_leaf_error(name: str, path: str, known: Collection[str]) -> ValueError:
    """A ValueError naming ``path``, the table's nearest paths and the likely cause.

    Args:
        name: the function that built the table (``infer_unit_axes``, ``nnx_unit_axes``).
        path: the path string of the leaf the table does not hold.
        known: the path strings the table holds.

    Returns:
        The error, for the caller to raise.
    """
    nearest = difflib.get_close_matches(path, list(known), n=3, cutoff=0.0)
    shown = ", ".join(repr(p) for p in nearest) or "none (the table is empty)"
    return ValueError(
        f"{name}: leaf {path!r} is not in the unit-axes table (nearest: {shown}). "
        f"{_likely_cause(path, known)} To clip leaves the table does "
        "not hold over agc_optax.default_unit_axes on purpose, pass "
        "unit_axes=table.with_fallback()."
    )
