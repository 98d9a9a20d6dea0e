"""The experiments package: resumable grids with seeds, reports from stored runs only."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys

import pytest

from experiments import catalog, cli, figures, nf_resnet, report, runner, vit
from experiments.spec import Experiment, Report, Run, Trial

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = Experiment(
    name="tiny",
    question="Two smoke runs, with and without AGC.",
    preset="smoke",
    common_flags=("--steps", "6", "--train-examples", "512", "--log-every-steps", "2"),
    runs=(Run("agc", ("--clipping", "0.16"), {"clip": "AGC λ=0.16"}),
          Run("none", ("--clipping", "0"), {"clip": "no clipping"})),
    report=Report(figures=(figures.curves,), columns=("clip",)),
)


def fake_trial(directory: pathlib.Path, final: float, losses=(2.0, 1.5), diverged=False,
               by_kind=None, command=None) -> None:
    """A finished trial's files, as the trainer and the runner write them."""
    directory.mkdir(parents=True)
    records = [{"step": 10 * (i + 1), "train_loss": loss, "clip_fraction": 0.01,
                "clip_fraction_by_param": by_kind} for i, loss in enumerate(losses)]
    records.append({"step": 10 * len(losses), "epoch": 0.3, "test_loss": 1.5,
                    "test_accuracy": final})
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (directory / "summary.json").write_text(json.dumps(
        {"final_test_accuracy": final, "best_test_accuracy": final, "steps": 10 * len(losses),
         "wall_seconds": 100.0 + final, "diverged": diverged, "device_kind": "cpu"}))
    if command is not None:
        (directory / "run.json").write_text(json.dumps({"command": command}))


@pytest.mark.slow
def test_driver_resumes_a_half_finished_grid_and_reports_from_stored_runs(tmp_path):
    launched = []

    def counting_launch(command, workdir):
        launched.append(workdir.name)
        return runner.launch_subprocess(command, workdir)

    runs_dir = tmp_path / "runs"
    first = runner.run_experiment(TINY, runs_dir, only=["agc"], launch=counting_launch)
    assert first == {"agc": "ran"}, (runs_dir / "tiny/agc/train.log").read_text()
    summary_before = (runs_dir / "tiny/agc/summary.json").read_text()

    second = runner.run_experiment(TINY, runs_dir, launch=counting_launch)
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
    written = report.report_experiment(TINY, stored, tmp_path / "figures")
    assert {p.name for p in written} == {"tiny.png", "tiny.md"}
    assert (tmp_path / "figures" / "tiny.png").stat().st_size > 10_000
    table = (tmp_path / "figures" / "tiny.md").read_text()
    assert "AGC λ=0.16" in table and "no clipping" in table
    assert f"{json.loads(summary_before)['final_test_accuracy']:.4f}" in table


def test_a_seed_gets_its_own_directory_and_flag_and_seed_0_keeps_todays():
    run = Run("agc", ("--clipping", "0.16"), {})
    assert (Trial(run, 0).name, Trial(run, 0).flags) == ("agc", ("--clipping", "0.16"))
    assert (Trial(run, 2).name, Trial(run, 2).flags) == (
        "agc_seed2", ("--clipping", "0.16", "--seed", "2"))
    seeded = dataclasses.replace(TINY, seeds=(0, 1))
    command = seeded.command(seeded.trials(TINY.runs[1])[1], "w")
    assert command[:3] == [sys.executable, "-m", "examples.nf_resnet.train"]
    assert command[3:] == ["--preset", "smoke", "--workdir", "w", *TINY.common_flags,
                           "--clipping", "0", "--seed", "1"]


def test_the_runner_records_commands_relative_to_the_repository(tmp_path):
    workdir = REPO / "docs" / "runs" / "x" / "y"
    assert runner.relative_to_repo(workdir) == pathlib.Path("docs/runs/x/y")
    assert runner.relative_to_repo(tmp_path) == tmp_path.resolve()


def test_committed_run_records_hold_no_machine_paths():
    specs = sorted((REPO / "docs" / "runs").glob("*/*/run.json"))
    assert specs
    for path in specs:
        command = json.loads(path.read_text())["command"]
        workdir = command[command.index("--workdir") + 1]
        assert workdir == str(path.parent.relative_to(REPO)), path
        assert not any(str(REPO) in part for part in command), path


