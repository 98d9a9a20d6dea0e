"""Which leaves AGC leaves alone: the ``exclude`` argument.

The paper does not clip the final classifier layer. ``exclude`` names such
leaves by regular expressions searched in their path strings (see
:mod:`agc_optax._paths`), by a predicate, or by a boolean pytree. A pattern
that matches nothing is an error, so a typo cannot silently switch the
exclusion off.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from agc_optax import _paths, _unit_axes

ExcludeFn = Callable[[str, Any], bool]


class ExcludeError(ValueError):
    """An ``exclude`` argument that cannot mean what was intended.

    A pattern that matches no leaf, an exclusion of every leaf, or a mask without
    a leaf's path. A ``ValueError``, so code catching that keeps working; catch
    this type to tell it from other errors (a trainer turning it into a message
    about its own flag, say) without matching the message's text.
    """
ExcludeSpec = None | str | re.Pattern | Sequence[str | re.Pattern] | ExcludeFn | Any


def _is_pattern_list(spec: Any) -> bool:
    return isinstance(spec, list | tuple) and all(isinstance(s, str | re.Pattern) for s in spec)


def _match_patterns(patterns: Sequence[str | re.Pattern], paths: Sequence[str]) -> list[bool]:
    excluded = [False] * len(paths)
    for pattern in patterns:
        try:
            compiled = re.compile(pattern)
        except re.error as err:
            raise ValueError(
                f"exclude pattern {pattern!r} is not a valid regular expression: {err}"
            ) from err
        hits = [bool(compiled.search(p)) for p in paths]
        if not any(hits):
            raise ExcludeError(
                f"exclude pattern {compiled.pattern!r} matches no leaf. It was searched in "
                f"these path strings: {_paths.describe_paths(paths, limit=200)}. Fix the "
                "pattern (paths join keys with '/', e.g. 'head/kernel')."
            )
        excluded = [e or h for e, h in zip(excluded, hits, strict=True)]
    return excluded


def _as_python_bool(value: Any, path: str, source: str) -> bool:
    """``value`` as a bool: a Python or NumPy bool, or a concrete boolean scalar array."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{source} for leaf {path!r} is a traced value ({value!r}). The exclusion is "
            "decided when the update is traced, so it cannot depend on traced values: "
            "decide it from the path and the leaf's shape or dtype."
        )
    if hasattr(value, "dtype") and np.shape(value) == () and value.dtype == np.bool_:
        return bool(value)
    raise TypeError(
        f"{source} for leaf {path!r} must be a bool, got {type(value).__name__} {value!r}."
    )


def resolve_exclude(spec: ExcludeSpec, paths: Sequence[str], leaves: Sequence[Any]) -> list[bool]:
    """Turns any accepted ``exclude`` argument into one flag per leaf.

    Args:
        spec: None; a regular expression (string or compiled) or a list of them,
            searched in each leaf's path string; a callable
            ``(path, leaf) -> bool``; or a pytree of bools with the params' paths.
        paths: the leaves' path strings.
        leaves: the param leaves.

    Returns:
        ``True`` for every leaf AGC must leave unchanged.

    Raises:
        ExcludeError: a pattern matches no leaf, every leaf is excluded, or a mask
            lacks a leaf's path (a ``ValueError``).
        TypeError: a callable or mask gives something other than a bool.
    """
    if spec is None:
        return [False] * len(paths)
    excluded = _resolve(spec, paths, leaves)
    if paths and all(excluded):
        raise ExcludeError(
            f"exclude={_short_repr(spec)} excludes every leaf, leaving AGC nothing to clip: "
            f"{_paths.describe_paths(paths)}. Anchor the pattern to the leaves meant "
            "(e.g. '^head/' rather than 'head', which also matches 'multihead/...'), or "
            "leave agc out of the chain."
        )
    return excluded


def _short_repr(spec: Any, limit: int = 80) -> str:
    text = repr(spec)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _resolve(spec: ExcludeSpec, paths: Sequence[str], leaves: Sequence[Any]) -> list[bool]:
    if isinstance(spec, str | re.Pattern):
        return _match_patterns([spec], paths)
    if _is_pattern_list(spec):
        return _match_patterns(spec, paths)
    if callable(spec):
        _unit_axes.check_leaf_rule(spec, "exclude")
        return [
            _as_python_bool(spec(p, x), p, "exclude(path, leaf)")
            for p, x in zip(paths, leaves, strict=True)
        ]
    if hasattr(spec, "dtype") and not hasattr(spec, "keys"):
        raise TypeError(f"exclude is an array ({spec!r}), not a mask. {_unit_axes.INJECT_HINT}")
    mask_paths, mask_leaves, _ = _paths.flatten_with_path_strings(
        spec, is_leaf=lambda x: x is None
    )
    table = dict(zip(mask_paths, mask_leaves, strict=True))
    holes = [p for p in paths if p in table and table[p] is None]
    if holes:
        raise ExcludeError(
            f"exclude mask holds None for leaves {_paths.describe_paths(holes)}; give each "
            "parameter True (leave it unclipped) or False (clip it)."
        )
    missing = [p for p in paths if p not in table]
    if missing:
        raise ExcludeError(
            f"exclude mask has no entry for leaves {_paths.describe_paths(missing)}; its "
            f"entries are {_paths.describe_paths(mask_paths)}. Give every parameter a bool."
        )
    return [_as_python_bool(table[p], p, "exclude mask entry") for p in paths]
