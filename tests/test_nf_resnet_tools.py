"""The NF-ResNet example's command line, plotting command and train-step benchmark."""

import dataclasses
import json
import pathlib
import subprocess
import sys

import pytest

from examples.nf_resnet import cli, configs, plot

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_every_override_flag_sets_its_config_field():
    fields = {f.name for f in dataclasses.fields(configs.TrainConfig)}
    assert set(cli._OVERRIDES.values()) <= fields
    config, workdir, resume = cli.parse(
        ["--preset", "cpu", "--batch-size", "4096", "--microbatch-size", "256", "--agc-eps",
         "1e-2", "--agc-exclude", "^head/|skip_gain", "--steps", "30", "--workdir", "w"])
    assert (config.batch_size, config.microbatch_size, config.steps) == (4096, 256, 30)
    assert (config.agc_eps, config.agc_exclude) == (1e-2, "^head/|skip_gain")
    assert config.lr == configs.get_config("cpu").lr  # not given: the preset's
    assert workdir == pathlib.Path("w") and not resume


def fake_run(directory: pathlib.Path, clipping: float, diverged: bool = False) -> pathlib.Path:
    directory.mkdir(parents=True)
    records = [{"step": 10, "epoch": 0.5, "train_loss": 2.0},
               {"step": 20, "epoch": 1.0, "train_loss": 1.0},
               {"step": 20, "epoch": 1.0, "test_loss": 1.1, "test_accuracy": 0.6}]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = {"model": "nf_resnet_cpu", "batch_size": 128, "lr": 0.8, "clipping": clipping,
              "clip_global_norm": 0.0}
    (directory / "summary.json").write_text(json.dumps({"config": config, "diverged": diverged}))
    return directory


def test_runs_are_labelled_by_the_settings_that_differ(tmp_path):
    runs = [plot.load_run(fake_run(tmp_path / "a", 0.16)),
            plot.load_run(fake_run(tmp_path / "b", 0.0, diverged=True))]
    assert plot.labels(runs) == ["λ=0.16", "no AGC (diverged)"]


def test_plot_writes_a_png(tmp_path):
    runs = [fake_run(tmp_path / "a", 0.16), fake_run(tmp_path / "b", 0.04)]
    assert plot.main([*map(str, runs), "--out", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_refuses_a_directory_without_metrics(tmp_path):
    with pytest.raises(SystemExit):
        plot.main([str(tmp_path), "--out", str(tmp_path / "x.png")])


@pytest.mark.slow
def test_train_step_benchmark_quick_run_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_train_step", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "overhead" in result.stdout
    data = json.loads(out.read_text())
    (case,) = data["results"]
    assert case["with_agc"]["median_ms"] > 0 and case["no_agc"]["median_ms"] > 0
