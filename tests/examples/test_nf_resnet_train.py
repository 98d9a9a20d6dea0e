"""The NF-ResNet example's training loop on a real Fashion-MNIST subset.

Needs Fashion-MNIST (Debian's dataset-fashion-mnist, $AGC_OPTAX_DATA or the cache): the
``requires_fashion_mnist`` tests are skipped when it is missing, or fail in CI.
"""

import dataclasses
import functools
import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from examples.common import datasets, devices, reporting
from examples.nf_resnet import configs, main, train
from experiments.runs import read_run

REPO = pathlib.Path(__file__).resolve().parents[2]
TRAIN_FIELDS = {"step", "train_loss", "train_accuracy", "learning_rate", "clip_fraction",
                "grad_norm", "clipped_grad_norm", "max_ratio", "images_per_second"}
EVAL_FIELDS = {"step", "epoch", "test_loss", "test_accuracy"}
SUMMARY_FIELDS = {"final_test_accuracy", "best_test_accuracy", "steps", "wall_seconds",
                  "images_per_second", "device_kind", "num_devices", "diverged", "config"}

# 1024 training examples in batches of 64: 16 steps per epoch.
TINY = dataclasses.replace(configs.get_config("smoke"), train_examples=1024, test_examples=500,
                           batch_size=64, eval_batch_size=250, steps=24, log_every_steps=4,
                           lr=1.6)


def read_metrics(workdir: pathlib.Path) -> tuple[list[dict], list[dict]]:
    run = read_run(workdir)
    return run.train, run.evals


def saved_params(workdir: pathlib.Path, step: int, part: str = "params") -> list[np.ndarray]:
    """A checkpoint's ``params`` (or ``batch_stats``) as NumPy arrays, from any devices."""
    path = (workdir / "checkpoints" / str(step) / "state").absolute()
    checkpointer = ocp.StandardCheckpointer()
    metadata = checkpointer.metadata(path).item_metadata
    target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), metadata)
    restored = checkpointer.restore(path, target)
    return [np.asarray(x) for x in jax.tree.leaves(restored[part])]


@pytest.mark.requires_fashion_mnist
@pytest.mark.slow
def test_smoke_training_lowers_the_loss_and_writes_every_file(tmp_path):
    config = dataclasses.replace(TINY, steps=48)
    summary = train.train_and_evaluate(config, tmp_path)
    records, evals = read_metrics(tmp_path)
    assert all(TRAIN_FIELDS <= r.keys() for r in records)
    assert all(EVAL_FIELDS <= r.keys() for r in evals)
    assert [r["step"] for r in evals] == [16, 32, 48]
    assert records[-1]["train_loss"] < records[0]["train_loss"] - 0.3
    assert 0 < records[-1]["clip_fraction"] < 1
    # Some units were clipped: the norm fell, and the largest ratio is above λ.
    last = records[-1]
    assert 0 < last["clipped_grad_norm"] < last["grad_norm"]
    assert last["max_ratio"] > config.clipping
    by_param = records[-1]["clip_fraction_by_param"]
    assert set(by_param) == {"kernel", "bias", "gain", "skip_gain"}  # not the excluded head
    assert all(0 <= v <= 1 for v in by_param.values())
    # Zero-initialised skip gains sit at AGC's ε floor: clipped whenever they get a gradient.
    assert by_param["skip_gain"] > by_param["kernel"]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert SUMMARY_FIELDS <= summary.keys()
    assert summary["steps"] == 48 and not summary["diverged"] and summary["num_devices"] == 1
    assert summary["final_test_accuracy"] > 0.2  # Chance is 0.1; 48 steps of a tiny model.
    assert summary["config"]["batch_size"] == 64


