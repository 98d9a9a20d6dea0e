"""An images/s meter for the training loop's log lines."""

import time
from collections.abc import Callable


class ImagesPerSecond:
    """Counts images and reports their rate since the previous report.

    JAX dispatches steps asynchronously, so call :meth:`rate` where the loop waits for the
    device anyway (after fetching a step's metrics): the count is then of finished steps.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        """Starts the first window now.

        Args:
          clock: a monotonic clock in seconds (a fake one in tests).
        """
        self._clock = clock
        self._start = clock()
        self._images = 0

    def add(self, images: int) -> None:
        """Counts ``images`` more images (a step's global batch)."""
        self._images += images

    def rate(self) -> float:
        """Returns the images per second since the last call (or the start), then resets."""
        now = self._clock()
        rate = self._images / max(now - self._start, 1e-9)
        self._start, self._images = now, 0
        return rate
