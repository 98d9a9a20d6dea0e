"""The README's quick start runs as written."""

from __future__ import annotations

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs_and_clips():
    text = README.read_text()
    block = re.search(r"## Quick start\n.*?```python\n(.*?)```", text, re.S)
    assert block, "README lost its quick start"
    namespace: dict = {}
    exec(compile(block.group(1), "README quick start", "exec"), namespace)
    # grads = 0.5·params, far above λ = 0.01: every conv unit's gradient is clipped to
    # λ·‖W_i‖, and SGD's first Nesterov step is lr·(1 + 0.9)·g.
    step = np.asarray(namespace["params"]["conv"]["kernel"]) - 1.0
    np.testing.assert_allclose(np.linalg.norm(step.reshape(-1, 32), axis=0),
                               0.1 * 1.9 * 0.01 * np.sqrt(3 * 3 * 16), rtol=1e-4)
