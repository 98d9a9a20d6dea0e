"""The image-data flags of the NF-ResNet example: parsing, and the checks that name a flag."""

import dataclasses

import pytest

from examples.common import errors, flags
from examples.nf_resnet import configs, main
from examples.nf_resnet.configs import TrainConfig, validate


def parse(argv):
    return flags.parse(argv, prog=main.PROG, description=main.DESCRIPTION,
                       presets=configs.PRESETS, get_config=configs.get_config)


def test_the_image_flags_parse_onto_the_preset():
    config, _ = parse(["--preset", "gpu", "--dataset", "synthetic",
                       "--randaugment", "none", "--mixing", "cutmix", "--image-size", "128",
                       "--eval-image-size", "none", "--ema-decay", "0.999",
                       "--data-workers", "2", "--on-corrupt", "raise",
                       "--synthetic-classes", "10", "--eval-preprocessing", "crop_resize"])
    assert (config.dataset, config.randaugment, config.mixing) == ("synthetic", None, "cutmix")
    assert (config.image_size, config.eval_image_size, config.ema_decay) == (128, None, 0.999)
    assert (config.data_workers, config.on_corrupt, config.synthetic_classes) == (2, "raise", 10)
    assert config.eval_preprocessing == "crop_resize"
    assert (config.batch_size, config.model) == (512, "nf_resnet_18")  # the preset's
    validate(config)


@pytest.mark.parametrize("argv", [["--dataset", "imagenet"], ["--mixing", "cutout"],
                                  ["--on-corrupt", "ignore"],
                                  ["--eval-preprocessing", "resize"]])
def test_unknown_choices_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit):
        parse(argv)
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("changes, message", [
    (dict(dataset="image_folder"), "--dataset image_folder needs --data-dir DIR"),
    (dict(randaugment="405"), "--randaugment 405: RandAugment runs in the image loaders of "
                              "--dataset image_folder or tfds, not with --dataset fashion_mnist"),
    (dict(dataset="synthetic", randaugment="405"), "not with --dataset synthetic"),
    (dict(dataset="tfds", randaugment="4x5"), "--randaugment: RandAugment level '4x5'"),
    (dict(image_size=4), "--image-size 4: must be at least 8"),
    (dict(eval_image_size=0), "--eval-image-size 0: must be at least 8"),
    (dict(mixing="mixup", mixup_alpha=0.0), "--mixup-alpha 0.0: must be > 0 with --mixing"),
    (dict(ema_decay=1.0), r"--ema-decay 1.0: must be in \[0, 1\)"),
    (dict(ema_decay=-0.1), "--ema-decay -0.1"),
    (dict(data_workers=-1), "--data-workers -1: must be ≥ 0"),
    (dict(synthetic_classes=0), "--synthetic-classes 0: must be at least 1"),
    (dict(batch_size=0), "--batch-size 0"),  # the shared checks run too
])
def test_each_bad_combination_is_one_user_error_naming_its_flag(changes, message):
    with pytest.raises(errors.UserError, match=message):
        validate(dataclasses.replace(TrainConfig(), **changes))


def test_mixing_and_image_flags_are_accepted_where_they_apply(tmp_path):
    validate(TrainConfig(mixing="mixup_cutmix"))  # on device: any dataset
    validate(TrainConfig(mixing="cutmix", mixup_alpha=0.0))  # α unused without MixUp
    validate(TrainConfig(dataset="tfds", randaugment="410"))  # TFDS's own data_dir
    validate(TrainConfig(dataset="image_folder", data_dir=str(tmp_path), randaugment="415",
                         image_size=64, ema_decay=0.99999, data_workers=4))
