"""The NF-ResNet example's command line and plotting command."""

import dataclasses
import importlib
import json
import pathlib

import pytest

from examples.common import flags, plot, runs
from examples.nf_resnet import configs, main


def parse(argv):
    return flags.parse(argv, prog=main.PROG, description=main.DESCRIPTION,
                       presets=configs.PRESETS, get_config=configs.get_config)


def test_flags_override_the_preset_field_by_field():
    config, options = parse(
        ["--preset", "cpu", "--batch-size", "4096", "--microbatch-size", "256", "--agc-eps",
         "1e-2", "--agc-exclude", "^head/|skip_gain", "--steps", "30", "--workdir", "w",
         "--no-flip", "--se-ratio", "0.25", "--train-examples", "none"])
    assert (config.batch_size, config.microbatch_size, config.steps) == (4096, 256, 30)
    assert (config.agc_eps, config.agc_exclude) == (1e-2, "^head/|skip_gain")
    assert (config.flip, config.se_ratio, config.train_examples) == (False, 0.25, None)
    assert config.lr == 0.8 and config.clipping == 0.16  # not given: the cpu preset's
    assert options == flags.Options("cpu", pathlib.Path("w"), resume=False, overwrite=False)
    config, options = parse(["--resume"])
    assert config == configs.get_config("smoke")
    assert options == flags.Options("smoke", pathlib.Path("runs/smoke"), resume=True,
                                    overwrite=False)


def test_every_config_field_has_a_documented_flag_showing_the_presets_value(capsys):
    gpu = configs.get_config("gpu")
    parser = flags.build_parser(gpu, prog="p", description="d", presets=configs.PRESETS)
    actions = {a.dest: a for a in parser._actions}
    for field in dataclasses.fields(configs.TrainConfig):
        action = actions[field.name]
        assert action.option_strings[0] == "--" + field.name.replace("_", "-")
        assert action.default == getattr(gpu, field.name)
        assert len(action.help) > 15, field.name
    with pytest.raises(SystemExit):
        parse(["--preset", "gpu", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--model {" in text and "(default: nf_resnet_18)" in text
    assert "(default: 0.04)" in text  # gpu's clipping, not the base config's 0.01
    assert "the peak rate is lr · batch_size / 256. (default: 0.2)" in text


def test_field_docs_read_every_base_class_and_let_subclasses_win():
    docs = flags.field_docs(configs.TrainConfig)
    assert docs["model"] == (  # TrainConfig's lines, not LoopConfig's.
        "the variant: ``nfnet_f0`` … ``nfnet_f7`` and ``nf_resnet_{50,101,152,200}`` "
        "DeepMind's networks (``nfnet_specs.VARIANTS``), ``nf_resnet_{nano,cpu,18}`` the small "
        "NF-ResNets and ``bn_resnet_<size>`` the BatchNorm ResNets (``models.VARIANTS``).")
    assert docs["seed"].startswith("seeds initialisation")  # from the shared LoopConfig
    assert "at once; ``None``: no split). BatchNorm then" in docs["microbatch_size"]  # joined


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "x"], "invalid int value: 'x'"),
    (["--model", "resnet"], "invalid choice: 'resnet'"),
    (["--preset", "tpu"], "invalid choice: 'tpu'"),
])
def test_a_bad_flag_is_a_one_line_usage_error(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


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
    read = [runs.read_run(fake_run(tmp_path / "a", 0.16)),
            runs.read_run(fake_run(tmp_path / "b", 0.0, diverged=True))]
    assert plot.labels(read) == ["λ=0.16", "no AGC (diverged)"]


def test_labels_name_any_differing_field_but_not_execution_only_ones(tmp_path):
    read = [runs.read_run(fake_run(tmp_path / "a", 0.16, activation="relu", microbatch_size=32)),
            runs.read_run(fake_run(tmp_path / "b", 0.16, activation="gelu"))]
    assert plot.labels(read) == ["activation=relu", "activation=gelu"]


def test_one_run_is_named_by_its_settings_not_its_directory(tmp_path):
    (run,) = [runs.read_run(fake_run(tmp_path / "run_0042", 0.16))]
    assert plot.labels([run]) == ["nf_resnet_cpu batch=128 lr=0.8 λ=0.16"]
    fig = plot.figure([run])
    assert fig._suptitle.get_text() == "nf_resnet_cpu batch=128 lr=0.8 λ=0.16"


def test_the_figure_shows_accuracy_loss_and_clip_fraction_against_steps(tmp_path):
    read = [runs.read_run(fake_run(tmp_path / "a", 0.16)),
            runs.read_run(fake_run(tmp_path / "b", 0.0))]
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
    run = runs.read_run(fake_run(tmp_path / "a", 0.16))
    assert [r["step"] for r in run.train] == [10, 20] and [r["step"] for r in run.evals] == [20]
    assert run.finished and run.config["clipping"] == 0.16 and run.spec == {}
    (tmp_path / "a" / "summary.json").unlink()
    unfinished = runs.read_run(tmp_path / "a")
    assert not unfinished.finished and unfinished.config == {} and not runs.is_finished(
        tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        runs.read_run(tmp_path)


@pytest.mark.parametrize("family", ["nf_resnet", "vit"])
def test_every_preset_loads_and_an_unknown_one_is_named(family):
    configs = importlib.import_module(f"examples.{family}.configs")
    for preset in configs.PRESETS:
        assert isinstance(configs.get_config(preset), configs.TrainConfig)
    with pytest.raises(ValueError, match=r"Unknown preset 'tiny'; choose from \('smoke'"):
        configs.get_config("tiny")
