"""Stopping a run cleanly on Ctrl-C (SIGINT) or SIGTERM: checkpoint at the current step, exit.

SIGTERM is what SLURM, Kubernetes and preemptible cloud VMs send before they kill a job;
both signals only set a flag here, which the training loop reads after every step, so the
step in flight finishes, a checkpoint is written and the process exits with
``128 + signal number`` (130 after Ctrl-C, 143 after SIGTERM). A second signal aborts at
once.
"""

import signal
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A context manager that turns the first SIGINT or SIGTERM into a stop request.

    Attributes:
      signum: the number of the signal received, or ``None``.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a signal asked the run to stop."""
        return self.signum is not None

    def __enter__(self) -> "StopRequest":
        for signum in SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

