"""The trainer under faults and mistakes: bad flags, reused work directories, signals, disks.

The tests that train or read the data need Fashion-MNIST (Debian's dataset-fashion-mnist,
$AGC_OPTAX_DATA or the cache).
Processes are started and signalled for real: SIGTERM as a scheduler sends it, kill -9
while a checkpoint is being written.
"""

import builtins
import dataclasses
import errno
import gzip
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from examples.common import checkpointing, datasets, runs, workdir
from examples.common.errors import UserError
from examples.nf_resnet import configs, main, train
from experiments.runs import read_run

REPO = pathlib.Path(__file__).resolve().parents[2]
FASHION = datasets.locate("fashion_mnist")
# 512 training examples in batches of 64: 8 steps per epoch, a checkpoint every 8 steps.
TINY = dataclasses.replace(configs.get_config("smoke"), train_examples=512, test_examples=250,
                           batch_size=64, eval_batch_size=250, steps=24, log_every_steps=4)
TINY_FLAGS = ["--preset", "smoke", "--train-examples", "512", "--test-examples", "250",
              "--batch-size", "64", "--eval-batch-size", "250", "--steps", "24",
              "--log-every-steps", "4"]


def final_params(run_dir: pathlib.Path) -> list[np.ndarray]:
    """The parameters of a run's newest checkpoint, as NumPy arrays."""
    step = max(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    path = (run_dir / "checkpoints" / str(step) / "state").absolute()
    checkpointer = ocp.StandardCheckpointer()
    metadata = checkpointer.metadata(path).item_metadata
    restored = checkpointer.restore(
        path, jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), metadata))
    return [np.asarray(x) for x in jax.tree.leaves(restored["params"])]