@pytest.mark.requires_fashion_mnist
@pytest.mark.slow
@pytest.mark.parametrize("model", ["nf_resnet_nano", "bn_resnet_nano"])
def test_resume_after_ctrl_c_ends_with_the_uninterrupted_parameters(tmp_path, monkeypatch,
                                                                     model):
    config = dataclasses.replace(TINY, model=model)
    uninterrupted = train.train_and_evaluate(config, tmp_path / "a")

    train_record = reporting.RunLog.train_record

    def press_ctrl_c_at_step_8(log, step, *args):
        record = train_record(log, step, *args)
        if step == 8:
            os.kill(os.getpid(), signal.SIGINT)
        return record

    monkeypatch.setattr(reporting.RunLog, "train_record", press_ctrl_c_at_step_8)
    interrupted = train.train_and_evaluate(config, tmp_path / "b")
    assert interrupted["interrupted"] and interrupted["steps"] == 8
    monkeypatch.undo()
    resumed = train.train_and_evaluate(config, tmp_path / "b", resume=True)

    assert resumed["resumed_from_step"] == 8 and resumed["steps"] == 24
    for part in ("params", "batch_stats"):  # batch_stats: BatchNorm's running averages.
        for a, b in zip(saved_params(tmp_path / "a", 24, part),
                        saved_params(tmp_path / "b", 24, part), strict=True):
            np.testing.assert_array_equal(a, b)
    # BatchNorm: a mean and a variance for each of 2 norms in 2 blocks, and the final norm.
    statistics = saved_params(tmp_path / "a", 24, "batch_stats")
    assert len(statistics) == (0 if model.startswith("nf_") else 10)
    # Means start at 0, variances at 1: training moved them all.
    assert all(not np.allclose(s, 0.0) and not np.allclose(s, 1.0) for s in statistics)
    assert resumed["final_test_accuracy"] == uninterrupted["final_test_accuracy"]
    records_a, _ = read_metrics(tmp_path / "a")
    records_b, _ = read_metrics(tmp_path / "b")
    assert [r["step"] for r in records_b] == [r["step"] for r in records_a]
    assert [r["train_loss"] for r in records_b] == [r["train_loss"] for r in records_a]


@pytest.mark.parametrize("flags", [["--clipping", "0"],
                                   ["--clipping", "0", "--clip-global-norm", "1.0"],
                                   ["--clip-global-norm", "0.5"]])
@pytest.mark.requires_fashion_mnist
def test_agc_off_and_the_global_norm_baseline_run_from_the_command_line(tmp_path, flags):
    argv = ["--preset", "smoke", "--steps", "4", "--train-examples", "512",
            "--log-every-steps", "2", "--workdir", str(tmp_path), *flags]
    assert main.main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    records, _ = read_metrics(tmp_path)
    assert summary["steps"] == 4 and np.isfinite(records[-1]["train_loss"])
    agc_on = "--clipping" not in flags
    assert (records[-1]["clip_fraction"] is not None) == agc_on
    assert (records[-1]["clip_fraction_by_param"] is not None) == agc_on
    for name in ("grad_norm", "clipped_grad_norm", "max_ratio"):
        assert (records[-1][name] is not None) == agc_on
    assert summary["config"]["clip_global_norm"] == (0.0 if "--clip-global-norm" not in flags
                                                     else float(flags[-1]))


