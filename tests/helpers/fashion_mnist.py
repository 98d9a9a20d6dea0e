"""The ``requires_fashion_mnist`` marker: Debian's Fashion-MNIST, or a skip, or in CI a failure.

``tests/conftest.py`` calls :func:`require` before every test marked
``@pytest.mark.requires_fashion_mnist``. Nothing is downloaded: a test that finds no copy is
skipped on a developer's machine, and fails when ``CI=true``, where ``scripts/setup.sh``
installs the data, so that a CI machine without it cannot pass by skipping the training tests.
"""

from __future__ import annotations

import os

import pytest

INSTALL = "apt-get install dataset-fashion-mnist"


def require() -> None:
    """Returns if Fashion-MNIST is found; otherwise skips the test, or fails it under CI.

    Looks where the examples do (``$AGC_OPTAX_DATA``, the cache, Debian's
    ``/usr/share/datasets/fashion-mnist``), without downloading.

    Raises:
      pytest.fail.Exception: the data is missing and the environment has ``CI=true``.
      pytest.skip.Exception: the data is missing otherwise.
    """
    from examples.common import datasets  # Only the marked tests need the examples.

    if datasets.locate("fashion_mnist") is not None:
        return
    message = f"Fashion-MNIST is not installed: {INSTALL} (or set ${datasets.ENV_VAR})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI=true, where it must be", pytrace=False)
    pytest.skip(message)