def test_report_without_runs_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m experiments run tiny"):
        report.report_experiment(TINY, tmp_path, tmp_path / "figures")


def test_unknown_run_name_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="No run named"):
        runner.run_experiment(TINY, tmp_path, only=["typo"], dry_run=True)


def test_seeds_restrict_the_selected_runs_to_those_seeds(tmp_path):
    seeded = dataclasses.replace(TINY, seeds=(0, 1, 2))
    outcome = runner.run_experiment(seeded, tmp_path, only=["agc", "none"], seeds=[0, 2],
                                    dry_run=True)
    assert list(outcome) == ["agc", "agc_seed2", "none", "none_seed2"]
    with pytest.raises(ValueError, match=r"has seed \[7\]; its seeds: \[0, 1, 2\]"):
        runner.run_experiment(seeded, tmp_path, seeds=[7], dry_run=True)


@pytest.mark.parametrize("argv, message", [
    (["--only", "typo"], "No run named ['typo'] in 'nf_vs_bn'"),
    (["--only", "batch256_nf_agc", "--seeds", "7"], "has seed [7]"),
])
def test_the_command_line_names_a_bad_run_or_seed_in_one_line(capsys, argv, message):
    assert cli.main(["run", "nf_vs_bn", "--dry-run", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_every_named_experiment_is_well_formed():
    assert catalog.EXPERIMENTS  # names are unique, so none was shadowed
    assert len(catalog.EXPERIMENTS) == len(nf_resnet.EXPERIMENTS) + len(vit.EXPERIMENTS)
    for name, experiment in catalog.EXPERIMENTS.items():
        assert experiment.name == name
        names = [trial.name for trial in experiment.all_trials()]
        assert len(names) == len(set(names))
        assert experiment.report.figures and all(
            set(experiment.report.columns) <= run.labels.keys() for run in experiment.runs)


def test_grids_cover_their_questions():
    sweep = nf_resnet.CLIPPING_SWEEP
    pairs = {(r.labels["batch_size"], r.labels["clipping"]) for r in sweep.runs}
    assert pairs == {(b, c) for b in (256, 1024, 4096) for c in nf_resnet.CLIPPINGS}
    assert {r.labels["batch_size"] for r in nf_resnet.LARGE_BATCH.runs} == {256, 1024, 4096}
    for experiment in (nf_resnet.WITH_WITHOUT_AGC, nf_resnet.SKIP_GAIN_FLOOR):
        assert experiment.seeds == (0, 1, 2)
    # skip_gain_floor's first run is clipping_long's λ = 0.01 run, flag for flag.
    (long_001,) = [r for r in nf_resnet.CLIPPING_LONG.runs if r.labels["clipping"] == 0.01]
    floor = nf_resnet.SKIP_GAIN_FLOOR
    assert (floor.common_flags, floor.runs[0].flags) == (nf_resnet.CLIPPING_LONG.common_flags,
                                                         long_001.flags)


def test_large_batches_of_the_grids_run_as_microbatches():
    for run in nf_resnet.CLIPPING_SWEEP.runs:
        microbatched = "--microbatch-size" in run.flags
        assert microbatched == (run.labels["batch_size"] > nf_resnet.CPU_MICROBATCH)


def test_a_stored_run_with_other_flags_is_not_counted_as_done(tmp_path):
    trial = TINY.all_trials()[0]
    command = TINY.command(trial, "w")[1:]
    fake_trial(tmp_path / "tiny" / "agc", 0.5, command=command)
    assert runner.run_experiment(TINY, tmp_path, only=["agc"]) == {"agc": "done"}
    (tmp_path / "tiny/agc/run.json").write_text(json.dumps({"command": [*command[:-1], "0.32"]}))
    with pytest.raises(ValueError, match="Delete that directory"):
        runner.run_experiment(TINY, tmp_path, only=["agc"])


def test_a_stored_run_whose_preset_default_changed_is_not_counted_as_done(tmp_path):
    trial = TINY.all_trials()[0]
    command = TINY.command(trial, "w")[1:]
    config = dataclasses.asdict(runner.command_config(command))
    assert config["clipping"] == 0.16 and config["steps"] == 6  # the preset plus the flags
    fake_trial(tmp_path / "tiny" / "agc", 0.5, command=command)
    summary_path = tmp_path / "tiny/agc/summary.json"
    summary = json.loads(summary_path.read_text())

    def stored_config(drop=(), **changes):
        stored = {k: v for k, v in {**config, **changes}.items() if k not in drop}
        summary_path.write_text(json.dumps({**summary, "config": stored}))

    # Unused epochs (steps is set), an execution-only field, a field the run did not record:
    stored_config(drop=("weight_decay",), epochs=99, eval_batch_size=7)
    assert runner.run_experiment(TINY, tmp_path, only=["agc"]) == {"agc": "done"}
    # A setting the same command now gives otherwise (e.g. the preset's weight decay changed).
    stored_config(weight_decay=0.123)
    with pytest.raises(ValueError, match=r"\(--weight-decay 0.123 -> .*\): a preset default"):
        runner.run_experiment(TINY, tmp_path, only=["agc"])


def test_a_grid_may_pin_a_setting_its_stored_runs_got_from_their_preset(tmp_path):
    # What the refusal above advises: after a preset changes, the grid spells out the old
    # value, and its stored runs still count as done; a pin that differs does not.
    trial = TINY.all_trials()[0]
    command = TINY.command(trial, "w")[1:]
    config = dataclasses.asdict(runner.command_config(command))
    fake_trial(tmp_path / "tiny" / "agc", 0.5, command=command)
    summary_path = tmp_path / "tiny/agc/summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "config": config}))

    def pinned(*extra):
        return dataclasses.replace(TINY, common_flags=(*TINY.common_flags, *extra))

    same = ("--weight-decay", repr(config["weight_decay"]), "--no-flip" if not config["flip"]
            else "--flip")
    assert runner.run_experiment(pinned(*same), tmp_path, only=["agc"]) == {"agc": "done"}
    with pytest.raises(ValueError, match=r"--weight-decay .* -> 0.123\): a preset default "
                                         "changed or a pinned flag differs"):
        runner.run_experiment(pinned("--weight-decay", "0.123"), tmp_path, only=["agc"])
    # A flag for a setting the run did not record cannot be checked against it.
    summary_path.write_text(json.dumps(
        {**summary, "config": {k: v for k, v in config.items() if k != "weight_decay"}}))
    with pytest.raises(ValueError, match=r"--weight-decay \(added\)\)\. Delete that directory"):
        runner.run_experiment(pinned(*same), tmp_path, only=["agc"])


def test_flag_order_the_workdir_and_execution_only_flags_do_not_change_the_settings():
    base = ["py", "-m", "m", "--preset", "cpu", "--workdir", "/a/b", "--lr", "0.2", "--seed", "1"]
    same = ["-m", "m", "--seed", "1", "--workdir", "c", "--microbatch-size", "8", "--preset",
            "cpu", "--cpu-devices", "2", "--lr", "0.2"]
    assert runner.settings(base) == runner.settings(same) == (
        "m", {"--preset": ("cpu",), "--lr": ("0.2",), "--seed": ("1",)})
    assert runner.settings(base) != runner.settings([*base[:-1], "2"])
    assert runner.settings(base) != runner.settings(["-m", "other", *base[3:]])


def test_an_incomplete_seeded_grid_reports_mean_and_std_and_marks_missing_runs(tmp_path):
    seeded = dataclasses.replace(TINY, seeds=(0, 1, 2))
    fake_trial(tmp_path / "tiny" / "agc", 0.80)
    fake_trial(tmp_path / "tiny" / "agc_seed1", 0.84)
    fake_trial(tmp_path / "tiny" / "agc_seed2", 0.86, losses=(2.0, float("nan")), diverged=True)
    written = report.report_experiment(seeded, tmp_path, tmp_path / "figures")
    assert {p.name for p in written} == {"tiny.png", "tiny.md"}
    text = (tmp_path / "figures" / "tiny.md").read_text()
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in text.splitlines()
            if line.startswith("| ") and " --- " not in line}
    # mean 0.8333, sample std sqrt(((-.0333)² + .0067² + .0267²) / 2) = 0.0306
    assert rows["AGC λ=0.16"][1:] == ["0.8333 ± 0.0306", "0.8333 ± 0.0306",
                                      "non-finite in 1/3", "20", "101 ± 0", "1/3", "3 of 3 |"]
    assert rows["no clipping"][1:] == ["not run yet", "—", "—", "—", "—", "—", "0 of 3 |"]
    assert "3 of 6 runs have not finished yet: none, none_seed1, none_seed2." in text
    # The column counts only runs a non-finite loss stopped; the note says what it misses.
    header = next(line for line in text.splitlines() if line.startswith("| clip"))
    assert header.split(" | ")[-2:] == ["stopped (non-finite)", "seeds |"]
    assert '"stopped (non-finite)" counts the runs a non-finite loss stopped' in text


def capture_figures(monkeypatch) -> list:
    """Keeps the figures the report draws, in a list, instead of writing them."""
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path, **_: drawn.append(fig) or [path])
    return drawn


