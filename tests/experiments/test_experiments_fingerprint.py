"""A stored run stands for its trial when its recorded configuration is the trial's."""

from __future__ import annotations

import dataclasses

import pytest

from examples.common import config as config_lib
from examples.common import flags, workdir
from examples.nf_resnet import configs
from experiments import fingerprint, nf_resnet
from experiments.spec import Run, Trial
from tests.helpers.experiment_fixtures import TINY, trial_config


def differences(stored, experiment=TINY, index=0):
    return fingerprint.stored_run_differences(experiment, experiment.all_trials()[index], stored)


def test_a_trial_is_its_preset_with_the_grids_and_its_own_overrides():
    config = fingerprint.trial_config(TINY, TINY.all_trials()[1])
    assert config == dataclasses.replace(configs.get_config("smoke"), steps=6,
                                         train_examples=512, log_every_steps=2, clipping=0.0)
    seeded = Trial(TINY.runs[0], 3)
    assert fingerprint.trial_config(TINY, seeded).seed == 3


def test_an_override_that_is_no_field_is_named():
    typo = dataclasses.replace(TINY, runs=(Run("r", {"clip": 0.1, "lr": 0.1}, {}),))
    with pytest.raises(ValueError, match=r"tiny/r overrides \['clip'\], which "
                                         r"examples.nf_resnet.configs.base.TrainConfig has no "
                                         r"field for"):
        fingerprint.trial_config(typo, typo.all_trials()[0])


def test_the_same_configuration_matches_and_each_changed_setting_is_named():
    assert differences(trial_config()) == []
    assert differences(trial_config(weight_decay=0.123, flip=False)) == [
        "flip: False -> True", "weight_decay: 0.123 -> 5e-05"]
    assert differences({}) == ["(the run recorded no configuration)"]


def test_execution_only_and_unused_fields_do_not_decide():
    # Another microbatch split, CPU devices, logging interval, data directory; epochs
    # beside steps (set in both).
    assert differences(trial_config(microbatch_size=8, cpu_devices=2, log_every_steps=7,
                                    eval_batch_size=3, data_dir="/x", epochs=99)) == []
    assert differences(trial_config(steps=None, epochs=99)) == [
        "epochs: 99 -> 3", "steps: None -> 6"]


def test_a_field_the_run_did_not_record_must_have_its_default():
    # A field added after the run: its default keeps the old behaviour, or it is a change.
    stored = trial_config()
    del stored["erase_probability"], stored["cpu_devices"]  # cpu_devices: execution-only
    assert differences(stored) == []
    changed = dataclasses.replace(TINY, overrides={**TINY.overrides, "erase_probability": 0.5})
    assert differences(stored, changed) == [
        "erase_probability: (not recorded; default 0.0) -> 0.5"]


def test_a_recorded_field_the_configuration_no_longer_has_is_a_difference():
    assert differences({**trial_config(), "retired_flag": 1}) == [
        "retired_flag: 1 -> (no longer a setting)"]


@pytest.mark.parametrize("model, counts", [("bn_resnet_nano", True), ("nf_resnet_nano", False)])
def test_the_microbatch_split_decides_only_a_batch_norm_models_result(model, counts):
    # BatchNorm normalizes each microbatch on its own; devices split the same global batch.
    grid = dataclasses.replace(TINY, overrides={**TINY.overrides, "model": model,
                                                "microbatch_size": 256})
    stored = trial_config(grid)
    assert differences({**stored, "microbatch_size": 128}, grid) == (
        ["microbatch_size: 128 -> 256"] if counts else [])
    assert differences({**stored, "cpu_devices": 2}, grid) == []


def test_the_batch_norm_models_are_the_families_own_word():
    assert configs.has_batch_statistics("bn_resnet_cpu")
    assert not configs.has_batch_statistics("nf_resnet_cpu")
    assert not configs.has_batch_statistics("nfnet_f0")
    runs = {r.overrides["model"] for r in nf_resnet.NF_VS_BN.runs}
    assert {m for m in runs if configs.has_batch_statistics(m)} == {"bn_resnet_cpu"}


def test_execution_only_fields_have_one_source():
    # The trainer's resume check, its --resume help and the experiments read the metadata.
    marked = {f.name for f in dataclasses.fields(config_lib.LoopConfig)
              if f.metadata.get("execution_only")}
    assert marked == {"microbatch_size", "data_dir", "eval_batch_size", "log_every_steps",
                      "cpu_devices"}
    assert set(workdir.EXECUTION_ONLY) == marked
    assert workdir.BATCH_STATISTICS_FIELDS == ("microbatch_size",)
    parser = flags.build_parser(configs.get_config("smoke"), prog="p", description="",
                                presets=configs.PRESETS)
    resume = next(a for a in parser._actions if a.dest == "resume")
    assert all(f"--{name.replace('_', '-')}" in resume.help for name in marked)
