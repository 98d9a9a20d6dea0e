"""Hooks for the whole test suite; shared code lives in ``tests/helpers/``."""

from __future__ import annotations

import pytest

from helpers import fashion_mnist


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skips, or under ``CI=true`` fails, a ``requires_fashion_mnist`` test without the data."""
    if item.get_closest_marker("requires_fashion_mnist") is not None:
        fashion_mnist.require()