@pytest.mark.requires_fashion_mnist
@pytest.mark.slow
def test_microbatches_give_the_full_batch_step(tmp_path):
    config = dataclasses.replace(TINY, steps=3, log_every_steps=1)
    full = train.train_and_evaluate(config, tmp_path / "full")
    split = train.train_and_evaluate(dataclasses.replace(config, microbatch_size=16),
                                     tmp_path / "split")
    assert split["steps"] == full["steps"] == 3
    records_full, _ = read_metrics(tmp_path / "full")
    records_split, _ = read_metrics(tmp_path / "split")
    for a, b in zip(records_full, records_split, strict=True):
        np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-5)
        np.testing.assert_allclose(b["train_accuracy"], a["train_accuracy"], rtol=1e-6)
        assert b["clip_fraction"] == pytest.approx(a["clip_fraction"])
    leaves_full = saved_params(tmp_path / "full", 3)
    leaves_split = saved_params(tmp_path / "split", 3)
    assert any(np.any(leaf != 0) for leaf in leaves_full)  # Training moved something.
    for a, b in zip(leaves_full, leaves_split, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.requires_fashion_mnist
def test_accumulating_microbatches_computes_the_whole_batch_step():
    config = dataclasses.replace(TINY, microbatch_size=16)
    data = datasets.load(config.dataset, train_examples=64)
    state, static = train.create_train_state(
        config, num_classes=data.num_classes, in_features=1,
        mean=np.float32([0.3]), std=np.float32([0.3]), total_steps=4, steps_per_epoch=16)
    batch = {"image": data.train_images, "label": data.train_labels}
    assert devices.num_microbatches(config) == 4
    step = lambda count: jax.jit(functools.partial(  # noqa: E731
        train.train_step, static=static, microbatches=count))
    (state_a, metrics_a), (state_b, metrics_b) = step(1)(state, batch), step(4)(state, batch)
    assert int(state_b.step) == 1
    for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7)
    assert jax.tree.structure(metrics_a) == jax.tree.structure(metrics_b)
    np.testing.assert_allclose(metrics_b["loss"], metrics_a["loss"], rtol=1e-5)  # float32 sums
    np.testing.assert_allclose(metrics_b["accuracy"], metrics_a["accuracy"], rtol=1e-6)


@pytest.mark.parametrize("microbatch_size", [24, 40])
def test_a_microbatch_size_that_does_not_divide_the_batch_is_refused(microbatch_size):
    config = dataclasses.replace(TINY, microbatch_size=microbatch_size)
    with pytest.raises(ValueError, match=r"--microbatch-size .* must divide --batch-size 64"
                                         r".*e\.g\. --microbatch-size (16|32)"):
        devices.num_microbatches(config)


@pytest.mark.requires_fashion_mnist
def test_a_non_finite_loss_stops_the_run_cleanly(tmp_path):
    config = dataclasses.replace(TINY, lr=1e30, clipping=0.0, steps=8, log_every_steps=1)
    summary = train.train_and_evaluate(config, tmp_path)
    assert summary["diverged"] and summary["steps"] < 8


@pytest.mark.requires_fashion_mnist
def test_a_diverged_run_exits_with_1(tmp_path, capfd):
    """Divergence is a failed run to a shell or a scheduler, not a success."""
    argv = ["--preset", "smoke", "--train-examples", "1024", "--test-examples", "500",
            "--batch-size", "64", "--lr", "1e30", "--clipping", "0", "--steps", "4",
            "--log-every-steps", "1", "--workdir", str(tmp_path)]
    assert main.main(argv) == 1
    assert "The run diverged" in capfd.readouterr().err


@pytest.mark.requires_fashion_mnist
@pytest.mark.slow
@pytest.mark.parametrize("model", ["nf_resnet_nano", "bn_resnet_nano"])
@pytest.mark.parametrize("microbatches", [[], ["--microbatch-size", "64"]],
                         ids=["whole_batch", "two_microbatches"])
def test_eight_simulated_devices_match_one_device(tmp_path, microbatches, model):
    # With BatchNorm this checks that the statistics are those of the global batch (or
    # microbatch): each device's share alone would normalize differently.
    flags = ["--preset", "smoke", "--model", model, "--steps", "1", "--train-examples", "1024",
             "--log-every-steps", "1", *microbatches]
    assert main.main([*flags, "--workdir", str(tmp_path / "one")]) == 0
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "examples.nf_resnet.train", *flags,
         "--workdir", str(tmp_path / "eight")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "eight" / "summary.json").read_text())
    assert summary["num_devices"] == 8
    (one,), _ = read_metrics(tmp_path / "one")
    (eight,), _ = read_metrics(tmp_path / "eight")
    np.testing.assert_allclose(eight["train_loss"], one["train_loss"], rtol=1e-5)
    for part in ("params", "batch_stats"):
        for a, b in zip(saved_params(tmp_path / "one", 1, part),
                        saved_params(tmp_path / "eight", 1, part), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
