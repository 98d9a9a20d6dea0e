"""Stopping a run cleanly on Ctrl-C (SIGINT) or SIGTERM: checkpoint at the current step, exit.

SIGTERM is what SLURM, Kubernetes and preemptible cloud VMs send before they kill a job.
The training loop asks :meth:`StopRequest.poll` before every step; once it says stop, the
step in flight has finished, a checkpoint is written and the process exits with
``128 + signal number`` (130 after Ctrl-C, 143 after SIGTERM). A second signal aborts at
once.

On one process a signal only sets a flag. On several (``jax.distributed``), the processes
must stop at the same step, or those still training would wait forever for the collectives
of those that stopped; a scheduler may also signal one host before the others. There JAX's
preemption service decides (the one Orbax's ``CheckpointManager.reached_preemption`` asks):
a SIGTERM to any process reaches all of them, and
``multihost_utils.reached_preemption_sync_point`` names one step, the same everywhere, at
which every process stops. A SIGINT is turned into a SIGTERM to the process itself, so
that Ctrl-C takes the same path.
"""

import logging
import os
import signal
from typing import Any

import jax
from jax.experimental import multihost_utils


class StopRequest:
    """A context manager that turns the first SIGINT or SIGTERM into a stop request.

    Args:
      multi_process: whether the processes agree on the stopping step through JAX's
        preemption service (``None``: when there are several and ``jax.distributed`` is up).

    Attributes:
      signum: the number of the signal that stopped the run, or ``None``.
    """

    def __init__(self, multi_process: bool | None = None):
        self.signum: int | None = None
        self._multi_process = agreeing() if multi_process is None else multi_process
        self._signalled = False
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether the run stops (a signal on one process; the agreed step on several)."""
        return self.signum is not None

    def poll(self, step: int) -> bool:
        """Whether the run must stop before training step ``step + 1``; call it every step.

        Args:
          step: the number of steps done, the same on every process.

        Returns:
          :attr:`requested`, after asking JAX's preemption service on several processes.
        """
        if (self._multi_process and self.signum is None
                and multihost_utils.reached_preemption_sync_point(step)):
            self.signum = signal.SIGTERM
        return self.requested

    def __enter__(self) -> "StopRequest":
        # On several processes SIGTERM stays with JAX's preemption notifier.
        signals = (signal.SIGINT,) if self._multi_process else (signal.SIGINT, signal.SIGTERM)
        for signum in signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self._signalled:
            raise KeyboardInterrupt
        self._signalled = True
        if self._multi_process:
            os.kill(os.getpid(), signal.SIGTERM)  # Into the preemption service.
        else:
            self.signum = signum

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def agreeing() -> bool:
    """Whether several processes can agree on a stopping step (JAX's preemption service).

    The service comes with ``jax.distributed.initialize`` unless the config option
    ``jax_enable_preemption_service`` is off. Several processes without it (a runtime that
    connects the hosts by itself) get a warning: a signal then stops only its own process.
    """
    if jax.process_count() == 1:
        return False
    if jax.distributed.is_initialized() and jax.config.jax_enable_preemption_service:
        return True
    logging.warning("%d processes without JAX's preemption service (jax.distributed not "
                    "initialized, or jax_enable_preemption_service off): a signal stops only "
                    "the process it reaches, and the others wait for it.", jax.process_count())
    return False
