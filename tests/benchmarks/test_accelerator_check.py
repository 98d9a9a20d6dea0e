"""scripts/accelerator_check.sh and its summary (benchmarks/check_summary.py).

The check is meant for an accelerator; ``--quick`` runs its every step at toy sizes on a
CPU, so the script cannot rot between the rare minutes an accelerator is lent.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import _common, check_summary
from examples.common import datasets

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "accelerator_check.sh"
STEPS = ["device tests", "bench_agc", "bench_train_step", "gpu preset"]


def run_check(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_unknown_arguments_are_refused_with_a_pointer_to_help():
    child = run_check("--quik")
    assert child.returncode == 2
    assert "unknown argument '--quik'; see --help" in child.stderr


def test_the_full_check_refuses_to_start_without_an_accelerator(tmp_path):
    child = run_check("--out", str(tmp_path))
    assert child.returncode == 2, child.stdout + child.stderr
    assert "found no GPU or TPU" in child.stderr and "--quick" in child.stderr
    assert "[check] device: 1 x cpu (cpu)" in child.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_quick_check_runs_every_step_and_writes_its_results_where_told(tmp_path):
    results_before = sorted(p.name for p in (REPO / "benchmarks" / "results").iterdir())

    child = run_check("--quick", "--out", str(tmp_path))

    report = child.stdout + child.stderr
    assert child.returncode == 0, report
    slug = _common.machine_slug(_common.machine_info())
    check = json.loads((tmp_path / f"accelerator_check_{slug}.json").read_text())
    statuses = {s["step"]: s["status"] for s in check["steps"]}
    assert list(statuses) == STEPS, report
    assert statuses["device tests"] == statuses["bench_agc"] == "ok", report
    assert statuses["bench_train_step"] == "ok", report
    train_step = json.loads((tmp_path / f"train_step_{slug}.json").read_text())
    assert train_step["complete"] and train_step["results"], report
    assert set(json.loads((tmp_path / f"agc_update_{slug}.json").read_text())["trees"])
    if datasets.locate("fashion_mnist") is None:
        assert statuses["gpu preset"] == "skipped", report
    else:
        assert statuses["gpu preset"] == "stopped at 25 s", report
        preset = json.loads((tmp_path / f"gpu_preset_{slug}.json").read_text())
        assert preset["interrupted"] and preset["stop_signal"] == "SIGINT", report
        assert preset["steps"] >= 1
    assert "[check] device: " in child.stdout
    assert "bench_train_step: step time ratios" in child.stdout
    assert sorted(p.name for p in (REPO / "benchmarks" / "results").iterdir()) == results_before


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TRAIN_STEP = {
    "complete": False, "skipped": {"nfnet_f0": "no such model yet"}, "failed": {},
    "results": [{"case": {"model": "nf_resnet_50", "per_device_batch": 128, "devices": 1,
                          "image_size": 224},
                 "variants": {"sgd": {"median_ms": 100.0}},
                 "ratios": {"sgd+agc/sgd": {"of_medians": 1.02, "paired": 1.01}}}],
}


def test_summary_table_shows_steps_ratios_skips_and_cut_runs(tmp_path, capsys):
    status = _write(tmp_path / "status.tsv", "device tests\tok\t41\t88 passed in 40s\n"
                    "bench_train_step\tstopped at 150 s\t150\t\n"
                    "gpu preset\tskipped\t0\tFashion-MNIST not found\n")
    _write(tmp_path / "train_step_gpu-1x-h.json", json.dumps(TRAIN_STEP))

    code = check_summary.main(["--status", str(status), "--results", str(tmp_path),
                               "--slug", "gpu-1x-h", "--seconds", "300", "--budget", "330"])

    out = capsys.readouterr().out
    assert code == 0
    assert "88 passed in 40s" in out and "stopped at 150 s" in out
    assert "nf_resnet_50, 128/device x 1, 224²: sgd 100.0 ms/step; " \
           "sgd+agc/sgd 1.020 (paired 1.010)" in out
    assert "nfnet_f0: skipped, no such model yet" in out
    assert "incomplete: the step was stopped before its last case" in out
    written = json.loads((tmp_path / "accelerator_check_gpu-1x-h.json").read_text())
    assert [s["step"] for s in written["steps"]] == ["device tests", "bench_train_step",
                                                     "gpu preset"]
    assert written["result_files"] == {"train_step": "train_step_gpu-1x-h.json"}


def test_a_preset_that_left_no_summary_fails_the_check(tmp_path, capsys):
    status = _write(tmp_path / "status.tsv", "gpu preset\tstopped at 60 s\t61\t\n")

    code = check_summary.main(["--status", str(status), "--results", str(tmp_path),
                               "--slug", "gpu-1x-h"])

    assert code == 1
    assert "no summary.json" in capsys.readouterr().out
