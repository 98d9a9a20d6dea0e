"""The mark of a test of what ``optax.adaptive_grad_clip`` gets wrong: :func:`optax_bug`.

README's comparison table lists where ``optax.adaptive_grad_clip`` goes wrong, as of
optax :data:`LAST_CHECKED`. Each such cell has a test that asserts the *correct* behaviour
(agc-optax's, or the float64 reference's) of optax's transformation, marked ``optax_bug``:

- With optax ≤ :data:`LAST_CHECKED`, releases known to have the bug (CI's minimum-versions
  job runs the oldest, 0.2.7), the test is ``xfail(strict=True)`` and must fail with the
  given exception: that proves it detects the bug, and an XPASS there (a test that no longer
  sees a known bug) fails the suite.
- With a newer optax, whose behaviour nobody has checked yet, the test is a lenient
  ``xfail``: a bug still there is an XFAIL; a fixed one is an XPASS, listed with its reason
  in the ``-ra`` summary, and the suite stays green. A fixed optax is noticed, not a break.

Strict on every release would turn optax's fix into a red suite; ``condition=`` on the
version alone would run the test plainly on a newer optax, so a fix would pass unnoticed
and a bug still there would fail the suite. When an XPASS shows up: update README's table
and its optax version, and make the mark apply to the releases before the fix only.
"""

from __future__ import annotations

import optax
import pytest
from packaging.version import Version

LAST_CHECKED = Version("0.2.8")
"""The newest optax whose behaviour README's comparison table describes."""


def optax_bug(
    reason: str, raises: type[BaseException] | tuple[type[BaseException], ...] = AssertionError
) -> pytest.MarkDecorator:
    """``xfail``, strict on the optax releases known to have the bug, lenient on newer ones.

    Args:
      reason: what optax does wrong, as README's comparison table says it.
      raises: how the test fails on a release with the bug; any other exception is an error.

    Returns:
      The mark, for a test function or a ``pytest.param``.
    """
    installed = Version(optax.__version__)
    known = installed <= LAST_CHECKED
    where = f"optax ≤ {LAST_CHECKED}" if known else f"optax {installed}, newer than {LAST_CHECKED}"
    return pytest.mark.xfail(
        strict=known,
        raises=raises,
        reason=f"{where}: {reason} (an XPASS means optax fixed it: see helpers/optax_bugs.py)",
    )
