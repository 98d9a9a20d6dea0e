"""Runs every ``python`` block of ``docs/guides/scaling_out.md``, in order, in one namespace.

Run by ``tests/agc_optax/test_sharding.py`` in a child process with 8 simulated CPU
devices, so the documented FSDP, tensor-parallel, Explicit-mesh and
``shard_map`` recipes stay true.
"""

from __future__ import annotations

import re
from pathlib import Path

import jax
import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "guides" / "scaling_out.md"


@pytest.mark.skipif(
    jax.device_count() < 8,
    reason="needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8",
)
def test_scaling_out_snippets_run() -> None:
    text = DOC.read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    assert len(blocks) >= 5, f"expected the setup, FSDP, TP, Explicit and shard_map blocks in {DOC}"
    namespace: dict[str, object] = {"__name__": "scaling_out_md"}
    for block in blocks:
        first_line = text[: text.index(block)].count("\n") + 1
        # Blank lines up front make tracebacks point at the Markdown file's own lines.
        code = compile("\n" * (first_line - 1) + block, str(DOC), "exec")
        exec(code, namespace)
