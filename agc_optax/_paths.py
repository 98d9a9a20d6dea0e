"""Leaf path strings: the one naming scheme that `unit_axes` and `exclude` see.

A leaf's path string joins its pytree keys with ``/``: ``head/kernel``,
``layers/0/kernel``, ``blocks/2/conv1/bias``. Dict keys, sequence indices,
dataclass/attribute names and flattened-index keys all print as their bare
key. A trailing attribute key ``value`` (how a ``flax.nnx.Variable`` flattens)
is dropped, so a parameter has the same path string whether the tree holds nnx
Variables (at ``init``) or raw arrays (at ``update``, inside ``nnx.Optimizer``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

KeyPath = tuple[Any, ...]


def _key_to_str(key: Any) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def path_to_str(path: KeyPath) -> str:
    """Formats a JAX key path as a ``/``-joined path string.

    Args:
        path: a key path as returned by ``jax.tree_util.tree_flatten_with_path``.

    Returns:
        The keys joined by ``/``, without a trailing nnx ``Variable`` ``value`` key.
    """
    keys = list(path)
    if keys and isinstance(keys[-1], jax.tree_util.GetAttrKey) and keys[-1].name == "value":
        keys.pop()
    return join_keys(_key_to_str(k) for k in keys)


def as_path_str(path: str | KeyPath) -> str:
    """Returns the path string of ``path``, given as a path string or a raw JAX key path.

    Every ``unit_axes`` rule the library hands out calls this first, so it
    gives the same answer for ``"head/kernel"`` and for the key path
    ``(DictKey('head'), DictKey('kernel'))`` of ``jax.tree_util.tree_flatten_with_path``.

    Args:
        path: a path string (returned unchanged) or a sequence of JAX keys.

    Returns:
        The ``/``-joined path string.
    """
    if isinstance(path, str):
        return path
    return path_to_str(tuple(path))


def join_keys(keys: Any) -> str:
    """Joins plain keys into a path string: ``("layers", 0, "kernel")`` -> ``"layers/0/kernel"``."""
    return "/".join(str(k) for k in keys)


def flatten_with_path_strings(tree: Any, is_leaf: Any = None) -> tuple[list[str], list[Any], Any]:
    """Flattens ``tree`` into path strings, leaves and its treedef.

    Args:
        tree: any pytree.
        is_leaf: optional predicate forwarded to ``jax.tree_util``.

    Returns:
        ``(paths, leaves, treedef)`` where ``paths[i]`` names ``leaves[i]``.

    Raises:
        ValueError: when two leaves print to the same path string.
    """
    keyed, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    paths = [path_to_str(path) for path, _ in keyed]
    leaves = [leaf for _, leaf in keyed]
    if len(set(paths)) != len(paths):
        seen: set[str] = set()
        duplicate = next(p for p in paths if p in seen or seen.add(p))
        raise ValueError(
            f"Two leaves share the path string {duplicate!r}. agc-optax names leaves by "
            "their keys joined with '/'; rename a key so that every leaf has its own path."
        )
    return paths, leaves, treedef


def describe_paths(paths: Sequence[str], limit: int = 60) -> str:
    """Formats a list of path strings for an error message, truncated to ``limit``."""
    shown = ", ".join(repr(p) for p in paths[:limit])
    if len(paths) > limit:
        shown += f", ... ({len(paths) - limit} more)"
    return f"[{shown}]"
