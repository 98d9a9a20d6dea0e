"""An experiment's report: its table and figures, from stored runs alone."""

from __future__ import annotations

import dataclasses
import math

import pytest

from experiments import figures, nf_resnet, report, runs
from experiments.spec import Report, Result, Run
from tests.helpers.experiment_fixtures import TINY, fake_trial


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
    assert all(ax.get_legend() is None for ax in figures_drawn[0].axes)  # Hides no curve.
    legend, = figures_drawn[0].legends  # One, under the panels, naming each run once.
    assert [t.get_text() for t in legend.get_texts()] == ["AGC λ=0.16", "no clipping"]


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
    grid_runs = [Run(f"b{batch}_{name}", {}, {"batch_size": batch, "clip": name})
                 for batch, names in ((1, ("a", "b")), (2, ("b",))) for name in names]
    grid = dataclasses.replace(TINY, runs=tuple(grid_runs), report=Report(
        figures=(figures.curves_by_batch,), columns=("batch_size", "clip")))
    for run in grid_runs:
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
    result = Result(TINY.runs[0], [runs.read_run(tmp_path / "r")], 1)
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
    missing = len(experiment.runs) - 2
    assert "0.6100" in table and f"{missing} of {len(experiment.runs)} runs have not" in table


def test_the_step_time_is_the_median_interval_without_the_compiling_step(tmp_path):
    # Records as the trainer writes them: the first interval holds only the compiling step
    # (no rate), the last one also an evaluation (a slower rate).
    rates = [None, 1000.0, 1280.0, 1000.0, 100.0]
    summary = {"config": {"batch_size": 256}}
    trial = runs.RunData(
        tmp_path, [{"step": 10 * i, "train_loss": 1.0, "images_per_second": rate}
                   for i, rate in enumerate(rates, 1)], summary, summary["config"])
    assert report.step_milliseconds(trial) == pytest.approx(256.0)  # 256 / median 1000 s.
    assert math.isnan(report.step_milliseconds(
        dataclasses.replace(trial, records=trial.records[:1])))
