"""AGC on sharded parameters: ``jax.jit`` with ``NamedSharding`` and ``shard_map``.

The checks need 8 devices, and the number of simulated CPU devices is fixed
when JAX starts, so each group runs in a child pytest process with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``; its whole report is
shown when anything in it fails. The checks themselves are in
``tests/helpers/sharding_*_checks.py``; ``sharding_docs_checks.py`` runs the code
of ``docs/guides/scaling_out.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HELPERS = REPO / "tests" / "helpers"
TIMEOUT_S = 300


def run_checks_on_8_devices(module: str) -> None:
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(
        [env.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    # pyproject.toml's pythonpath gives the child the repository and tests/ (for helpers).
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-o", "addopts=-ra", str(HELPERS / module)]
    try:
        child = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired as error:
        partial = error.stdout.decode() if isinstance(error.stdout, bytes) else error.stdout
        pytest.fail(f"{module} did not finish in {TIMEOUT_S} s; output so far:\n{partial}")
    report = f"$ {' '.join(command)}\n{child.stdout}\n{child.stderr}"
    if child.returncode != 0:
        pytest.fail(f"{module} failed (exit {child.returncode}):\n{report}", pytrace=False)
    if "needs 8 devices" in child.stdout:  # A skip reason, listed by -ra.
        pytest.fail(f"{module} skipped checks, so it did not get 8 devices:\n{report}")
    # A lenient optax_bug xfail that passed (helpers/optax_bugs.py): shown, not a failure.
    for line in child.stdout.splitlines():
        if line.startswith("XPASS"):
            warnings.warn(f"{module}: {line}", stacklevel=2)


@pytest.mark.slow
def test_jit_named_sharding_on_8_devices() -> None:
    run_checks_on_8_devices("sharding_jit_checks.py")


@pytest.mark.slow
def test_shard_map_axis_name_on_8_devices() -> None:
    run_checks_on_8_devices("sharding_shard_map_checks.py")


@pytest.mark.slow
def test_scaling_out_doc_snippets_on_8_devices() -> None:
    run_checks_on_8_devices("sharding_docs_checks.py")


@pytest.mark.slow
def test_sharded_benchmark_smoke(tmp_path: Path) -> None:
    """``python -m benchmarks.bench_sharded --quick`` runs; agc reduces only norm arrays."""
    out = tmp_path / "sharded_update.json"
    command = [sys.executable, "-m", "benchmarks.bench_sharded", "--quick"]
    command += ["--repeats", "1", "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    child = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert child.returncode == 0, f"{child.stdout}\n{child.stderr}"
    results = json.loads(out.read_text())
    ours = [row for row in results["rows"] if row["variant"] == "agc"]
    assert {row["layout"] for row in ours} == {"unsharded", "fsdp", "tp", "fsdp+tp"}
    for row in ours:
        assert row["status"] == "ok", row
        assert row["all_gathers"] == 0 and set(row["collectives"]) <= {"all-reduce"}, row
        assert row["sharding_kept"] and row["max_relative_error"] <= 1e-6, row
        # Norm arrays only: less than the parameters each device holds, though counted
        # from the HLO they include the overflow branch's two norm arrays per leaf,
        # which move only in a step where a sum of squares overflowed.
        assert row["bytes_across_devices"] < row["param_bytes_per_device"], row
    assert "layout" in child.stdout and "bytes/device" in child.stdout
