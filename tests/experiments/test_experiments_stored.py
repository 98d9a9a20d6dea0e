"""The committed results: what the reports need, each a trial of its grid, and the tables
the documentation shows are what they give."""

from __future__ import annotations

import json
import subprocess

import pytest

from experiments import catalog, cli, paths, report, runner, runs
from tests.helpers.experiment_fixtures import REPO


def stored_dirs() -> list:
    """Every directory under results/ that holds a stored run."""
    return sorted({path.parent for path in paths.RESULTS_DIR.rglob(runs.SUMMARY)})


def test_the_defaults_are_results_runs_and_the_docs_figures():
    assert paths.RESULTS_DIR == REPO / "results" and paths.FIGURES_DIR == REPO / "docs/figures"
    assert paths.RUNS_DIR == REPO / "runs" / "experiments"
    ignored = subprocess.run(["git", "check-ignore", "-q", "runs/experiments/x/train.log"],
                             cwd=REPO, check=False)
    assert ignored.returncode == 0, "runs/ must be git-ignored"


def test_a_stored_run_is_its_records_and_summary_only():
    stored = stored_dirs()
    assert len(stored) > 150  # Every grid's runs (a wrong path would find none).
    for directory in stored:
        assert sorted(p.name for p in directory.iterdir()) == sorted(runs.STORED), directory
        assert runs.read_run(directory).config, f"{directory}: no configuration recorded"
        text = (directory / runs.SUMMARY).read_text()
        assert str(REPO) not in text, f"{directory}: a path of this machine"


def test_every_stored_run_is_a_trial_of_its_grid_or_a_run_figures_own():
    trials = {f"{e.name}/{t.name}" for e in catalog.EXPERIMENTS.values()
              for t in e.all_trials()}
    stored = {d.relative_to(paths.RESULTS_DIR).as_posix() for d in stored_dirs()}
    assert stored - trials == set(catalog.STANDALONE_RUNS)
    drawn = {run for runs_of in catalog.RUN_FIGURES.values() for run in runs_of}
    assert set(catalog.STANDALONE_RUNS) <= drawn <= stored


def test_every_stored_run_still_counts_as_done_under_its_grid(capsys):
    # A stored run is refused when the configuration it recorded is no longer its trial's
    # (a grid edited, a preset default changed); this catches it before a grid reruns.
    checked = 0
    for experiment in catalog.EXPERIMENTS.values():
        stored = {d.name for d in stored_dirs() if d.parent.name == experiment.name}
        outcome = runner.run_experiment(experiment, paths.RESULTS_DIR, paths.RUNS_DIR,
                                        dry_run=True)
        done = {name for name, state in outcome.items() if state == "done"}
        assert stored <= done, f"{experiment.name}: not done: {sorted(stored - done)}"
        checked += len(stored)
    assert checked == len(stored_dirs()) - len(catalog.STANDALONE_RUNS)
    capsys.readouterr()


def test_every_committed_table_is_what_the_stored_runs_give():
    tables = {path.stem: path for path in paths.FIGURES_DIR.glob("*.md")}
    reported = {e.name for e in catalog.EXPERIMENTS.values()
                if (paths.RESULTS_DIR / e.name).is_dir()}
    assert reported and set(tables) == reported
    for name, path in tables.items():
        experiment = catalog.EXPERIMENTS[name]
        results = report.load_results(experiment, paths.RESULTS_DIR)
        assert report.table_text(experiment, results) == path.read_text(), (
            f"{path.name} is stale: run `python -m experiments report --all`")


def test_the_run_figures_draw_stored_runs():
    for name, runs_of in catalog.RUN_FIGURES.items():
        assert (paths.FIGURES_DIR / name).is_file(), name
        for run in runs_of:
            assert json.loads((paths.RESULTS_DIR / run / runs.SUMMARY).read_text())["config"]


@pytest.mark.slow
def test_one_command_regenerates_every_figure_and_table_of_the_docs(tmp_path, capsys):
    assert cli.main(["report", "--all", "--figures-dir", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in paths.FIGURES_DIR.iterdir())
    for name in written:  # Figures may differ by matplotlib release, tables may not.
        if name.endswith(".md"):
            assert (tmp_path / name).read_text() == (paths.FIGURES_DIR / name).read_text()
    capsys.readouterr()
