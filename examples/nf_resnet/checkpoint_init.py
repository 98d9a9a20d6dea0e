"""Starting a model from another run's checkpoint (``--init-from``): fine-tuning.

The directory is a run's ``--workdir`` or one written by
``python -m examples.nf_resnet.convert`` (DeepMind's weights). Its newest checkpoint's
parameters replace the model's, matched by path (``blocks/0/convs/1/kernel``); the
classifier (``head/``) starts afresh when its shape differs (another number of classes).
Any other missing, extra or mis-shaped parameter is an error naming it.
"""

import logging
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from agc_optax import path_to_str
from examples.common import checkpointing, errors
from examples.common import workdir as workdir_lib

HEAD = "head/"


def read_params(directory: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Returns the parameters of a run directory's newest checkpoint, keyed by path.

    Args:
      directory: a run's ``--workdir`` (holding ``checkpoints/<step>/state``).

    Returns:
      ``{"blocks/0/convs/1/kernel": array, …}``.

    Raises:
      UserError: the directory holds no checkpoint.
    """
    directory = pathlib.Path(directory).absolute()
    checkpointer = checkpointing.Checkpointer(directory / workdir_lib.CHECKPOINTS,
                                              read_only=True)
    try:
        step = checkpointer.latest_step() if (directory / workdir_lib.CHECKPOINTS).is_dir() \
            else None
    finally:
        checkpointer.close()
    if step is None:
        raise errors.UserError(f"--init-from {directory} holds no checkpoint; pass the "
                               "--workdir of a run or of examples.nf_resnet.convert.")
    path = directory / workdir_lib.CHECKPOINTS / str(step) / "state"
    reader = ocp.StandardCheckpointer()
    target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype),
                          reader.metadata(path).item_metadata)
    leaves = jax.tree_util.tree_flatten_with_path(reader.restore(path, target)["params"])[0]
    # A saved ``nnx.Param`` is a dict ``{"value": array}``: its path ends in ``/value``.
    return {path_to_str(p).removesuffix("/value"): np.asarray(leaf) for p, leaf in leaves}


def merge_params(model_params: dict[str, Any], saved: dict[str, np.ndarray],
                 source: str) -> tuple[dict[str, Any], list[str]]:
    """Returns the model's parameters with the saved ones in place, and the fresh ones.

    Args:
      model_params: the model's parameters keyed by path (shapes matter, not values).
      saved: the checkpoint's parameters keyed by path.
      source: what ``saved`` is, for the error messages.

    Returns:
      ``(params, fresh)``: every path's array, and the ``head/`` paths kept fresh because
      their shape differs.

    Raises:
      UserError: a path is missing, extra, or mis-shaped outside the head.
    """
    missing = sorted(model_params.keys() - saved.keys())
    unused = sorted(saved.keys() - model_params.keys())
    if missing or unused:
        which = (f"lacks {missing[0]!r}" if missing else f"has {unused[0]!r}, which the model "
                 "has not")
        raise errors.UserError(f"{source} {which} ({len(missing)} missing, {len(unused)} "
                               "unused): it was made for another --model.")
    merged, fresh = {}, []
    for path, current in model_params.items():
        value = saved[path]
        if value.shape == current.shape:
            merged[path] = value.astype(current.dtype)
        elif path.startswith(HEAD):
            merged[path], fresh = current, [*fresh, path]
        else:
            raise errors.UserError(f"{source}: {path!r} has shape {value.shape}, the model's "
                                   f"{tuple(current.shape)}; it was made for another --model "
                                   "or input channels.")
    return merged, fresh


def initialize_from(model: nnx.Module, directory: str | pathlib.Path) -> None:
    """Replaces ``model``'s parameters with those of a directory's newest checkpoint.

    Args:
      model: the freshly initialised model, changed in place.
      directory: the ``--init-from`` directory.

    Raises:
      UserError: no checkpoint, or parameters that do not fit the model (see
        :func:`merge_params`).
    """
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    current = {path_to_str(p): leaf for p, leaf in leaves}
    merged, fresh = merge_params(current, read_params(directory), f"--init-from {directory}")
    if fresh:
        logging.info("--init-from: %s start afresh (their shape differs).", ", ".join(fresh))
    values = [merged[path_to_str(p)] for p, _ in leaves]
    nnx.update(model, jax.tree_util.tree_unflatten(treedef, values))
