"""README's ``python`` blocks run as written, the quick start clips as it says, and the
table README shows is what its code prints.

The only test that runs README.md's code (``tests/docs/test_docs.py`` runs every page under
``docs/``): its blocks in order in one namespace, from the repository root, as a reader
would paste them.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from helpers import markdown

REPO = pathlib.Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def assert_quick_start_clipped(namespace: dict[str, object]) -> None:
    """grads = 0.5·params, far above λ = 0.01: every conv unit's gradient is clipped to
    λ·‖W_i‖, and SGD's first Nesterov step is lr·(1 + 0.9)·g."""
    step = np.asarray(namespace["params"]["conv"]["kernel"]) - 1.0
    np.testing.assert_allclose(np.linalg.norm(step.reshape(-1, 32), axis=0),
                               0.1 * 1.9 * 0.01 * np.sqrt(3 * 3 * 16), rtol=1e-4)


def test_readme_blocks_run_the_quick_start_clips_and_the_output_shown_is_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = README.read_text()
    assert "\n## Quick start\n" in text, "README lost its quick start"
    heading_line = text[: text.index("\n## Quick start\n")].count("\n") + 2
    blocks = markdown.fenced_blocks(README, "python")
    quick_start = next((b for b in blocks if b.first_line > heading_line), None)
    assert quick_start is not None, "README's quick start has no python block"
    assert markdown.SKIP_MARK not in quick_start.info, "README's quick start must run"
    monkeypatch.chdir(REPO)
    namespace: dict[str, object] = {"__name__": "docs:README.md"}
    for block in blocks:
        if markdown.SKIP_MARK in block.info:
            continue
        markdown.run_block(README, block, namespace)
        if block is quick_start:  # Before a later block reuses its names.
            assert_quick_start_clipped(namespace)
    printed = capsys.readouterr().out
    shown = [block.code.strip() for block in markdown.fenced_blocks(README, "text")]
    assert shown, "README shows no output (a text block) of its code"
    for output in shown:
        assert output in printed, f"README shows output its code does not print:\n{output}"