def start_trainer(workdir_: pathlib.Path, *flags: str, prelude: str = "") -> subprocess.Popen:
    """Starts the CLI in a subprocess (after ``prelude``, Python run first in that process)."""
    code = (f"{prelude}\nimport sys\nfrom examples.nf_resnet import main\n"
            f"sys.exit(main.main({[*TINY_FLAGS, '--workdir', str(workdir_), *flags]!r}))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, timeout: float = 240) -> None:
    """Polls ``condition`` every 20 ms until it holds; fails if the process ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[pathlib.Path, dict]:
    """An uninterrupted 24-step run, the reference of every resumed one."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    return run_dir, train.train_and_evaluate(TINY, run_dir)


# --- user errors: one line, exit status 2, the work directory left unclaimed ---------------

def truncated_fashion_mnist(tmp_path: pathlib.Path) -> str:
    data_dir = tmp_path / "fm"
    data_dir.mkdir()
    for name, path in FASHION.items():
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        (data_dir / name).write_bytes(raw[:1000] if name.startswith("t10k-images") else raw)
    return str(data_dir)


@pytest.mark.requires_fashion_mnist
@pytest.mark.parametrize(("flags", "expected"), [
    (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["--batch-size", "-8"], "--batch-size -8: must be at least 1"),
    (["--steps", "0"], "--steps 0: must be at least 1"),
    (["--clipping", "-1"], "--clipping -1.0: must be ≥ 0 (0 turns AGC off)"),
    (["--erase-probability", "1.5"], "--erase-probability 1.5: a probability, must be at most 1"),
    (["--agc-exclude", "^haed/"], "--agc-exclude '^haed/': exclude pattern '^haed/' matches no "
                                  "leaf"),
    (["--agc-exclude", "head/("], "--agc-exclude 'head/(': not a regular expression"),
    (["--microbatch-size", "48"], "--microbatch-size 48 must divide --batch-size 64"),
    (["--microbatch-size", "0"], "--microbatch-size 0: must be at least 1"),
    (["--cpu-devices", "0"], "--cpu-devices 0: must be at least 1"),
    (["--train-examples", "10"], "--train-examples 10 is smaller than --batch-size 64"),
    (["--data-dir", "{tmp}/missing"], "--data-dir {tmp}/missing: no such directory"),
    (["--data-dir", "{tmp}"], "--data-dir {tmp} does not hold the fashion_mnist files"),
    (["--data-dir", "{truncated}"], "t10k-images-idx3-ubyte: 1000 bytes but its header"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_user_error_is_one_line_and_exit_status_2(tmp_path, capsys, flags, expected):
    if "{truncated}" in flags:
        truncated = truncated_fashion_mnist(tmp_path)
        flags = [f.replace("{truncated}", truncated) for f in flags]
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    run_dir = tmp_path / "run"
    assert main.main([*TINY_FLAGS, "--workdir", str(run_dir), *flags]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert expected.replace("{tmp}", str(tmp_path)) in lines[0]
    # A refused run does not claim the directory: the corrected command runs there.
    assert workdir.existing_run_files(run_dir) == []


def test_a_user_error_in_a_process_prints_no_traceback(tmp_path):
    process = start_trainer(tmp_path / "run", "--batch-size", "0")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert err.strip().splitlines() == ["error: --batch-size 0: must be at least 1."]


def test_a_bad_flag_value_is_two_lines_not_the_whole_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        main.main(["--batch-size", "abc"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{main.PROG}: error: argument --batch-size: invalid int value: 'abc'",
        f"(see {main.PROG} --help)"]


# --- one run per work directory ------------------------------------------------------------

@pytest.mark.requires_fashion_mnist
@pytest.mark.slow
def test_a_work_directory_holding_a_run_is_refused_resumed_or_overwritten(tmp_path, capfd):
    run_dir = tmp_path / "run"
    assert main.main([*TINY_FLAGS, "--steps", "8", "--workdir", str(run_dir)]) == 0
    err = capfd.readouterr().err
    assert f"Outputs go to {run_dir}" in err and f"Outputs are in {run_dir}" in err
    assert sorted(workdir.existing_run_files(run_dir)) == sorted(workdir.RUN_FILES)

    def refusal(*flags: str) -> str:
        assert main.main([*TINY_FLAGS, "--steps", "8", "--workdir", str(run_dir), *flags]) == 2
        return capfd.readouterr().err

    err = refusal("--seed", "1")  # A new run: refused, naming both ways forward.
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    err = refusal("--seed", "1", "--resume")  # Resuming with other settings: refused.
    assert "--seed 0 -> 1" in err and "--overwrite" in err
    # Execution-only settings may change on --resume (the finished run is re-evaluated).
    assert main.main([*TINY_FLAGS, "--steps", "8", "--workdir", str(run_dir), "--resume",
                      "--microbatch-size", "32", "--log-every-steps", "2"]) == 0
    # --overwrite deletes the old run's checkpoints and records before the new run.
    assert main.main([*TINY_FLAGS, "--steps", "3", "--seed", "1", "--workdir", str(run_dir),
                      "--overwrite"]) == 0
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["3"]
    assert [r["step"] for r in read_run(run_dir).records] == [3, 3]
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 1


@pytest.mark.requires_fashion_mnist
@pytest.mark.slow
def test_a_batch_norm_run_resumes_only_with_its_own_microbatch_split(tmp_path, capfd):
    # BatchNorm normalizes each microbatch on its own: the split is part of what is computed.
    run_dir = tmp_path / "run"
    flags = [*TINY_FLAGS, "--model", "bn_resnet_nano", "--steps", "4", "--workdir", str(run_dir)]
    assert main.main(flags) == 0
    capfd.readouterr()
    assert main.main([*flags, "--resume", "--microbatch-size", "32"]) == 2
    err = capfd.readouterr().err.splitlines()
    assert err[-1].startswith(f"error: --resume: {run_dir} holds a run with other settings "
                              "(--microbatch-size None -> 32). This model normalizes each")
    assert main.main([*flags, "--resume", "--log-every-steps", "2"]) == 0


def test_an_unwritable_metrics_file_on_resume_is_a_user_error(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(TINY)))
    metrics = run_dir / runs.METRICS
    metrics.write_text('{"step": 4, "train_loss": 2.3}\n')
    real_open = builtins.open

    def read_only_metrics(file, mode="r", *args, **kwargs):
        if pathlib.Path(file) == metrics and set(mode) & set("wa+"):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only_metrics)  # Root ignores chmod.
    assert main.main([*TINY_FLAGS, "--workdir", str(run_dir), "--resume"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {metrics} is not writable (Permission denied); fix its permissions or pass "
        "another --workdir."]


# --- the host's lead over the devices -------------------------------------------------------

@pytest.mark.requires_fashion_mnist
def test_the_host_dispatches_at_most_two_steps_beyond_the_running_one(tmp_path, monkeypatch):
    """Hundreds of queued steps aborted XLA:CPU on two devices (``devices.MAX_STEPS_AHEAD``)."""
    events: list[tuple[str, int]] = []
    dispatched: list[object] = []
    set_up, block_until_ready = train.set_up, jax.block_until_ready

    def recording_set_up(config):
        setup = set_up(config)

        def recording_train_fn(state, batch):
            state, metrics = setup.train_fn(state, batch)
            events.append(("dispatch", len(dispatched)))
            dispatched.append(metrics)
            return state, metrics
        return setup._replace(train_fn=recording_train_fn)

    def recording_block_until_ready(x):
        events.extend(("wait", i) for i, m in enumerate(dispatched) if m is x)
        return block_until_ready(x)

    monkeypatch.setattr(train, "set_up", recording_set_up)
    monkeypatch.setattr(jax, "block_until_ready", recording_block_until_ready)
    # One training record, at the end: no fetch of the metrics bounds the queue meanwhile.
    train.train_and_evaluate(dataclasses.replace(TINY, steps=12, log_every_steps=100), tmp_path)
    assert len(dispatched) == 12
    for step in range(3, 12):  # Steps counted from 0: step k - 3 is done before k starts.
        assert events.index(("wait", step - 3)) < events.index(("dispatch", step)), events


# --- signals and failed writes -------------------------------------------------------------

@pytest.mark.requires_fashion_mnist
@pytest.mark.slow
def test_sigterm_checkpoints_the_current_step_and_resume_ends_bit_identical(
        tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    process = start_trainer(run_dir)
    wait_for(lambda: (run_dir / runs.METRICS).is_file()
             and (run_dir / runs.METRICS).read_text().strip(), process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    summary = json.loads((run_dir / runs.SUMMARY).read_text())
    stopped = summary["steps"]
    assert summary["interrupted"] and summary["stop_signal"] == "SIGTERM" and stopped < 24
    assert f"SIGTERM: saving a checkpoint at step {stopped}" in err
    assert str(stopped) in os.listdir(run_dir / "checkpoints")

    resumed = train.train_and_evaluate(TINY, run_dir, resume=True)
    assert resumed["resumed_from_step"] == stopped and resumed["steps"] == 24
    for a, b in zip(final_params(uninterrupted[0]), final_params(run_dir), strict=True):
        np.testing.assert_array_equal(a, b)
    assert resumed["final_test_accuracy"] == uninterrupted[1]["final_test_accuracy"]
    # The first record after the resume says how many steps it averages.
    first = next(r for r in read_run(run_dir).train if r["step"] > stopped)
    assert first["steps_in_record"] == first["step"] - stopped
    assert first["step"] == -(-(stopped + 1) // 4) * 4


# Run in the trainer's process: blocks the write of the step-16 checkpoint's JSON part
# (after its arrays are written), after saying so, until the process is killed.
BLOCK_THE_STEP_16_WRITE = """
import pathlib, time
from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler
original = handler.JsonCheckpointHandler._save_fn
async def save_fn(self, x, directory):
    if ".orbax-checkpoint-tmp" in str(directory) and "/16." in str(directory):
        pathlib.Path(MARKER).touch()
        time.sleep(600)
    return await original(self, x, directory)
handler.JsonCheckpointHandler._save_fn = save_fn
"""


@pytest.mark.requires_fashion_mnist
@pytest.mark.slow
def test_kill_9_during_a_checkpoint_write_resumes_from_the_last_complete_one(
        tmp_path, uninterrupted):
    run_dir, marker = tmp_path / "run", tmp_path / "writing"
    process = start_trainer(run_dir, prelude=f"MARKER = {str(marker)!r}\n"
                                             + BLOCK_THE_STEP_16_WRITE)
    wait_for(marker.exists, process)
    partial = [p.name for p in (run_dir / "checkpoints").iterdir()]
    assert any(name.startswith("16.orbax-checkpoint-tmp") for name in partial), partial
    process.kill()  # SIGKILL, mid-write.
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL

    resumed = train.train_and_evaluate(TINY, run_dir, resume=True)
    assert resumed["resumed_from_step"] == 8 and resumed["steps"] == 24
    for a, b in zip(final_params(uninterrupted[0]), final_params(run_dir), strict=True):
        np.testing.assert_array_equal(a, b)
    records = read_run(run_dir).records
    reference = read_run(uninterrupted[0]).records
    assert [r["step"] for r in records] == [r["step"] for r in reference]
    assert not [p for p in (run_dir / "checkpoints").iterdir() if "tmp" in p.name]


@pytest.mark.requires_fashion_mnist
@pytest.mark.slow
def test_a_failed_checkpoint_write_is_an_error_at_that_step(tmp_path, monkeypatch):
    from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler

    async def disk_full(self, x, directory):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(handler.JsonCheckpointHandler, "_save_fn", disk_full)
    with pytest.raises(UserError, match=r"Could not write the step-8 checkpoint to .*checkpoints"
                                        r" \(No space left on device\)"):
        train.train_and_evaluate(TINY, tmp_path)
    # Raised at step 8's save: no training step ran after it.
    assert read_run(tmp_path).records[-1]["step"] == 8


def test_a_writing_checkpointer_deletes_unfinished_writes_and_a_reader_does_not(tmp_path):
    unfinished = tmp_path / "16.orbax-checkpoint-tmp-1700000000"
    (unfinished / "state").mkdir(parents=True)
    checkpointing.Checkpointer(tmp_path, read_only=True).close()
    assert unfinished.exists()  # `evaluate` may read a directory a trainer still writes.
    writer = checkpointing.Checkpointer(tmp_path)  # Cleans up before its first save.
    assert writer.latest_step() is None  # An unfinished write is never restored.
    writer.save(8, {"x": np.zeros(3, np.float32)}, {"position": 8})
    writer.close()
    assert not unfinished.exists() and writer.all_steps() == [8]
