"""The experiments package: grids of trials, resumable, stored in results/, run by the CLI."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest

from examples.common import flags
from experiments import catalog, cli, fingerprint, nf_resnet, report, runner, vit
from experiments.spec import Run, Trial, as_flags
from tests.helpers.experiment_fixtures import TINY, fake_trial, trial_config


def grid_dirs(tmp_path):
    return tmp_path / "results", tmp_path / "runs"


@pytest.mark.slow
def test_driver_resumes_a_half_finished_grid_stores_results_and_reports_from_them(tmp_path):
    launched = []

    def counting_launch(command, workdir):
        launched.append(workdir.name)
        return runner.launch_subprocess(command, workdir)

    results, runs = grid_dirs(tmp_path)
    first = runner.run_experiment(TINY, results, runs, only=["agc"], launch=counting_launch)
    assert first == {"agc": "ran"}, (runs / "tiny/agc/train.log").read_text()
    assert sorted(p.name for p in (results / "tiny/agc").iterdir()) == [
        "metrics.jsonl", "summary.json"]  # No log, config or checkpoints: those stay in runs.
    assert (runs / "tiny/agc/checkpoints").is_dir() and (runs / "tiny/agc/train.log").is_file()
    summary_before = (results / "tiny/agc/summary.json").read_text()

    second = runner.run_experiment(TINY, results, runs, launch=counting_launch)
    assert second == {"agc": "done", "none": "ran"}
    assert launched == ["agc", "none"]  # the stored trial was not launched again
    assert (results / "tiny/agc/summary.json").read_text() == summary_before

    # Figures come from the stored files alone: delete the work directories first.
    for trial in ("agc", "none"):
        for path in sorted((runs / "tiny" / trial).rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
    written = report.report_experiment(TINY, results, tmp_path / "figures")
    assert {p.name for p in written} == {"tiny.png", "tiny.md"}
    assert (tmp_path / "figures" / "tiny.png").stat().st_size > 10_000
    table = (tmp_path / "figures" / "tiny.md").read_text()
    assert "AGC λ=0.16" in table and "no clipping" in table
    assert f"{json.loads(summary_before)['final_test_accuracy']:.4f}" in table


def test_a_seed_gets_its_own_directory_and_override_and_seed_0_keeps_todays():
    run = Run("agc", {"clipping": 0.16}, {})
    assert (Trial(run, 0).name, Trial(run, 0).overrides) == ("agc", {"clipping": 0.16})
    assert (Trial(run, 2).name, Trial(run, 2).overrides) == (
        "agc_seed2", {"clipping": 0.16, "seed": 2})
    seeded = dataclasses.replace(TINY, seeds=(0, 1))
    command = seeded.command(seeded.trials(TINY.runs[1])[1], "w")
    assert command[:3] == [sys.executable, "-m", "examples.nf_resnet.train"]
    assert command[3:] == ["--preset", "smoke", "--workdir", "w", "--steps", "6",
                           "--train-examples", "512", "--log-every-steps", "2",
                           "--clipping", "0.0", "--seed", "1"]


def test_overrides_are_spelled_as_the_trainers_flags():
    assert as_flags({"flip": False, "clip_norms_and_biases": True, "steps": None,
                     "agc_eps": 1e-3, "weight_decay": 5e-05, "agc_exclude": "^head/"}) == [
        "--no-flip", "--clip-norms-and-biases", "--steps", "none", "--agc-eps", "0.001",
        "--weight-decay", "5e-05", "--agc-exclude", "^head/"]
    # A run's override wins over the grid's, at the grid's place in the command.
    grid = dataclasses.replace(TINY, overrides={"steps": 6, "lr": 0.1})
    trial = Trial(Run("r", {"lr": 0.2, "flip": False}, {}), 0)
    assert grid.command(trial, "w")[7:] == ["--steps", "6", "--lr", "0.2", "--no-flip"]


def test_every_trials_command_gives_the_trainer_the_trials_configuration():
    # The overrides are the trial; the flags only carry them to the trainer process.
    for experiment in catalog.EXPERIMENTS.values():
        configs = fingerprint.family_configs(experiment.trainer)
        for trial in experiment.all_trials():
            argv = experiment.command(trial, "w")[3:]
            parsed, _ = flags.parse(argv, prog="p", description="", presets=configs.PRESETS,
                                    get_config=configs.get_config)
            assert parsed == fingerprint.trial_config(experiment, trial), (
                f"{experiment.name}/{trial.name}")


def test_report_without_runs_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m experiments run tiny"):
        report.report_experiment(TINY, tmp_path, tmp_path / "figures")


def test_unknown_run_name_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="No run named"):
        runner.run_experiment(TINY, *grid_dirs(tmp_path), only=["typo"], dry_run=True)


def test_seeds_restrict_the_selected_runs_to_those_seeds(tmp_path):
    seeded = dataclasses.replace(TINY, seeds=(0, 1, 2))
    outcome = runner.run_experiment(seeded, *grid_dirs(tmp_path), only=["agc", "none"],
                                    seeds=[0, 2], dry_run=True)
    assert list(outcome) == ["agc", "agc_seed2", "none", "none_seed2"]
    with pytest.raises(ValueError, match=r"has seed \[7\]; its seeds: \[0, 1, 2\]"):
        runner.run_experiment(seeded, *grid_dirs(tmp_path), seeds=[7], dry_run=True)


@pytest.mark.parametrize("argv, message", [
    (["--only", "typo"], "No run named ['typo'] in 'nf_vs_bn'"),
    (["--only", "batch256_nf_agc", "--seeds", "7"], "has seed [7]"),
])
def test_the_command_line_names_a_bad_run_or_seed_in_one_line(capsys, argv, message):
    assert cli.main(["run", "nf_vs_bn", "--dry-run", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_every_named_experiment_is_well_formed():
    names = [e.name for e in (*nf_resnet.EXPERIMENTS, *vit.EXPERIMENTS)]
    assert len(names) == len(set(names)), "two experiments share a name"
    assert list(catalog.EXPERIMENTS) == names
    for name, experiment in catalog.EXPERIMENTS.items():
        assert experiment.name == name
        trials = [trial.name for trial in experiment.all_trials()]
        assert len(trials) == len(set(trials)), f"{name}: two trials share a directory"
        assert experiment.report.figures, name
        for run in experiment.runs:
            assert set(experiment.report.columns) <= run.labels.keys(), (name, run.name)
            assert "seed" not in run.overrides, (name, run.name)  # Seeds are the trials'.


def test_grids_cover_their_questions():
    sweep = nf_resnet.CLIPPING_SWEEP
    pairs = [(r.labels["batch_size"], r.labels["clipping"]) for r in sweep.runs]
    assert sorted(pairs) == sorted((b, c) for b in (256, 1024, 4096) for c in nf_resnet.CLIPPINGS)
    assert sorted(r.labels["batch_size"] for r in nf_resnet.LARGE_BATCH.runs) == [
        256, 256, 1024, 1024, 4096, 4096]
    for experiment in (nf_resnet.WITH_WITHOUT_AGC, nf_resnet.SKIP_GAIN_FLOOR):
        assert experiment.seeds == (0, 1, 2)
    # skip_gain_floor's first run is clipping_long's λ = 0.01 run, override for override.
    (long_001,) = [r for r in nf_resnet.CLIPPING_LONG.runs if r.labels["clipping"] == 0.01]
    floor = nf_resnet.SKIP_GAIN_FLOOR
    assert (floor.overrides, floor.runs[0].overrides) == (nf_resnet.CLIPPING_LONG.overrides,
                                                         long_001.overrides)


def test_large_batches_of_the_grids_run_as_microbatches():
    for run in nf_resnet.CLIPPING_SWEEP.runs:
        microbatched = run.overrides.get("microbatch_size") == nf_resnet.CPU_MICROBATCH
        assert microbatched == (run.labels["batch_size"] > nf_resnet.CPU_MICROBATCH), run.name


def test_a_stored_trial_counts_as_done_only_while_it_recorded_the_trials_settings(tmp_path):
    results, runs = grid_dirs(tmp_path)
    fake_trial(results / "tiny" / "agc", 0.5, config=trial_config())
    assert runner.run_experiment(TINY, results, runs, only=["agc"]) == {"agc": "done"}
    (results / "tiny/agc/summary.json").write_text(json.dumps(
        {"config": trial_config(clipping=0.32)}))
    with pytest.raises(ValueError, match=r"results/tiny/agc holds a finished run of tiny/agc "
                                         r"with other settings .*\(clipping: 0.32 -> 0.16\)"
                                         r".*delete that directory"):
        runner.run_experiment(TINY, results, runs, only=["agc"])


def test_a_finished_run_not_yet_stored_is_stored_not_rerun(tmp_path):
    results, runs = grid_dirs(tmp_path)
    fake_trial(runs / "tiny" / "agc", 0.5, config=trial_config())
    (runs / "tiny/agc/train.log").write_text("log")

    def refuse(command, workdir):
        raise AssertionError(f"launched {workdir}")

    assert runner.run_experiment(TINY, results, runs, only=["agc"], launch=refuse) == {
        "agc": "done"}
    assert sorted(p.name for p in (results / "tiny/agc").iterdir()) == [
        "metrics.jsonl", "summary.json"]


def launcher(exits: dict[str, int], diverged: bool = False, commands: dict | None = None):
    """A launch that writes a finished run (diverged if asked) unless its trial exits 2."""
    def launch(command, workdir):
        if commands is not None:
            commands[workdir.name] = command
        code = exits.get(workdir.name, 0)
        if code != 2:
            (workdir / "metrics.jsonl").write_text('{"step": 1, "train_loss": NaN}\n')
            index = [t.name for t in TINY.all_trials()].index(workdir.name)
            (workdir / "summary.json").write_text(json.dumps(
                {"diverged": diverged, "config": trial_config(TINY, index)}))
        return code
    return launch


def test_a_diverged_run_counts_as_finished_whatever_its_exit_status(tmp_path):
    results, runs = grid_dirs(tmp_path)
    launch = launcher({"agc": 1}, diverged=True)
    assert runner.run_experiment(TINY, results, runs, only=["agc"], launch=launch) == {
        "agc": "ran"}
    assert json.loads((results / "tiny/agc/summary.json").read_text())["diverged"]


def test_a_run_that_ends_without_a_summary_failed_and_is_not_stored(tmp_path):
    results, runs = grid_dirs(tmp_path)
    outcome = runner.run_experiment(TINY, results, runs, launch=launcher({"agc": 2}))
    assert outcome == {"agc": "failed", "none": "ran"}
    assert sorted(p.name for p in (results / "tiny").iterdir()) == ["none"]


def test_a_killed_or_interrupted_trial_is_resumed(tmp_path):
    results, runs = grid_dirs(tmp_path)
    commands = {}
    killed, interrupted = runs / "tiny" / "agc", runs / "tiny" / "none"
    (killed / "checkpoints" / "8").mkdir(parents=True)  # kill -9: no summary.json
    fake_trial(interrupted, 0.5)
    summary = json.loads((interrupted / "summary.json").read_text())
    (interrupted / "summary.json").write_text(json.dumps({**summary, "interrupted": True}))
    runner.run_experiment(TINY, results, runs, launch=launcher({}, commands=commands))
    assert commands["agc"] == [*TINY.command(TINY.all_trials()[0], killed.resolve()),
                               "--resume"]
    assert commands["none"][-1] == "--resume"
    # A start that failed before the trainer wrote anything has only the runner's log.
    fresh = dataclasses.replace(TINY, name="fresh")
    (runs / "fresh" / "agc").mkdir(parents=True)
    (runs / "fresh" / "agc" / "train.log").write_text("Traceback …")
    runner.run_experiment(fresh, results, runs, only=["agc"],
                          launch=launcher({}, commands=commands))
    assert commands["agc"] == TINY.command(TINY.all_trials()[0], (runs / "fresh/agc").resolve())


def test_nf_vs_bn_compares_four_configurations_per_batch_size_at_equal_budget():
    grid = nf_resnet.NF_VS_BN
    assert grid.seeds == (0, 1, 2) and grid.overrides["steps"] == 240
    cells = [(r.labels["batch_size"], r.labels["model"], r.labels["clipping"]) for r in grid.runs]
    *four_per_batch, paper = grid.runs
    assert sorted(cells[:-1]) == sorted((batch, model, clipping) for batch in (256, 1024, 4096)
                                        for model in ("NF-ResNet", "BN ResNet")
                                        for clipping in (0.01, 0.0))
    # The paper's NF + AGC at batch 4096: the skip gains clipped, only the head left out.
    assert paper.name == "batch4096_nf_agc_skip_gains_clipped"
    assert paper.overrides == {"model": "nf_resnet_cpu", "batch_size": 4096,
                               "microbatch_size": 256, "lr": 0.2, "clipping": 0.01,
                               "agc_exclude": "^head/"}
    at_4096 = [r.labels["curve"] for r in grid.runs if r.labels["batch_size"] == 4096]
    assert len(set(at_4096)) == len(at_4096) == 5  # Each its own entry in the legend.
    for run in four_per_batch:
        overrides = run.overrides
        batch, clipping = run.labels["batch_size"], run.labels["clipping"]
        assert overrides["model"] == ("nf_resnet_cpu" if run.labels["model"] == "NF-ResNet"
                                      else "bn_resnet_cpu")
        assert (overrides["batch_size"], overrides["lr"]) == (batch, 0.2)  # Peak 0.2·b/256.
        assert overrides.get("microbatch_size") == (None if batch == 256 else 256)
        assert overrides["clipping"] == clipping
        assert overrides.get("agc_exclude") == ("^head/|skip_gain$" if clipping else None)


def test_the_command_line_lists_every_experiment_and_run(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name, experiment in catalog.EXPERIMENTS.items():
        assert f"{name} ({experiment.trainer})" in out
        assert all(f"    {run.name}: " in out for run in experiment.runs), name
    assert "    agc: --clipping 0.16\n" in out


@pytest.mark.slow
def test_a_small_nf_vs_bn_grid_runs_and_reports_accuracy_loss_and_step_time(tmp_path):
    # The grid's four configurations at the nano size, batch 128 in microbatches of 64.
    small = dataclasses.replace(
        nf_resnet.NF_VS_BN, preset="smoke", seeds=(0,),
        overrides={"steps": 3, "train_examples": 512, "test_examples": 500,
                   "log_every_steps": 1},
        runs=nf_resnet.nf_vs_bn_runs((128,), size="nano", microbatch_size=64))
    results, runs = grid_dirs(tmp_path)
    assert runner.run_experiment(small, results, runs) == {r.name: "ran" for r in small.runs}
    written = report.report_experiment(small, results, tmp_path / "figures")
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
    summary = json.loads((results / "nf_vs_bn" / "batch128_bn_agc" / "summary.json").read_text())
    assert summary["config"]["model"] == "bn_resnet_nano"
    assert summary["config"]["microbatch_size"] == 64
