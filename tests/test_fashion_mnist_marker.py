"""The ``requires_fashion_mnist`` marker: a test without the data is skipped, or fails in CI."""

from __future__ import annotations

import pytest

from examples.common import datasets
from helpers import fashion_mnist

Outcome = pytest.skip.Exception | pytest.fail.Exception


def outcome_of_require() -> Outcome | None:
    """What :func:`fashion_mnist.require` raised (a skip or a failure), or None.

    Caught here, so that a skip where a failure is due fails this test instead of skipping it.
    """
    try:
        fashion_mnist.require()
    except (pytest.skip.Exception, pytest.fail.Exception) as outcome:
        return outcome
    return None


@pytest.fixture
def no_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "locate", lambda name, data_dir=None: None)


@pytest.mark.parametrize("ci", [None, "false", "1"])
def test_missing_data_skips_outside_ci(no_fashion_mnist, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    outcome = outcome_of_require()
    assert isinstance(outcome, pytest.skip.Exception), outcome
    assert "apt-get install dataset-fashion-mnist" in str(outcome)


def test_missing_data_fails_when_ci_is_true(no_fashion_mnist, monkeypatch):
    monkeypatch.setenv("CI", "true")
    outcome = outcome_of_require()
    assert isinstance(outcome, pytest.fail.Exception), outcome
    message = str(outcome)
    assert "apt-get install dataset-fashion-mnist" in message and "CI=true" in message
    assert "\n" not in message


def test_found_data_lets_the_test_run(monkeypatch):
    monkeypatch.setattr(datasets, "locate", lambda name, data_dir=None: {"x": name})
    monkeypatch.setenv("CI", "true")
    assert outcome_of_require() is None
