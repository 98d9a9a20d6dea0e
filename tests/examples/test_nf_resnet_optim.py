"""The NF-ResNet optimizer, step by step against float64 NumPy written from its definition.

``create_optimizer`` chains AGC (on the loss gradient, classifier excluded), then weight
decay on kernels only, then SGD with Nesterov momentum on a warm-up + cosine schedule.
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from examples.nf_resnet import train
from examples.nf_resnet.configs import TrainConfig

LAMBDA, EPS, WD, MU = 0.05, 1e-3, 0.1, 0.9
CONFIG = TrainConfig(batch_size=512, lr=0.25, warmup_epochs=0, momentum=MU, weight_decay=WD,
                     clipping=LAMBDA, agc_eps=EPS, agc_exclude="^head/")
PEAK = 0.25 * 512 / 256


def tree(rng: np.random.Generator) -> dict:
    """Params of every kind: conv kernel and bias, a zero skip gain, the head."""
    return {"blocks": {"kernel": rng.normal(0, 0.5, (6, 4)), "bias": rng.normal(0, 0.1, 4),
                       "skip_gain": np.zeros(())},
            "head": {"kernel": rng.normal(0, 0.5, (4, 3)), "bias": np.zeros(3)}}


def gradient(rng: np.random.Generator) -> dict:
    """Per-unit gradient scales from 1e-3 to 10: some units clip, some do not."""
    grads = tree(rng)
    grads["blocks"]["kernel"] *= np.float64([1e-3, 1e-2, 1.0, 10.0])
    grads["blocks"]["skip_gain"] = np.float64(0.01)
    grads["head"]["bias"] = np.float64([1.0, -2.0, 0.5])
    return grads


def agc(grad: np.ndarray, param: np.ndarray) -> np.ndarray:
    """AGC's definition: a unit is a kernel column (fan-in = axis 0), or a whole vector."""
    axis = 0 if grad.ndim == 2 else None
    g_norm = np.sqrt(np.sum(grad**2, axis=axis, keepdims=axis is not None))
    w_norm = np.sqrt(np.sum(param**2, axis=axis, keepdims=axis is not None))
    max_norm = LAMBDA * np.maximum(w_norm, EPS)
    return np.where(g_norm > max_norm, grad * max_norm / np.maximum(g_norm, 1e-300), grad)


def expected_steps(params: dict, grads: list[dict], lrs: list[float]) -> dict:
    """Two steps of clip → decay kernels → Nesterov SGD, leaf by leaf."""
    params = {k: dict(v) for k, v in params.items()}
    trace = {k: {n: np.zeros_like(x) for n, x in v.items()} for k, v in params.items()}
    for grad, lr in zip(grads, lrs, strict=True):
        for module, leaves in params.items():
            for name, w in leaves.items():
                g = grad[module][name] if module == "head" else agc(grad[module][name], w)
                if name == "kernel":
                    g = g + WD * w
                trace[module][name] = g + MU * trace[module][name]
                leaves[name] = w - lr * (g + MU * trace[module][name])
    return params


def test_two_steps_match_the_definition():
    rng = np.random.default_rng(0)
    params, grads = tree(rng), [gradient(rng), gradient(rng)]
    tx, schedule = train.create_optimizer(CONFIG, total_steps=10, steps_per_epoch=5)
    lrs = [PEAK, PEAK * 0.5 * (1 + np.cos(np.pi / 10))]  # no warm-up: cosine from the peak
    np.testing.assert_allclose([schedule(0), schedule(1)], lrs, rtol=1e-6)
    as_f32 = lambda t: {k: {n: jnp.float32(x) for n, x in v.items()} for k, v in t.items()}  # noqa: E731
    state, current = tx.init(as_f32(params)), as_f32(params)
    for grad in grads:
        updates, state = tx.update(as_f32(grad), state, current)
        current = optax.apply_updates(current, updates)
    expected = expected_steps(params, grads, lrs)
    for module, leaves in expected.items():
        for name, value in leaves.items():
            np.testing.assert_allclose(current[module][name], value, rtol=2e-5, atol=1e-7,
                                       err_msg=f"{module}/{name}")
    # The case is telling: AGC clips some kernel units and leaves others bit for bit.
    g, w = grads[0]["blocks"]["kernel"], params["blocks"]["kernel"]
    clipped = np.any(agc(g, w) != g, axis=0)
    assert clipped.any() and not clipped.all()


def test_the_learning_rate_warms_up_linearly_then_decays_as_a_cosine():
    config = dataclasses.replace(CONFIG, warmup_epochs=1.0)
    _, schedule = train.create_optimizer(config, total_steps=12, steps_per_epoch=4)
    steps = np.arange(13)
    expected = np.where(steps <= 4, PEAK * steps / 4,
                        PEAK * 0.5 * (1 + np.cos(np.pi * (steps - 4) / 8)))
    np.testing.assert_allclose([schedule(s) for s in steps], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("warmup_epochs", [5.0, 100.0])
def test_a_warm_up_longer_than_the_run_is_cut_to_leave_one_decay_step(warmup_epochs):
    config = dataclasses.replace(CONFIG, warmup_epochs=warmup_epochs)
    _, schedule = train.create_optimizer(config, total_steps=12, steps_per_epoch=4)
    assert schedule(11) == pytest.approx(PEAK) and schedule(12) == pytest.approx(0.0, abs=1e-7)
