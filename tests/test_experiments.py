"""The experiment driver: resumes a half-finished grid, regenerates figures from stored runs."""

from __future__ import annotations

import json
import pathlib

import pytest

from examples.nf_resnet import experiments

TINY = experiments.Experiment(
    name="tiny",
    question="Two smoke runs, with and without AGC.",
    preset="smoke",
    common_flags=("--steps", "6", "--train-examples", "512", "--log-every-steps", "2"),
    runs=(
        experiments.Run("agc", ("--clipping", "0.16"), {"clip": "AGC λ=0.16"}),
        experiments.Run("none", ("--clipping", "0"), {"clip": "no clipping"}),
    ),
)


@pytest.mark.slow
def test_driver_resumes_a_half_finished_grid_and_reports_from_stored_runs(tmp_path):
    launched = []

    def counting_launch(command, workdir):
        launched.append(workdir.name)
        return experiments._launch_subprocess(command, workdir)

    runs_dir = tmp_path / "runs"
    first = experiments.run_experiment(TINY, runs_dir, only=["agc"], launch=counting_launch)
    assert first == {"agc": "ran"}, (runs_dir / "tiny/agc/train.log").read_text()
    summary_before = (runs_dir / "tiny/agc/summary.json").read_text()

    second = experiments.run_experiment(TINY, runs_dir, launch=counting_launch)
    assert second == {"agc": "done", "none": "ran"}
    assert launched == ["agc", "none"]  # the finished run was not launched again
    assert (runs_dir / "tiny/agc/summary.json").read_text() == summary_before

    # Figures come from the stored files alone: copy them elsewhere and report from there.
    stored = tmp_path / "stored"
    for run in ("agc", "none"):
        (stored / "tiny" / run).mkdir(parents=True)
        for name in ("metrics.jsonl", "summary.json"):
            source = runs_dir / "tiny" / run / name
            (stored / "tiny" / run / name).write_bytes(source.read_bytes())
    figures = tmp_path / "figures"
    written = experiments.report_experiment(TINY, stored, figures, kind="with_without_agc")
    assert {p.name for p in written} == {"tiny.png", "tiny.md"}
    assert (figures / "tiny.png").stat().st_size > 10_000
    table = (figures / "tiny.md").read_text()
    assert "AGC λ=0.16" in table and "no clipping" in table
    summary = json.loads(summary_before)
    assert f"{summary['final_test_accuracy']:.4f}" in table


def test_report_without_runs_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="experiments run tiny"):
        experiments.report_experiment(TINY, tmp_path, tmp_path / "figures")


def test_unknown_run_name_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="No run named"):
        experiments.run_experiment(TINY, tmp_path, only=["typo"], dry_run=True)


def test_every_named_experiment_is_well_formed():
    for name, build in experiments.EXPERIMENTS.items():
        experiment = build()
        assert experiment.name == name
        assert name in experiments.REPORTS
        names = [run.name for run in experiment.runs]
        assert len(names) == len(set(names))
        command = experiment.command(experiment.runs[0], pathlib.Path("w"))
        assert command[1:3] == ["-m", "examples.nf_resnet.train"]


def test_grids_cover_the_issue(tmp_path):
    sweep = experiments.EXPERIMENTS["clipping_sweep"]()
    pairs = {(r.labels["batch_size"], r.labels["clipping"]) for r in sweep.runs}
    assert pairs == {(b, c) for b in (256, 1024, 4096) for c in experiments.CLIPPINGS}
    large = experiments.EXPERIMENTS["large_batch"]()
    assert {r.labels["batch_size"] for r in large.runs} == {256, 1024, 4096}


def test_a_stored_run_with_other_flags_is_not_counted_as_done(tmp_path):
    run = TINY.runs[0]
    workdir = tmp_path / TINY.name / run.name
    workdir.mkdir(parents=True)
    (workdir / "summary.json").write_text("{}")
    command = TINY.command(run, workdir)
    (workdir / "run.json").write_text(json.dumps({"command": command[1:]}))
    assert experiments.run_experiment(TINY, tmp_path, only=[run.name]) == {run.name: "done"}
    changed = [*command[1:-1], "0.32"]  # another λ
    (workdir / "run.json").write_text(json.dumps({"command": changed}))
    with pytest.raises(ValueError, match="Delete that directory"):
        experiments.run_experiment(TINY, tmp_path, only=[run.name])


def test_a_stored_run_without_an_execution_only_flag_still_counts_as_done(tmp_path):
    run = TINY.runs[0]
    workdir = tmp_path / TINY.name / run.name
    workdir.mkdir(parents=True)
    (workdir / "summary.json").write_text("{}")
    (workdir / "run.json").write_text(json.dumps({"command": TINY.command(run, workdir)[1:]}))
    microbatched = experiments.Experiment(
        TINY.name, TINY.question, TINY.preset, (*TINY.common_flags, "--microbatch-size", "8"),
        TINY.runs)
    assert experiments.run_experiment(microbatched, tmp_path, only=[run.name]) == {
        run.name: "done"}


def test_large_batches_of_the_grids_run_as_microbatches():
    for run in experiments.EXPERIMENTS["clipping_sweep"]().runs:
        microbatched = "--microbatch-size" in run.flags
        assert microbatched == (run.labels["batch_size"] > experiments.CPU_MICROBATCH)


def test_clipping_long_report_draws_the_clip_fraction_per_parameter_kind(tmp_path):
    experiment = experiments.EXPERIMENTS["clipping_long"]()
    for index, run in enumerate(experiment.runs[:2]):
        workdir = tmp_path / experiment.name / run.name
        workdir.mkdir(parents=True)
        records = [{"step": step, "train_loss": 2.0 - step / 100, "train_accuracy": 0.5,
                    "clip_fraction": 0.01,
                    "clip_fraction_by_param": {"kernel": 0.01 * index, "skip_gain": 1.0}}
                   for step in (10, 20)]
        records.append({"step": 20, "epoch": 0.3, "test_loss": 1.5, "test_accuracy": 0.6})
        (workdir / "metrics.jsonl").write_text("\n".join(map(json.dumps, records)) + "\n")
        (workdir / "summary.json").write_text(json.dumps(
            {"final_test_accuracy": 0.6 + index / 100, "best_test_accuracy": 0.61, "steps": 20,
             "wall_seconds": 1.0, "diverged": False, "device_kind": "cpu"}))
    written = experiments.report_experiment(experiment, tmp_path, tmp_path / "figures")
    names = {path.name for path in written}
    assert names == {"clipping_long.png", "clipping_long_clip_by_param.png", "clipping_long.md"}
    assert (tmp_path / "figures" / "clipping_long_clip_by_param.png").stat().st_size > 10_000
    table = (tmp_path / "figures" / "clipping_long.md").read_text()
    assert "0.6100" in table and f"{len(experiment.runs) - 2} of" in table


@pytest.mark.parametrize("losses, shown", [([2.3, 5e32, 2.3], "5e+32"),
                                           ([2.3, None], "non-finite"), ([], "—")])
def test_the_table_shows_the_peak_training_loss(losses, shown):
    result = experiments.RunResult(
        name="r", labels={"clip": "x"}, summary={"final_test_accuracy": 0.1},
        train=[{"step": i, "train_loss": loss} for i, loss in enumerate(losses)], evals=[])
    row = experiments._summary_table([result], ["clip"]).splitlines()[-1]
    assert row.split(" | ")[3] == shown  # clip, final, best, peak
