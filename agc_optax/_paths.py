"""Leaf path strings: the one naming scheme that `unit_axes` and `exclude` see.

A leaf's path string joins its pytree keys with ``/``: ``head/kernel``,
``layers/0/kernel``, ``blocks/2/conv1/bias``. Dict keys, sequence indices,
dataclass/attribute names and flattened-index keys all print as their bare
key. The ``value`` key through which a ``flax.nnx.Variable`` flattens is
dropped, so a parameter has the same path string whether the tree holds nnx
Variables (at ``init``) or raw arrays (at ``update``, inside ``nnx.Optimizer``);
a field of the user's own named ``value`` (``QKV(query, key, value)``) keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from agc_optax import _compat

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


def _is_value_attribute(key: Any) -> bool:
    return isinstance(key, jax.tree_util.GetAttrKey) and key.name == "value"


def path_to_str(path: KeyPath) -> str:
    """Formats a raw JAX key path as a ``/``-joined path string.

    A key path alone cannot tell nnx's ``Variable`` wrapper from a field named
    ``value``: both are the attribute key ``.value``. This function takes a
    trailing ``.value`` for nnx's wrapper and drops it, which is right for every
    key path of an ``nnx.state``. The path strings that :func:`agc_optax.agc`
    itself gives leaves (for ``exclude``, ``unit_axes`` and the statistics) are
    read from the tree, and keep a user's field named ``value``.

    Args:
        path: a key path as returned by ``jax.tree_util.tree_flatten_with_path``.

    Returns:
        The keys joined by ``/``, without a trailing ``.value`` attribute key.
    """
    keys = list(path)
    if keys and _is_value_attribute(keys[-1]):
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


def _is_nnx_variable(x: Any) -> bool:
    # A tree can hold an nnx.Variable only if flax.nnx was imported: never import it here.
    nnx = _compat.loaded_nnx()
    return nnx is not None and isinstance(x, nnx.Variable)


def _nnx_value_paths(tree: Any, is_leaf: Any) -> set[KeyPath]:
    """Key paths of the leaves that sit in an ``nnx.Variable`` under its ``.value`` key."""

    def stop(x: Any) -> bool:
        return _is_nnx_variable(x) or bool(is_leaf is not None and is_leaf(x))

    outer = jax.tree_util.tree_flatten_with_path(tree, is_leaf=stop)[0]
    wrapped = set()
    for path, node in outer:
        if not _is_nnx_variable(node):
            continue
        for inner, _ in jax.tree_util.tree_flatten_with_path(node, is_leaf=is_leaf)[0]:
            if len(inner) == 1 and _is_value_attribute(inner[0]):
                wrapped.add(tuple(path) + tuple(inner))
    return wrapped


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
    wrapped = _nnx_value_paths(tree, is_leaf)
    paths = [
        join_keys(_key_to_str(k) for k in (path[:-1] if path in wrapped else path))
        for path, _ in keyed
    ]
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
