"""What differs between the jax and flax releases that agc-optax supports.

The library needs jax and optax only; flax is imported when, and only when,
an ``nnx.Module`` is handed to it. The oldest releases that work are declared
in ``pyproject.toml`` and tested by the minimum-versions job of ``.ci/run``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from jax.extend import core as _extend_core


def _drop_var() -> type:
    # jax.extend.core gained DropVar in jax 0.9.2; before that only jax.core has it
    # (where it is deprecated since).
    drop_var = getattr(_extend_core, "DropVar", None)
    if drop_var is None:
        from jax import core as _core

        drop_var = _core.DropVar
    return drop_var


DropVar = _drop_var()

FLAX_EXTRA_HINT = "Install it with `pip install 'agc-optax[flax]'` (or `pip install flax`)."


def loaded_nnx() -> ModuleType | None:
    """``flax.nnx`` if something has imported it already, else None (never imports flax).

    An ``nnx.Module`` cannot exist unless ``flax.nnx`` was imported, so asking
    whether a value is one never needs to import flax.
    """
    return sys.modules.get("flax.nnx")


def is_nnx_module(x: Any) -> bool:
    """Whether ``x`` is a ``flax.nnx.Module``, without importing flax."""
    nnx = loaded_nnx()
    return nnx is not None and isinstance(x, nnx.Module)


def import_nnx(caller: str) -> ModuleType:
    """Imports ``flax.nnx`` for ``caller``, with an install hint when flax is missing.

    Raises:
        ImportError: flax is not installed.
    """
    try:
        from flax import nnx
    except ImportError as error:
        raise ImportError(f"{caller} needs flax, which is not installed. {FLAX_EXTRA_HINT}") from (
            error
        )
    return nnx


def iter_modules(nnx: ModuleType, model: Any) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """``(path, module)`` for every module in ``model``, as ``nnx.iter_modules`` gives them.

    ``nnx.iter_modules`` appeared in flax 0.12; older releases walk the graph
    with ``nnx.iter_graph``, which also yields the non-module nodes.
    """
    if hasattr(nnx, "iter_modules"):
        yield from nnx.iter_modules(model)
        return
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module):
            yield path, node

