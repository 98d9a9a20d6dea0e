"""Orbax checkpoints of the training state together with the input pipeline's position."""

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from examples.common.errors import UserError


class Checkpointer:
    """Saves and restores ``(train_state, data_iterator_state)`` pairs by step.

    Args:
      directory: where checkpoints go (``<workdir>/checkpoints``).
      max_to_keep: how many recent checkpoints to keep.
      read_only: only restore (no saves, no clean-up); for reading a run's directory while
        its trainer may still write to it.

    Orbax never restores a write that did not finish (a process killed mid-save leaves a
    temporary directory, renamed only when complete); a writing checkpointer deletes such
    directories before its first save.
    """

    def __init__(self, directory: pathlib.Path, max_to_keep: int = 2, read_only: bool = False):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
            cleanup_tmp_directories=not read_only)
        self.directory = directory.absolute()
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def all_steps(self) -> list[int]:
        """Returns the steps of the complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """Returns the step of the newest checkpoint, or ``None``."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_state: dict[str, Any]) -> None:
        """Saves and waits until the checkpoint is complete on disk.

        Orbax writes into a temporary directory that it renames when complete, so a
        process killed mid-write leaves no checkpoint that :meth:`latest_step` would pick.
        Waiting here (a checkpoint an epoch costs little) makes a failed write an error
        of this step rather than of the next save.

        Raises:
          UserError: the checkpoint could not be written (disk full, no permission).
        """
        if step in self._manager.all_steps():
            return
        try:
            self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)))
            self._manager.wait_until_finished()
        except OSError as e:
            raise UserError(f"Could not write the step-{step} checkpoint to {self.directory} "
                            f"({e.strerror or e}); free space or fix permissions, then rerun "
                            "with --resume.") from e

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restores the state saved at ``step``.

        Args:
          step: a saved step.
          abstract_state: a pytree of ``jax.ShapeDtypeStruct`` (with shardings) like the
            saved state.

        Returns:
          ``(state, data_state)``.
        """
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return restored.state, restored.data

    def restore_latest(self, state: Any, resume: bool) -> tuple[Any, dict[str, Any] | None, int]:
        """The newest checkpoint when resuming and there is one, else ``state`` itself.

        Args:
          state: the initial state; its arrays' shapes, dtypes and shardings are those of
            the restored one.
          resume: whether to look for a checkpoint at all.

        Returns:
          ``(state, data_state, step)``: the state, the input pipeline's position (``None``:
          from the start) and the step to continue from.
        """
        step = self.latest_step() if resume else None
        if step is None:
            return state, None, 0
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        state, data_state = self.restore(step, abstract)
        return state, data_state, step

    def wait(self) -> None:
        """Blocks until pending saves are written."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases resources."""
        self._manager.wait_until_finished()
        self._manager.close()
