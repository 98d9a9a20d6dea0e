"""The NF-ResNet trainer on two processes joined by ``jax.distributed``, stopped by one SIGTERM.

Two processes on 127.0.0.1, launched by hand as the README's multi-host section says
(``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``; gloo collectives on
the CPU), train one run in one work directory. A scheduler may signal one host before the
others: SIGTERM to process 1 alone must stop both at the same step, with one checkpoint of
that step, and ``--resume`` on both must finish the run. A process that stopped alone would
leave the other waiting for its collectives until the test's timeout.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT_S = 300
# 1024 examples in global batches of 64 (32 a process): 16 steps an epoch, 64 steps.
FLAGS = ["--preset", "smoke", "--train-examples", "1024", "--test-examples", "256",
         "--batch-size", "64", "--eval-batch-size", "128", "--epochs", "4",
         "--log-every-steps", "1"]

pytestmark = [pytest.mark.requires_fashion_mnist, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(workdir: pathlib.Path, port: int, *extra: str) -> list[subprocess.Popen]:
    """Starts the trainer's command line as processes 0 and 1 of a two-process job."""
    processes = []
    for process_id in (0, 1):
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # One device each.
        env |= {"JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(process_id), "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}
        command = [sys.executable, "-m", "examples.nf_resnet.main", *FLAGS,
                   "--workdir", str(workdir), *extra]
        processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    return processes


def finish(processes: list[subprocess.Popen]) -> list[tuple[int, str]]:
    """Each process's exit status and output; kills what is left after the timeout."""
    deadline = time.monotonic() + TIMEOUT_S
    results = []
    for process in processes:
        try:
            output, _ = process.communicate(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            output, _ = process.communicate()
        results.append((process.returncode, output))
    return results


def recorded_steps(workdir: pathlib.Path) -> int:
    path = workdir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def test_sigterm_to_one_process_stops_both_at_one_step_and_resume_finishes(tmp_path):
    workdir = tmp_path / "run"
    processes = start(workdir, free_port())
    deadline = time.monotonic() + TIMEOUT_S
    while recorded_steps(workdir) < 4:  # Training, past compilation.
        assert all(p.poll() is None for p in processes), finish(processes)
        assert time.monotonic() < deadline, "no training record in time"
        time.sleep(0.05)
    processes[1].send_signal(signal.SIGTERM)
    (status0, log0), (status1, log1) = finish(processes)
    assert (status0, status1) == (143, 143), f"{log0[-3000:]}\n---\n{log1[-3000:]}"
    summary = json.loads((workdir / "summary.json").read_text())
    stopped = summary["steps"]
    assert summary["interrupted"] and summary["stop_signal"] == "SIGTERM"
    assert summary["num_processes"] == 2 and 4 <= stopped < 64
    assert f"SIGTERM: saving a checkpoint at step {stopped}" in log0
    assert str(stopped) in os.listdir(workdir / "checkpoints")

    resumed = finish(start(workdir, free_port(), "--resume"))
    assert [status for status, _ in resumed] == [0, 0], "\n---\n".join(
        log[-3000:] for _, log in resumed)
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["resumed_from_step"] == stopped and summary["steps"] == 64
    assert not summary["interrupted"] and summary["final_test_accuracy"] > 0.3