def test_runs_evaluated_only_at_their_end_show_their_final_accuracy_per_run(tmp_path,
                                                                            monkeypatch):
    figures_drawn = capture_figures(monkeypatch)
    fake_trial(tmp_path / "tiny" / "agc", 0.8)
    fake_trial(tmp_path / "tiny" / "none", 0.6)
    report.report_experiment(TINY, tmp_path, tmp_path / "figures")
    accuracy = figures_drawn[0].axes[0]
    assert [t.get_text() for t in accuracy.get_xticklabels()] == ["AGC λ=0.16", "no clipping"]
    assert [tuple(line.get_ydata()) for line in accuracy.lines] == [(0.8,), (0.6,)]
    assert accuracy.get_legend() is None and figures_drawn[0].axes[1].get_legend() is not None


@pytest.mark.parametrize("losses, where", [((2.0, 9e30, None), (20, 9e30)),
                                           ((None, None), (20, 0.97))])
def test_a_diverged_run_gets_an_x_even_when_no_loss_it_logged_is_finite(
        tmp_path, monkeypatch, losses, where):
    # The × sits at the last finite loss, else at the panel's top above the last step.
    figures_drawn = capture_figures(monkeypatch)
    fake_trial(tmp_path / "tiny" / "agc", 0.8, losses=(2.0, 1.5))
    fake_trial(tmp_path / "tiny" / "none", 0.1, diverged=True,
               losses=[float("nan") if x is None else x for x in losses])
    report.report_experiment(TINY, tmp_path, tmp_path / "figures")
    loss_panel = figures_drawn[0].axes[1]
    crosses = [line for line in loss_panel.lines if line.get_marker() == "x"]
    assert [(line.get_xdata()[0], line.get_ydata()[0]) for line in crosses] == [where]


