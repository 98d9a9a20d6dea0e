"""The ViT example trains in the shared trainer, and its command line sets every new field.

The training test needs Fashion-MNIST (Debian's dataset-fashion-mnist, $AGC_OPTAX_DATA or
the cache): ``requires_fashion_mnist`` skips it when the data is missing, or fails it in CI.
"""

import dataclasses
import json

import jax.numpy as jnp
import pytest
from flax import nnx

import agc_optax
from examples.common import errors, flags
from examples.vit import configs, main, models, train
from experiments.runs import read_run

# 1024 training examples in batches of 64: 16 steps per epoch.
TINY = dataclasses.replace(configs.get_config("smoke"), train_examples=1024, test_examples=500,
                           batch_size=64, eval_batch_size=250, steps=48, log_every_steps=8,
                           warmup_epochs=0.25)


@pytest.mark.slow
@pytest.mark.requires_fashion_mnist
@pytest.mark.parametrize("placement", ["before", "after"])
def test_vit_trains_on_a_small_subset(tmp_path, placement):
    config = dataclasses.replace(TINY, agc_placement=placement, clipping=0.05)
    summary = train.train_and_evaluate(config, tmp_path)
    run = read_run(tmp_path)
    losses = [r["train_loss"] for r in run.train]
    assert losses[-1] < losses[0] - 0.3, losses
    assert [r["step"] for r in run.evals] == [16, 32, 48]
    assert summary["final_test_accuracy"] > 0.4  # Chance is 0.1.
    assert not summary["diverged"] and summary["num_params"] == 19_594
    assert 0 < run.train[-1]["clip_fraction"] <= 1
    recorded = json.loads((tmp_path / "summary.json").read_text())["config"]
    assert recorded["agc_placement"] == placement


def test_every_vit_flag_sets_its_field(tmp_path):
    argv = ["--preset", "cpu", "--workdir", str(tmp_path), "--agc-placement", "after",
            "--agc-units", "optax_rank", "--no-clip-norms-and-biases", "--b2", "0.95",
            "--lr", "3e-3", "--clip-global-norm", "1.0", "--model", "vit_small"]
    config, options = flags.parse(argv, prog=main.PROG, description=main.DESCRIPTION,
                                  presets=configs.PRESETS, get_config=configs.get_config)
    assert (config.agc_placement, config.agc_units, config.clip_norms_and_biases) == (
        "after", "optax_rank", False)
    assert (config.b2, config.lr, config.clip_global_norm, config.model) == (
        0.95, 3e-3, 1.0, "vit_small")
    assert config.epochs == configs.get_config("cpu").epochs and options.workdir == tmp_path


@pytest.mark.parametrize("flag", [["--agc-placement", "middle"], ["--agc-units", "rank"]])
def test_unknown_choices_are_one_line_errors(flag, capsys):
    with pytest.raises(SystemExit):
        main.main(["--preset", "smoke", *flag])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(("units", "query", "out"), [
    ("infer", (0,), (0, 1)),  # The model's own contractions.
    ("shape", (0, 1), (0, 1)),  # Every axis but the last: query units mix the heads.
    ("optax_rank", (0,), (0,)),  # Axis 0 of every rank-3 kernel: out units split by head.
])
def test_agc_units_flag_picks_the_rule(units, query, out):
    config = dataclasses.replace(configs.get_config("smoke"), agc_units=units)
    rule = models.unit_axes(config) or agc_optax.default_unit_axes
    assert rule("blocks/0/attention/query/kernel", jnp.zeros((32, 2, 16))) == query
    assert rule("blocks/0/attention/out/kernel", jnp.zeros((2, 16, 32))) == out


def test_a_model_whose_patches_do_not_tile_the_images_is_a_user_error():
    config = dataclasses.replace(configs.get_config("cpu"), model="vit_cpu",
                                 dataset="cifar10")  # 7 ∤ 32
    # The variants with 4-pixel patches tile 32×32; the 7-pixel ones do not.
    tiling = r"\['vit_cpu_p4', 'vit_small'\]"
    with pytest.raises(errors.UserError, match=rf"--model vit_cpu .* pick one of {tiling}"):
        models.create_model(config, 10, 3, nnx.Rngs(0))


@pytest.mark.parametrize("name", ["b1", "b2"])
def test_adam_decays_outside_zero_one_are_user_errors(name):
    config = dataclasses.replace(configs.get_config("smoke"), **{name: 1.0})
    with pytest.raises(errors.UserError, match=f"--{name} 1.0"):
        train.create_optimizer(config, 10, 5)
