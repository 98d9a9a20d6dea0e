"""Orbax checkpoints of the training state together with the input pipeline's position."""

import pathlib
from typing import Any

import orbax.checkpoint as ocp


class Checkpointer:
    """Saves and restores ``(train_state, data_iterator_state)`` pairs by step.

    Args:
      directory: where checkpoints go (``<workdir>/checkpoints``).
      max_to_keep: how many recent checkpoints to keep.
    """

    def __init__(self, directory: pathlib.Path, max_to_keep: int = 2):
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(directory.absolute(), options=options)

    def latest_step(self) -> int | None:
        """Returns the step of the newest checkpoint, or ``None``."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_state: dict[str, Any]) -> None:
        """Saves asynchronously; :meth:`wait` or :meth:`close` before exiting."""
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)))

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

    def wait(self) -> None:
        """Blocks until pending saves are written."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases resources."""
        self._manager.wait_until_finished()
        self._manager.close()
