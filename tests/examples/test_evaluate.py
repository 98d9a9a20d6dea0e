"""Restoring a trained run: `python -m examples.nf_resnet.evaluate` and `evaluate.load`."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from examples.nf_resnet import configs, evaluate, train
from experiments.runs import read_run

# 512 training examples in batches of 64: checkpoints at steps 8 and 16.
TINY = dataclasses.replace(configs.get_config("smoke"), train_examples=512, test_examples=300,
                           batch_size=64, eval_batch_size=100, steps=16, log_every_steps=8)


@pytest.mark.slow
@pytest.mark.requires_fashion_mnist
def test_a_restored_run_reports_and_predicts_its_test_accuracy(tmp_path, capsys):
    summary = train.train_and_evaluate(TINY, tmp_path)
    evals = {r["step"]: r for r in read_run(tmp_path).evals}

    assert evaluate.main(["--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"step 16: test_accuracy={summary['final_test_accuracy']:.4f}" in out
    assert "on 300 test images" in out
    assert evaluate.main(["--workdir", str(tmp_path), "--step", "8"]) == 0
    assert f"step 8: test_accuracy={evals[8]['test_accuracy']:.4f}" in capsys.readouterr().out

    # Prediction: the restored model's argmax, counted here, gives the recorded accuracy.
    trained = evaluate.load(tmp_path)
    images, labels = trained.setup.data.test_images, trained.setup.data.test_labels
    predicted = np.argmax(np.asarray(trained.predict(images)), axis=-1)
    assert trained.step == 16 and len(labels) == 300
    assert np.mean(predicted == labels) == pytest.approx(summary["final_test_accuracy"])

    # --params prints the matching parameters: values of small ones, the norm of large ones.
    params = dict(flatten_params(trained.model))
    assert evaluate.main(["--workdir", str(tmp_path), "--params", "skip_gain$|^head/kernel"]) == 0
    printed = capsys.readouterr().out.splitlines()[1:]
    skip_gains = sorted(name for name in params if name.endswith("skip_gain"))
    assert len(skip_gains) >= 2
    assert printed == [f"{name} (): {params[name].item():.4g}" for name in skip_gains] + [
        f"head/kernel {params['head/kernel'].shape}: norm "
        f"{np.sqrt(np.sum(np.square(params['head/kernel'].astype(np.float64)))):.4g}"]
    assert evaluate.main(["--workdir", str(tmp_path), "--params", "skip_gains"]) == 2
    assert capsys.readouterr().err.startswith(
        "error: --params 'skip_gains' matches no parameter; paths look like ")


def flatten_params(model):
    """``(path string, value)`` of every parameter, written here from the key paths."""
    leaves = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]
    for path, leaf in leaves:
        keys = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        yield "/".join(keys[:-1] if keys[-1] == "value" else keys), np.asarray(leaf)


def test_evaluating_a_directory_without_a_run_is_a_user_error(tmp_path, capsys):
    assert evaluate.main(["--workdir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: --workdir {tmp_path} holds no config.json: pass the --workdir of a "
        "training run."]


@pytest.mark.slow
@pytest.mark.requires_fashion_mnist
def test_a_restored_vit_run_reports_and_predicts_its_test_accuracy(tmp_path, capsys):
    from examples.vit import configs as vit_configs
    from examples.vit import evaluate as vit_evaluate
    from examples.vit import train as vit_train

    config = dataclasses.replace(vit_configs.get_config("smoke"), train_examples=256,
                                 test_examples=200, batch_size=64, eval_batch_size=100, steps=4,
                                 log_every_steps=4)
    summary = vit_train.train_and_evaluate(config, tmp_path)
    assert vit_evaluate.main(["--workdir", str(tmp_path)]) == 0
    assert f"step 4: test_accuracy={summary['final_test_accuracy']:.4f}" in capsys.readouterr().out
    trained = vit_evaluate.load(tmp_path)
    predicted = np.argmax(np.asarray(trained.predict(trained.setup.data.test_images)), axis=-1)
    assert np.mean(predicted == trained.setup.data.test_labels) == pytest.approx(
        summary["final_test_accuracy"])