def test_a_run_keeps_its_colour_in_every_batch_panel(tmp_path, monkeypatch):
    figures_drawn = capture_figures(monkeypatch)
    runs = [Run(f"b{batch}_{name}", (), {"batch_size": batch, "clip": name})
            for batch, names in ((1, ("a", "b")), (2, ("b",))) for name in names]
    grid = dataclasses.replace(TINY, runs=tuple(runs), report=Report(
        figures=(figures.curves_by_batch,), columns=("batch_size", "clip")))
    for run in runs:
        fake_trial(tmp_path / "tiny" / run.name, 0.5)
    report.report_experiment(grid, tmp_path, tmp_path / "figures")
    first, second = figures_drawn[0].axes[0], figures_drawn[0].axes[1]  # Batch 1, batch 2.
    colour_of_b = {line.get_label(): line.get_color() for line in first.lines}["b"]
    assert [line.get_color() for line in second.lines] == [colour_of_b]
    # One legend, below the panels, with each run once; none inside a panel to hide curves.
    assert [legend.get_texts()[i].get_text() for legend in figures_drawn[0].legends
            for i in range(len(legend.get_texts()))] == ["a", "b"]
    assert all(ax.get_legend() is None for ax in figures_drawn[0].axes)


@pytest.mark.parametrize("losses, shown", [((2.3, 5e32, 2.3), "5e+32"),
                                           ((2.3, None), "non-finite"), ((), "—")])
def test_the_table_shows_the_peak_training_loss(tmp_path, losses, shown):
    fake_trial(tmp_path / "r", 0.1, losses=[float("nan") if x is None else x for x in losses])
    result = report.Result(TINY.runs[0], [report.runs.read_run(tmp_path / "r")], 1)
    assert report.row_cells(result)[2] == shown


