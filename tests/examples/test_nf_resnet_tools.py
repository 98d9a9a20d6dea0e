"""The NF-ResNet example's command line and presets."""

import dataclasses
import importlib
import pathlib

import pytest

from examples.common import flags
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


@pytest.mark.parametrize("family", ["nf_resnet", "vit"])
def test_every_preset_loads_and_an_unknown_one_is_named(family):
    configs = importlib.import_module(f"examples.{family}.configs")
    for preset in configs.PRESETS:
        assert isinstance(configs.get_config(preset), configs.TrainConfig)
    with pytest.raises(ValueError, match=r"Unknown preset 'tiny'; choose from \('smoke'"):
        configs.get_config("tiny")
