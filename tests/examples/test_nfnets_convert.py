"""DeepMind's weights through the example: convert, evaluate, fine-tune with a new head.

The checkpoint is DeepMind's tiny NFNet (``tests/data/deepmind_nfnets``) with its classifier
cut to 7 classes, written as DeepMind releases its weights (a dill pickle); the data is a
small generated set in CIFAR-10's format (10 classes), so the converted classifier is new.
"""

import dataclasses
import pickle

import dill
import numpy as np
import pytest

from examples.common.errors import UserError
from examples.nf_resnet import (
    checkpoint_init,
    convert,
    evaluate,
    nfnet_specs,
    pretrained,
    train,
)
from examples.nf_resnet.configs import TrainConfig
from helpers import deepmind_fixtures

HEAD = "NFNet/~/linear"


def write_cifar(directory, train_per_batch=16, test=20, seed=0):
    """CIFAR-10's python format: five training batches and a test batch of random images."""
    rng = np.random.default_rng(seed)
    folder = directory / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = test if name == "test_batch" else train_per_batch
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    return directory


@pytest.fixture
def tiny_variant(monkeypatch):
    fixture = deepmind_fixtures.load("nfnet_tiny")
    monkeypatch.setitem(nfnet_specs.VARIANTS, "nfnet_tiny", fixture.spec)
    return fixture


def body_params(params):
    return {k: v for k, v in params.items() if not k.startswith("head/")}


@pytest.mark.slow
def test_convert_evaluate_and_fine_tune_with_a_new_head(tmp_path, tiny_variant, capsys):
    params = {m: dict(e) for m, e in tiny_variant.params.items()}
    params[HEAD] = {"w": params[HEAD]["w"][:, :7], "b": params[HEAD]["b"][:7]}
    checkpoint = tmp_path / "tiny_haiku.npz"
    checkpoint.write_bytes(dill.dumps(params))
    data = write_cifar(tmp_path / "data")
    converted = tmp_path / "converted"
    assert convert.main(["--checkpoint", str(checkpoint), "--model", "nfnet_tiny",
                         "--workdir", str(converted), "--dataset", "cifar10",
                         "--data-dir", str(data)]) == 0
    # 7 classes became the data's 10 (a new head): the tiny NFNet's 10-class count again.
    assert "(228,047 parameters)" in capsys.readouterr().out

    saved = checkpoint_init.read_params(converted)
    theirs = tiny_variant.flat_params()
    for path, value in body_params(saved).items():
        name = "/".join(pretrained.deepmind_name(path, tiny_variant.spec))
        np.testing.assert_array_equal(value, theirs[name])
    assert saved["head/kernel"].shape == (256, 10)

    assert evaluate.main(["--workdir", str(converted)]) == 0
    assert "test_accuracy=" in capsys.readouterr().out

    config = TrainConfig(model="nfnet_tiny", dataset="cifar10", data_dir=str(data),
                         init_from=str(converted), steps=2, batch_size=16, eval_batch_size=20,
                         log_every_steps=1, dtype="float32", lr=1e-9, weight_decay=0.0)
    summary = train.train_and_evaluate(config, tmp_path / "fine_tuned")
    assert summary["steps"] == 2 and not summary["diverged"]
    assert summary["num_params"] == sum(v.size for v in saved.values())
    # With a negligible learning rate the run ends where --init-from started it.
    tuned = checkpoint_init.read_params(tmp_path / "fine_tuned")
    for path, value in body_params(saved).items():
        np.testing.assert_allclose(tuned[path], value, atol=1e-6, err_msg=path)


def test_init_from_keeps_a_fresh_head_of_another_shape_and_names_the_rest():
    model = {"blocks/0/convs/0/kernel": np.zeros((1, 1, 4, 8)), "head/kernel": np.ones((8, 3)),
             "head/bias": np.ones(3)}
    saved = {"blocks/0/convs/0/kernel": np.full((1, 1, 4, 8), 2.0),
             "head/kernel": np.zeros((8, 10)), "head/bias": np.zeros(10)}
    merged, fresh = checkpoint_init.merge_params(model, saved, "--init-from x")
    np.testing.assert_array_equal(merged["blocks/0/convs/0/kernel"], 2.0)
    np.testing.assert_array_equal(merged["head/kernel"], 1.0)
    assert fresh == ["head/kernel", "head/bias"]
    with pytest.raises(UserError, match="'blocks/0/convs/0/kernel' has shape \\(1, 1, 4, 9\\)"):
        checkpoint_init.merge_params(
            model, {**saved, "blocks/0/convs/0/kernel": np.zeros((1, 1, 4, 9))}, "x")
    with pytest.raises(UserError, match="lacks 'blocks/0/convs/0/kernel'"):
        checkpoint_init.merge_params(model, {"head/kernel": saved["head/kernel"],
                                             "head/bias": saved["head/bias"]}, "x")
    with pytest.raises(UserError, match="has 'stem/kernel', which the model has not"):
        checkpoint_init.merge_params(model, {**saved, "stem/kernel": np.zeros(1)}, "x")


def test_init_from_a_directory_without_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="holds no checkpoint"):
        checkpoint_init.read_params(tmp_path)


def test_convert_refuses_a_checkpoint_of_another_model(tmp_path, tiny_variant):
    checkpoint = tmp_path / "tiny.npz"
    np.savez(checkpoint, **tiny_variant.flat_params())
    data = write_cifar(tmp_path / "data", train_per_batch=2, test=2)
    with pytest.raises(UserError, match="lacks NF_ResNet/~/linear/b"):
        convert.convert(checkpoint, TrainConfig(model="nf_resnet_50", dataset="cifar10",
                                                data_dir=str(data)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_convert_refuses_grayscale_data(tmp_path, tiny_variant, monkeypatch):
    checkpoint = tmp_path / "tiny.npz"
    np.savez(checkpoint, **tiny_variant.flat_params())
    config = TrainConfig(model="nfnet_tiny")
    fake = dataclasses.make_dataclass("Data", ["in_features", "num_classes",
                                               "num_train_examples"])(1, 10, 2)
    monkeypatch.setattr(convert.image_data, "load_dataset", lambda _: fake)
    with pytest.raises(UserError, match="has 1 channel\\(s\\); DeepMind's networks take RGB"):
        convert.convert(checkpoint, config, tmp_path / "out")
