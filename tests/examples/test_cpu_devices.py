"""``--cpu-devices``: the CPU split into JAX devices trains data-parallel, as one device does.

The training test needs Fashion-MNIST (Debian's dataset-fashion-mnist, $AGC_OPTAX_DATA or
the cache) and starts the command line in a child process: JAX fixes its CPU devices when
it starts, so this process (one device) cannot be split.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from examples.common.devices import use_cpu_devices
from examples.common.errors import UserError
from examples.vit import configs, train
from experiments.runs import read_run

REPO = pathlib.Path(__file__).resolve().parents[2]
FLAGS = ["--preset", "smoke", "--train-examples", "1024", "--test-examples", "500",
         "--batch-size", "64", "--eval-batch-size", "250", "--steps", "4",
         "--log-every-steps", "1"]
CONFIG = dataclasses.replace(configs.get_config("smoke"), train_examples=1024,
                             test_examples=500, batch_size=64, eval_batch_size=250, steps=4,
                             log_every_steps=1)


def test_a_started_jax_keeps_its_devices_and_says_so_when_asked_for_others():
    count = jax.local_device_count()  # Starts the backends, if no test has yet.
    use_cpu_devices(None)
    use_cpu_devices(count)  # What JAX already has: nothing to do.
    with pytest.raises(UserError, match=rf"--cpu-devices {count + 1}: JAX already runs on "
                                        rf"{count} CPU device\(s\).*start a new process"):
        use_cpu_devices(count + 1)
    assert jax.local_device_count() == count


@pytest.mark.slow
@pytest.mark.requires_fashion_mnist
def test_two_cpu_devices_train_as_one_does_and_a_run_resumes_on_either(tmp_path):
    assert jax.local_device_count() == 1, "this test compares with a one-device run"
    train.train_and_evaluate(CONFIG, tmp_path / "one")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run(
        [sys.executable, "-m", "examples.vit.main", *FLAGS, "--cpu-devices", "2",
         "--workdir", str(tmp_path / "two")],
        cwd=REPO, env={**env, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 cpu device(s)" in result.stderr
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["num_devices"] == 2 and summary["config"]["cpu_devices"] == 2
    one, two = read_run(tmp_path / "one"), read_run(tmp_path / "two")
    np.testing.assert_allclose([r["train_loss"] for r in two.train],
                               [r["train_loss"] for r in one.train], rtol=1e-5)
    # The split is how the run was computed, not what: one device may continue it.
    resumed = train.train_and_evaluate(CONFIG, tmp_path / "two", resume=True)
    assert resumed["final_test_accuracy"] == pytest.approx(summary["final_test_accuracy"],
                                                           abs=2e-3)