def test_clipping_long_report_draws_the_clip_fraction_per_parameter_kind(tmp_path):
    experiment = nf_resnet.CLIPPING_LONG
    for index, run in enumerate(experiment.runs[:2]):
        fake_trial(tmp_path / experiment.name / run.name, 0.6 + index / 100,
                   by_kind={"kernel": 0.01 * index, "skip_gain": 1.0})
    written = report.report_experiment(experiment, tmp_path, tmp_path / "figures")
    names = {path.name for path in written}
    assert names == {"clipping_long.png", "clipping_long_clip_by_param.png", "clipping_long.md"}
    assert (tmp_path / "figures" / "clipping_long_clip_by_param.png").stat().st_size > 10_000
    table = (tmp_path / "figures" / "clipping_long.md").read_text()
    assert "0.6100" in table and f"{len(experiment.runs) - 2} of" in table


def test_every_committed_table_is_what_the_stored_runs_give():
    tables = sorted((REPO / "docs" / "figures").glob("*.md"))
    assert {t.stem for t in tables} >= {e.name for e in nf_resnet.EXPERIMENTS}
    for path in tables:
        experiment = catalog.EXPERIMENTS[path.stem]
        results = report.load_results(experiment, REPO / "docs" / "runs")
        assert report.table_text(experiment, results) == path.read_text(), (
            f"{path.name} is stale: run `python -m experiments report {path.stem}`")


def test_every_committed_run_still_counts_as_done_under_its_grid(capsys):
    # A stored run is refused when its grid now asks for other flags or its preset now
    # gives other settings; this catches a renamed or edited preset before a grid reruns.
    for experiment in catalog.EXPERIMENTS.values():
        stored = {path.parent.name for path in
                  (REPO / "docs" / "runs" / experiment.name).glob("*/summary.json")}
        outcome = runner.run_experiment(experiment, REPO / "docs" / "runs", dry_run=True)
        assert stored <= {name for name, state in outcome.items() if state == "done"}, (
            f"{experiment.name}: stored runs that are not trials of the grid: "
            f"{sorted(stored - set(outcome))}")
    capsys.readouterr()


