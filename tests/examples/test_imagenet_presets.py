"""The ImageNet presets against their sources: DeepMind's nfnets code and the NFNets paper.

Every expected number below is written out from the source the preset's docstring cites
(``nfnets/experiment_nfnets.py``, ``nfnets/experiment.py``, ``base.nfnet_params``,
arXiv:2102.06171), not read from the preset or the model table.
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import agc_optax
from examples.nf_resnet import image_data, nfnet, nfnet_specs, randaugment, train
from examples.nf_resnet.configs import get_config, validate

IMAGENET_TRAIN = 1_281_167
create_optimizer = train.create_optimizer
# A small NFNet of F0's design, with the full network's parameter names.
TINY_ROW = {"width": [16, 32, 32, 32], "depth": [1, 1, 1, 1], "group_width": [8] * 4,
            "train_imsize": 32, "test_imsize": 32, "drop_rate": 0.2}


def f0_param_paths() -> list[str]:
    """The parameter paths of full-size NFNet-F0, without allocating it."""
    model = nnx.eval_shape(lambda: nfnet.NFNet(nfnet_specs.VARIANTS["nfnet_f0"], 1000,
                                               dtype=None, rngs=nnx.Rngs(0)))
    leaves = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]
    return [agc_optax.path_to_str(path) for path, _ in leaves]


def tiny_params() -> dict[str, jax.Array]:
    """The parameters of a tiny NFNet, every leaf set to 1 (so that decay shows)."""
    model = nnx.eval_shape(lambda: nfnet.NFNet(nfnet_specs.nfnet_spec(TINY_ROW), 10,
                                               dtype=None, rngs=nnx.Rngs(0)))
    shapes = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return jax.tree.map(lambda leaf: jnp.ones(leaf.shape, leaf.dtype), shapes)


def by_path(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {agc_optax.path_to_str(path): np.asarray(leaf) for path, leaf in leaves}


def schedule_of(config, examples: int = IMAGENET_TRAIN):
    steps_per_epoch = examples // config.batch_size
    _, schedule = create_optimizer(config, config.epochs * steps_per_epoch, steps_per_epoch)
    return schedule, steps_per_epoch


def test_nfnet_f0_recipe_is_deepminds():
    config = get_config("imagenet_nfnet_f0")
    assert (config.model, config.batch_size, config.epochs) == ("nfnet_f0", 4096, 360)
    assert (config.lr, config.momentum, config.warmup_epochs) == (0.1, 0.9, 5)
    assert (config.weight_decay, config.label_smoothing) == (2e-5, 0.1)
    assert (config.clipping, config.agc_eps) == (0.01, 1e-3)
    assert (config.ema_decay, config.dtype) == (0.99999, "bfloat16")
    assert (config.drop_path_rate, config.dropout_rate) == (0.25, 0.2)  # F0's rates
    assert image_data.image_sizes(config) == (192, 256)  # F0's train / test sizes
    assert (config.mixing, config.mixup_alpha) == ("mixup_cutmix", 0.2)
    assert randaugment.parse_level(config.randaugment) == (4, 5)  # F0's "405"
    assert (config.eval_preprocessing, config.eval_batch_size) == ("resize_crop", 50)
    assert (config.crop_padding, config.flip) == (0, False)  # the host crops and flips


def test_nf_resnet50_recipe_is_deepminds_plus_agc():
    config = get_config("imagenet_nf_resnet50")
    assert (config.model, config.batch_size, config.epochs) == ("nf_resnet_50", 1024, 90)
    assert (config.lr, config.momentum, config.warmup_epochs) == (0.1, 0.9, 5)
    assert (config.weight_decay, config.label_smoothing) == (1e-4, 0.1)
    assert (config.ema_decay, config.dtype) == (0.0, "float32")
    assert (config.drop_path_rate, config.dropout_rate) == (0.1, 0.0)  # NF_ResNet defaults
    assert image_data.image_sizes(config) == (224, 224)
    assert (config.mixing, config.randaugment) == ("none", None)
    assert (config.eval_preprocessing, config.eval_batch_size) == ("crop_resize", 50)
    assert (config.clipping, config.agc_eps) == (0.01, 1e-3)  # the paper's AGC, our addition


@pytest.mark.parametrize("preset, peak", [("imagenet_nfnet_f0", 1.6),
                                          ("imagenet_nf_resnet50", 0.4)])
def test_schedules_warm_up_for_5_epochs_to_lr_times_batch_over_256_then_decay_to_0(preset,
                                                                                   peak):
    config = get_config(preset)
    schedule, steps_per_epoch = schedule_of(config)
    warmup = 5 * steps_per_epoch
    total = config.epochs * steps_per_epoch
    np.testing.assert_allclose([schedule(0), schedule(warmup // 2), schedule(warmup)],
                               [0.0, peak / 2, peak], rtol=1e-3)
    np.testing.assert_allclose(schedule((warmup + total) // 2), peak / 2, rtol=1e-3)  # cosine
    np.testing.assert_allclose(schedule(total), 0.0, atol=1e-9)


def test_finetune_preset_starts_from_a_conversion_with_a_small_schedule():
    config = get_config("finetune")
    assert (config.model, config.init_from) == ("nfnet_f0", "runs/nfnet_f0_deepmind")
    assert (config.dataset, config.dtype) == ("image_folder", "auto")
    assert (config.batch_size, config.epochs, config.warmup_epochs) == (256, 10, 1)
    schedule, steps_per_epoch = schedule_of(config, examples=10_000)
    np.testing.assert_allclose(schedule(steps_per_epoch), 0.01, rtol=1e-6)  # lr 0.01 peak
    assert (config.clipping, config.weight_decay) == (0.01, 2e-5)


@pytest.mark.parametrize("preset", ["imagenet_nfnet_f0", "imagenet_nf_resnet50", "finetune"])
def test_agc_leaves_out_exactly_the_classifier_kernel_of_nfnet_f0(preset):
    # DeepMind's pred_fc: the final linear layer's w only; its bias is clipped.
    pattern = re.compile(get_config(preset).agc_exclude)
    assert [p for p in f0_param_paths() if pattern.search(p)] == ["head/kernel"]


def test_agc_clips_every_leaf_but_the_classifier_kernel():
    settings = {(c.clipping, c.agc_eps, c.agc_exclude) for c in map(
        get_config, ("imagenet_nfnet_f0", "imagenet_nf_resnet50", "finetune"))}
    assert len(settings) == 1  # one AGC for the three presets
    (clipping, eps, exclude), = settings
    params = tiny_params()
    grads = jax.tree.map(lambda p: 1e3 * p, params)
    tx = agc_optax.agc(clipping, eps, exclude=exclude)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    unclipped = [path for path, update in by_path(updates).items()
                 if np.allclose(update, 1e3)]
    assert unclipped == ["head/kernel"]


@pytest.mark.parametrize("preset", ["imagenet_nfnet_f0", "imagenet_nf_resnet50"])
def test_weight_decay_skips_gains_and_biases_as_deepminds_pred_gb(preset):
    config = dataclasses.replace(get_config(preset), warmup_epochs=0, clipping=0.0)
    params = tiny_params()
    tx, _ = create_optimizer(config, total_steps=100, steps_per_epoch=10)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    peak = config.lr * config.batch_size / 256
    for path, update in by_path(updates).items():
        name = path.rsplit("/", 1)[-1]
        # DeepMind: no decay where name in ('scale', 'offset', 'b') or 'gain'/'bias' in it.
        exempt = name in ("scale", "offset", "b") or "gain" in name or "bias" in name
        expected = 0.0 if exempt else -peak * config.weight_decay * (1 + config.momentum)
        np.testing.assert_allclose(update, expected, rtol=1e-5, err_msg=path)


def test_presets_pass_the_flag_checks_once_given_their_data(tmp_path):
    for preset in ("imagenet_nfnet_f0", "imagenet_nf_resnet50", "finetune", "smoke"):
        validate(dataclasses.replace(get_config(preset), data_dir=str(tmp_path)))


def test_smoke_preset_trains_image_folders_at_64_pixels_and_keeps_fashion_mnist():
    config = get_config("smoke")
    assert config.dataset == "fashion_mnist" and config.randaugment is None
    assert image_data.image_sizes(dataclasses.replace(config, dataset="image_folder")) == (64, 64)
