"""The NF-ResNet example's train state carries BatchNorm statistics: updated, evaluated, saved.

A toy network (BatchNorm over the pixels, mean-pooled, a linear head) stands in for a
BatchNorm ResNet in ``examples.nf_resnet.train``; the expected running averages are
written from BatchNorm's definition in float64 NumPy.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from examples.common import checkpointing
from examples.nf_resnet import networks, train
from examples.nf_resnet.configs import TrainConfig

MOMENTUM = 0.9
CONFIG = TrainConfig(batch_size=8, crop_padding=0, flip=False, clipping=0.0,
                     label_smoothing=0.0)


class ToyBatchNormNet(nnx.Module):
    def __init__(self, num_classes: int, in_features: int, use_norm: bool, rngs: nnx.Rngs):
        self.norm = nnx.BatchNorm(in_features, momentum=MOMENTUM, rngs=rngs) if use_norm else None
        self.head = nnx.Linear(in_features, num_classes, rngs=rngs)

    def __call__(self, x):
        x = self.norm(x) if self.norm is not None else x
        return self.head(jnp.mean(x, axis=(1, 2)))


MEAN, STD = np.float32([0.4, 0.6]), np.float32([0.2, 0.3])


def create(use_norm: bool = True):
    toy = lambda config, classes, features, rngs: ToyBatchNormNet(  # noqa: E731
        classes, features, use_norm, rngs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(networks, "create_model", toy)
        return train.create_train_state(CONFIG, num_classes=3, in_features=2, mean=MEAN,
                                        std=STD, total_steps=10, steps_per_epoch=5)


def step_fn(static):
    return jax.jit(functools.partial(train.train_step, static=static))


def batch(n: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (n, 4, 4, 2), dtype=np.uint8),
            "label": rng.integers(0, 3, n).astype(np.int32)}


def test_the_state_holds_batch_statistics_apart_from_the_parameters():
    train_state, _ = create()
    assert set(train_state.batch_stats["norm"]) == {"mean", "var"}
    assert "mean" not in train_state.params["norm"]  # scale and bias only
    np.testing.assert_array_equal(train_state.batch_stats["norm"]["var"][...], [1.0, 1.0])
    empty, _ = create(use_norm=False)
    assert jax.tree.leaves(empty.batch_stats) == []


def test_a_training_step_moves_the_running_averages_by_the_batch_statistics():
    train_state, ctx = create()
    data = batch()
    new_state, _ = step_fn(ctx)(train_state, data)
    pixels = (data["image"].astype(np.float64) / 255 - MEAN) / STD  # no crop, no flip
    batch_mean = pixels.mean(axis=(0, 1, 2))
    batch_var = pixels.var(axis=(0, 1, 2))
    norm = new_state.batch_stats["norm"]
    np.testing.assert_allclose(norm["mean"][...], (1 - MOMENTUM) * batch_mean, rtol=1e-5)
    np.testing.assert_allclose(norm["var"][...], MOMENTUM + (1 - MOMENTUM) * batch_var,
                               rtol=1e-5)
    assert int(new_state.step) == 1


def test_evaluation_normalises_with_the_running_averages_not_the_batch():
    train_state, ctx = create()
    train_state, _ = step_fn(ctx)(train_state, batch())
    eval_fn = jax.jit(functools.partial(train.eval_step, static=ctx))
    data = batch(seed=1)
    alone = {k: v[:1] for k, v in data.items()} | {"mask": np.float32([1])}
    among_others = data | {"mask": np.float32([1] + [0] * 7)}
    # With batch statistics, the first example's logits would depend on the other seven.
    np.testing.assert_allclose(eval_fn(train_state, alone)["loss"],
                               eval_fn(train_state, among_others)["loss"], rtol=1e-6)


@pytest.mark.parametrize("use_norm", [True, False], ids=["batch_norm", "no_batch_stats"])
def test_a_checkpoint_restores_the_batch_stats(tmp_path, use_norm):
    fresh, ctx = create(use_norm)
    trained, _ = step_fn(ctx)(fresh, batch())
    saver = checkpointing.Checkpointer(tmp_path)
    saver.save(1, trained, {"position": 3})
    saver.close()
    restored, data_state, step = checkpointing.Checkpointer(tmp_path).restore_latest(
        fresh, resume=True)
    assert (step, data_state) == (1, {"position": 3})
    assert jax.tree.structure(restored) == jax.tree.structure(trained)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(trained), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if use_norm:  # The statistics moved, so restoring them is observable.
        assert not np.allclose(restored.batch_stats["norm"]["mean"][...], 0)