def test_the_command_line_lists_and_the_old_module_is_an_alias(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name} (" in out for name in catalog.EXPERIMENTS)
    from examples.nf_resnet import experiments as alias

    assert alias.main is cli.main


def test_a_killed_or_interrupted_trial_is_resumed_and_its_flags_still_match(tmp_path):
    commands = {}

    def record_launch(command, workdir):
        commands[workdir.name] = command
        return 1

    killed, interrupted = tmp_path / "tiny" / "agc", tmp_path / "tiny" / "none"
    (killed / "checkpoints" / "8").mkdir(parents=True)  # kill -9: no summary.json
    fake_trial(interrupted, 0.5)
    summary = json.loads((interrupted / "summary.json").read_text())
    (interrupted / "summary.json").write_text(json.dumps({**summary, "interrupted": True}))
    runner.run_experiment(TINY, tmp_path, launch=record_launch)
    assert commands["agc"][-1] == commands["none"][-1] == "--resume"
    assert runner.settings(commands["agc"]) == runner.settings(
        TINY.command(TINY.trials(TINY.runs[0])[0], killed))
    fresh = tmp_path / "fresh"
    runner.run_experiment(TINY, fresh, only=["agc"], launch=record_launch)
    assert "--resume" not in commands["agc"]


def test_nf_vs_bn_compares_four_configurations_per_batch_size_at_equal_budget():
    grid = nf_resnet.NF_VS_BN
    assert grid.seeds == (0, 1, 2) and ("--steps", "240") == grid.common_flags[:2]
    cells = {(r.labels["batch_size"], r.labels["model"], r.labels["clipping"]) for r in grid.runs}
    assert cells == {(batch, model, clipping) for batch in (256, 1024, 4096)
                     for model in ("NF-ResNet", "BN ResNet") for clipping in (0.01, 0.0)}
    *four_per_batch, paper = grid.runs
    assert len(four_per_batch) == 12
    # The paper's NF + AGC at batch 4096: the skip gains clipped, only the head left out.
    assert paper.name == "batch4096_nf_agc_skip_gains_clipped"
    assert paper.flags == ("--model", "nf_resnet_cpu", "--batch-size", "4096",
                           "--microbatch-size", "256", "--lr", "0.2", "--clipping", "0.01",
                           "--agc-exclude", "^head/")
    at_4096 = [r.labels["curve"] for r in grid.runs if r.labels["batch_size"] == 4096]
    assert len(set(at_4096)) == len(at_4096) == 5  # Each its own entry in the legend.
    for run in four_per_batch:
        flags = dict(zip(run.flags[::2], run.flags[1::2], strict=True))
        batch, clipping = run.labels["batch_size"], run.labels["clipping"]
        assert flags["--model"] == ("nf_resnet_cpu" if run.labels["model"] == "NF-ResNet"
                                    else "bn_resnet_cpu")
        assert (flags["--batch-size"], flags["--lr"]) == (str(batch), "0.2")  # Peak 0.2·b/256.
        assert flags.get("--microbatch-size") == (None if batch == 256 else "256")
        assert float(flags["--clipping"]) == clipping
        assert flags.get("--agc-exclude") == ("^head/|skip_gain$" if clipping else None)


def test_the_microbatch_size_decides_a_batch_norm_runs_result_the_devices_do_not():
    for model, counts in (("bn_resnet_cpu", True), ("nf_resnet_cpu", False)):
        command = ["-m", "m", "--model", model, "--microbatch-size", "256"]
        differs = runner.settings(command) != runner.settings([*command[:-1], "128"])
        assert differs == counts, model
        # Not so the devices: jit normalizes the global batch however it is split.
        assert runner.settings(command) == runner.settings([*command, "--cpu-devices", "2"])


def test_a_batch_norm_runs_microbatch_size_cannot_be_pinned_after_the_fact():
    # The configuration check skips execution-only fields, so an added --microbatch-size
    # is not a pin but a change for a BatchNorm run; an added --lr is a pin.
    stored = ["-m", "m", "--model", "bn_resnet_cpu"]
    recorded = {"model": "bn_resnet_cpu", "microbatch_size": None, "lr": 0.1}
    assert runner.changed_flags(stored, [*stored, "--microbatch-size", "128"], recorded) == [
        "--microbatch-size (added)"]
    assert runner.changed_flags(stored, [*stored, "--lr", "0.1"], recorded) == []


def test_the_step_time_is_the_median_interval_without_the_compiling_step(tmp_path):
    # Records as the trainer writes them: the first interval holds only the compiling step
    # (no rate), the last one also an evaluation (a slower rate).
    rates = [None, 1000.0, 1280.0, 1000.0, 100.0]
    trial = report.runs.RunData(
        tmp_path, [{"step": 10 * i, "train_loss": 1.0, "images_per_second": rate}
                   for i, rate in enumerate(rates, 1)],
        {"config": {"batch_size": 256}}, {})
    assert report.step_milliseconds(trial) == pytest.approx(256.0)  # 256 / median 1000 s.
    assert math.isnan(report.step_milliseconds(
        report.runs.RunData(tmp_path, trial.records[:1], trial.summary, {})))


@pytest.mark.slow
def test_a_small_nf_vs_bn_grid_runs_and_reports_accuracy_loss_and_step_time(tmp_path):
    # The grid's four configurations at the nano size, batch 128 in microbatches of 64.
    small = dataclasses.replace(
        nf_resnet.NF_VS_BN, preset="smoke", seeds=(0,),
        common_flags=("--steps", "3", "--train-examples", "512", "--test-examples", "500",
                      "--log-every-steps", "1"),
        runs=nf_resnet.nf_vs_bn_runs((128,), size="nano", microbatch_size=64))
    assert runner.run_experiment(small, tmp_path) == {r.name: "ran" for r in small.runs}
    written = report.report_experiment(small, tmp_path, tmp_path / "figures")
    assert {p.name for p in written} == {"nf_vs_bn.png", "nf_vs_bn.md"}
    text = (tmp_path / "figures" / "nf_vs_bn.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| batch_size"))
    assert "| peak train loss |" in header and "| ms / step |" in header
    step_column = header.split(" | ").index("ms / step")
    rows = [line.split(" | ") for line in text.splitlines()
            if line.startswith("| 128 ")]
    assert [row[1:3] for row in rows] == [["NF-ResNet", "AGC λ=0.01"],
                                          ["NF-ResNet", "no clipping"],
                                          ["BN ResNet", "no clipping"],
                                          ["BN ResNet", "AGC λ=0.01"]]
    assert all(float(row[step_column]) > 0 for row in rows)
    summary = json.loads((tmp_path / "nf_vs_bn" / "batch128_bn_agc" / "summary.json").read_text())
    assert summary["config"]["model"] == "bn_resnet_nano"
    assert summary["config"]["microbatch_size"] == 64
