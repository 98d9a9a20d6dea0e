"""AGC across two processes joined by ``jax.distributed`` (gloo CPU collectives).

Two worker processes on 127.0.0.1 train a small MLP for a few steps on a
global batch split between them, with FSDP kernels so that AGC's norms cross
processes; a third process trains on the whole batch alone. Both workers must
end with the same parameters, equal to the single process's.

Each run is a subprocess: when a peer never connects, ``jax.distributed``
aborts the process (SIGABRT, exit 134) rather than raising, so the test reads
return codes and shows every process's log when one fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "helpers" / "multihost_train.py"
TIMEOUT_S = 240  # The whole run; about 10 s on an idle 2-core machine.
INIT_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # One device per process.
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def launch(tmp_path: Path) -> dict[str, tuple[int | None, str]]:
    """Starts the two workers and the reference; returns each one's exit code and log."""
    port = free_port()
    runs = {
        "process0": ["--coordinator", f"127.0.0.1:{port}", "--process-id", "0"],
        "process1": ["--coordinator", f"127.0.0.1:{port}", "--process-id", "1"],
        "reference": ["--reference"],
    }
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        for name, extra in runs.items():
            log = tmp_path / f"{name}.log"
            command = [sys.executable, str(WORKER), *extra, "--num-processes", "2"]
            command += ["--init-timeout", str(INIT_TIMEOUT_S), "--out", str(tmp_path / name)]
            with log.open("w") as stream:
                procs[name] = (
                    subprocess.Popen(
                        command, cwd=REPO, env=child_env(), stdout=stream, stderr=subprocess.STDOUT
                    ),
                    log,
                )
        deadline = time.monotonic() + TIMEOUT_S
        for proc, _ in procs.values():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                break
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {name: (proc.returncode, log.read_text()) for name, (proc, log) in procs.items()}


def explain(code: int | None) -> str:
    if code in (134, -signal.SIGABRT):
        return "aborted: a peer never joined jax.distributed.initialize"
    if code in (-signal.SIGKILL,):
        return f"killed after the {TIMEOUT_S} s limit"
    return f"exit {code}"


@pytest.mark.slow
def test_two_processes_train_like_one_process(tmp_path: Path) -> None:
    results = launch(tmp_path)
    failed = {name: r for name, r in results.items() if r[0] != 0}
    if failed:
        logs = "\n".join(
            f"--- {name}: {explain(code)} ---\n{log[-4000:]}"
            for name, (code, log) in results.items()
        )
        pytest.fail(f"{sorted(failed)} failed:\n{logs}", pytrace=False)

    p0, p1, ref = (np.load(tmp_path / f"{n}.npz") for n in ("process0", "process1", "reference"))
    summary = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in results}
    assert summary["process0"]["processes"] == 2 and summary["process0"]["devices"] == 2
    assert sorted(p0.files) == sorted(ref.files)

    for key in ref.files:
        # The two processes hold bit-identical parameters (gathered kernels and
        # their own copies of the replicated biases) ...
        np.testing.assert_array_equal(p0[key], p1[key], err_msg=key)
        # ... equal, up to float32 summation order, to one process on the whole batch.
        scale = np.max(np.abs(ref[key]))
        np.testing.assert_allclose(p0[key], ref[key], rtol=1e-5, atol=1e-6 * scale, err_msg=key)

    # AGC did clip during those steps, with the same decisions everywhere.
    fractions = [summary[n]["clip_fractions"] for n in results]
    assert fractions[0] == fractions[1]
    np.testing.assert_allclose(fractions[0], fractions[2], rtol=1e-6)
    assert 0 < min(fractions[0]) and max(fractions[0]) < 1, fractions[0]

    # Between processes AGC sends only its per-unit norm arrays (at most 32 units a layer).
    assert summary["process0"]["agc_collective_kinds"] == ["all-reduce"], summary["process0"]
    assert 0 < summary["process0"]["agc_largest_operand"] <= 32, summary["process0"]
