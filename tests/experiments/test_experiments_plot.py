"""Plotting runs (``python -m experiments.plot``) and reading a run's directory."""

import json
import pathlib

import pytest

from experiments import plot
from experiments.runs import is_finished, read_run, store


def fake_run(directory: pathlib.Path, clipping: float, diverged: bool = False,
             **config_fields) -> pathlib.Path:
    directory.mkdir(parents=True)
    clip = [0.25, 0.125] if clipping else [None, None]
    norms = ([{"grad_norm": 8.0, "clipped_grad_norm": 2.0},
              {"grad_norm": 4.0, "clipped_grad_norm": 3.0}] if clipping else [{}, {}])
    records = [{"step": 10, "epoch": 0.5, "train_loss": 2.0, "clip_fraction": clip[0],
                **norms[0]},
               {"step": 20, "epoch": 1.0, "train_loss": 1.0, "clip_fraction": clip[1],
                **norms[1]},
               {"step": 20, "epoch": 1.0, "test_loss": 1.1, "test_accuracy": 0.6}]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = {"model": "nf_resnet_cpu", "batch_size": 128, "lr": 0.8, "clipping": clipping,
              "clip_global_norm": 0.0, **config_fields}
    (directory / "summary.json").write_text(json.dumps({"config": config, "diverged": diverged}))
    return directory


def test_runs_are_labelled_by_the_settings_that_differ(tmp_path):
    read = [read_run(fake_run(tmp_path / "a", 0.16)),
            read_run(fake_run(tmp_path / "b", 0.0, diverged=True))]
    assert plot.labels(read) == ["λ=0.16", "no AGC (diverged)"]


def test_labels_name_any_differing_field_but_not_execution_only_ones(tmp_path):
    read = [read_run(fake_run(tmp_path / "a", 0.16, activation="relu", microbatch_size=32)),
            read_run(fake_run(tmp_path / "b", 0.16, activation="gelu"))]
    assert plot.labels(read) == ["activation=relu", "activation=gelu"]


def test_one_run_is_named_by_its_settings_not_its_directory(tmp_path):
    (run,) = [read_run(fake_run(tmp_path / "run_0042", 0.16))]
    assert plot.labels([run]) == ["nf_resnet_cpu batch=128 lr=0.8 λ=0.16"]
    fig = plot.figure([run])
    assert fig._suptitle.get_text() == "nf_resnet_cpu batch=128 lr=0.8 λ=0.16"


def test_the_figure_shows_accuracy_loss_and_clip_fraction_against_steps(tmp_path):
    read = [read_run(fake_run(tmp_path / "a", 0.16)),
            read_run(fake_run(tmp_path / "b", 0.0))]
    fig = plot.figure(read, x="step")
    acc, loss, clip, norm = fig.axes
    assert [ax.get_xlabel() for ax in fig.axes] == ["step"] * 4
    assert [t.get_text() for t in acc.get_legend().get_texts()] == ["λ=0.16", "no AGC"]
    assert list(acc.lines[0].get_xdata()) == [20] and list(acc.lines[0].get_ydata()) == [0.6]
    assert [list(line.get_ydata()) for line in loss.lines[:2]] == [[2.0, 1.0], [1.1]]
    assert list(clip.lines[0].get_xdata()) == [10, 20]
    assert list(clip.lines[0].get_ydata()) == [0.25, 0.125]
    assert list(clip.lines[1].get_ydata()) == []  # AGC off: no clip fraction, and said so.
    assert "AGC off (no clip fraction):\nno AGC" in clip.texts[0].get_text()
    # AGC's gradient norm before (—) and after (--) clipping; the run without AGC draws none.
    assert [list(line.get_ydata()) for line in norm.lines] == [[8.0, 4.0], [2.0, 3.0], [], []]
    assert [line.get_linestyle() for line in norm.lines[:2]] == ["-", "--"]
    assert norm.get_yscale() == "log"
    epochs = plot.figure(read)
    assert list(epochs.axes[2].lines[0].get_xdata()) == [0.5, 1.0]


def test_plot_writes_a_png(tmp_path):
    runs = [fake_run(tmp_path / "a", 0.16), fake_run(tmp_path / "b", 0.04)]
    assert plot.main([*map(str, runs), "--out", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_refuses_a_directory_without_metrics(tmp_path):
    with pytest.raises(SystemExit):
        plot.main([str(tmp_path), "--out", str(tmp_path / "x.png")])


def test_the_run_reader_splits_records_and_tells_unfinished_and_foreign_directories(tmp_path):
    run = read_run(fake_run(tmp_path / "a", 0.16))
    assert [r["step"] for r in run.train] == [10, 20] and [r["step"] for r in run.evals] == [20]
    assert run.finished and run.config["clipping"] == 0.16 and run.summary["diverged"] is False
    (tmp_path / "a" / "summary.json").unlink()
    unfinished = read_run(tmp_path / "a")
    assert not unfinished.finished and unfinished.config == {} and not is_finished(
        tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        read_run(tmp_path)




def test_a_running_run_is_read_with_the_configuration_it_started_with(tmp_path):
    directory = fake_run(tmp_path / "a", 0.16)
    (directory / "summary.json").unlink()
    (directory / "config.json").write_text(json.dumps({"clipping": 0.04}))
    run = read_run(directory)
    assert not run.finished and run.config == {"clipping": 0.04}
    assert plot.labels([run, read_run(fake_run(tmp_path / "b", 0.16))])[0] == "λ=0.04"


def test_a_diverged_run_is_finished_an_interrupted_one_is_not(tmp_path):
    assert is_finished(fake_run(tmp_path / "a", 0.16, diverged=True))
    interrupted = fake_run(tmp_path / "b", 0.16)
    summary = json.loads((interrupted / "summary.json").read_text())
    (interrupted / "summary.json").write_text(json.dumps({**summary, "interrupted": True}))
    assert not is_finished(interrupted)


def test_storing_a_run_keeps_its_records_and_summary_only(tmp_path):
    directory = fake_run(tmp_path / "run", 0.16)
    for name in ("config.json", "train.log", "checkpoints/8/state"):
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text("x")
    written = store(directory, tmp_path / "results" / "e" / "t")
    assert sorted(p.name for p in written) == ["metrics.jsonl", "summary.json"]
    assert sorted(p.name for p in (tmp_path / "results/e/t").iterdir()) == [
        "metrics.jsonl", "summary.json"]
    (directory / "summary.json").unlink()
    with pytest.raises(FileNotFoundError, match="holds no finished run"):
        store(directory, tmp_path / "elsewhere")


def test_runs_that_recorded_no_gradient_norms_get_no_norm_panel(tmp_path):
    directory = fake_run(tmp_path / "a", 0.16)
    records = [{k: v for k, v in json.loads(line).items()
                if k not in ("grad_norm", "clipped_grad_norm")}
               for line in (directory / "metrics.jsonl").read_text().splitlines()]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    fig = plot.figure([read_run(directory)])
    assert [ax.get_title() for ax in fig.axes] == list(plot.TITLES[:3])
