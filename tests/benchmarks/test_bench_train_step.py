"""benchmarks/bench_train_step.py: its cases, its optimizers and its JSON, never its speed."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

import agc_optax
from benchmarks import bench_train_step as bench
from examples.nf_resnet import networks
from examples.nf_resnet.configs import TrainConfig
from helpers.reference import reference_agc

LAMBDA, EPS = 0.01, 1e-3


def test_models_the_example_lacks_are_skipped_with_the_reason():
    cases, skipped = bench.plan_cases(["nf_resnet_50", "nfnet_f99"], [32, 128], None, devices=2)

    assert set(skipped) == {"nfnet_f99"}
    assert "no model 'nfnet_f99'" in skipped["nfnet_f99"]
    assert "nf_resnet_50" in skipped["nfnet_f99"]  # The reason lists what exists.
    assert [(c.model, c.per_device_batch, c.image_size, c.global_batch) for c in cases] == [
        ("nf_resnet_50", 32, 224, 64), ("nf_resnet_50", 128, 224, 256)]


def test_cases_run_every_model_at_the_first_batch_before_the_second():
    cases, _ = bench.plan_cases(["nf_resnet_50", "nf_resnet_cpu"], [128, 32], 64, devices=1)

    assert [(c.model, c.per_device_batch, c.image_size) for c in cases] == [
        ("nf_resnet_50", 128, 64), ("nf_resnet_cpu", 128, 64),
        ("nf_resnet_50", 32, 64), ("nf_resnet_cpu", 32, 64)]


def test_imagenet_training_sizes_of_the_default_models():
    # DeepMind's recipes: NF-ResNets train at 224², NFNet-F0 at 192².
    assert [bench.IMAGENET_TRAIN_SIZE[m] for m in bench.DEFAULT_MODELS] == [224, 192]
    with pytest.raises(ValueError, match=r"--models nf_resnet_cpu.*--image-size"):
        bench.plan_cases(["nf_resnet_cpu"], [8], None, devices=1)


def _nano_params_and_grads():
    """The nano NF-ResNet's parameter shapes with random values; half of the units clip."""
    model = nnx.eval_shape(lambda: networks.create_model(
        TrainConfig(model="nf_resnet_nano"), 10, 3, nnx.Rngs(0)))
    shapes = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.normal(0, 0.1, s.shape).astype(np.float32), shapes)
    grads = jax.tree.map(
        lambda s: (rng.normal(0, 1, s.shape) * 10.0 ** rng.uniform(-4, -1)).astype(np.float32),
        shapes)
    return params, grads


def _fan_in_axes(path: str, ndim: int) -> tuple[int, ...]:
    """By hand: HWIO conv kernels sum over (H, W, I); a gain or bias vector is one unit, as
    in DeepMind's NFNets code (and both libraries); a scalar skip gain is its own unit."""
    if path.endswith("kernel"):
        assert ndim == 4, path
        return (0, 1, 2)
    assert path.rsplit("/", 1)[-1] in ("gain", "bias", "skip_gain"), path
    return tuple(range(ndim))


@pytest.mark.parametrize("optimizer", ["sgd+agc", "sgd+agc_stats", "sgd+optax_agc"])
def test_each_clipping_variant_is_agc_without_the_classifier(optimizer):
    params, grads = _nano_params_and_grads()
    tx = bench.clipper(optimizer, LAMBDA, EPS, exclude=r"^head/")

    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)

    flat_updates = {agc_optax.path_to_str(p): u
                    for p, u in jax.tree_util.tree_leaves_with_path(updates)}
    clipped_units = 0
    for path_keys, grad in jax.tree_util.tree_leaves_with_path(grads):
        path = agc_optax.path_to_str(path_keys)
        if path.startswith("head/"):
            np.testing.assert_array_equal(flat_updates[path], grad, err_msg=path)
            continue
        param = params[path_keys[0].key]
        for key in path_keys[1:]:
            param = param[key.key]
        axes = _fan_in_axes(path, grad.ndim)
        expected, clipped = reference_agc(grad, param, axes, LAMBDA, EPS)
        clipped_units += clipped.sum()
        np.testing.assert_allclose(flat_updates[path], expected, rtol=2e-6, atol=1e-12,
                                   err_msg=path)
    assert clipped_units > 0


def test_sgd_has_no_clipping_and_unknown_optimizers_are_refused():
    assert bench.clipper("sgd", LAMBDA, EPS, r"^head/") is None
    with pytest.raises(ValueError, match=r"'adam'.*choose from"):
        bench.clipper("adam", LAMBDA, EPS, r"^head/")
    with pytest.raises(SystemExit):
        bench.parse_args(["--optimizers", "sgd+agc"])  # No baseline for the ratios.


def test_ratios_of_known_samples():
    times = {"sgd": [10.0, 20.0, 30.0], "sgd+agc": [11.0, 20.0, 36.0],
             "sgd+optax_agc": [10.0, 25.0, 30.0]}

    ratios = bench.ratios(times)

    assert ratios["sgd+agc/sgd"] == {"of_medians": 1.0, "paired": 1.1}
    assert ratios["sgd+optax_agc/sgd"] == {"of_medians": 1.25, "paired": 1.0}
    assert ratios["sgd+agc/sgd+optax_agc"]["of_medians"] == pytest.approx(0.8)
    assert ratios["sgd+agc/sgd+optax_agc"]["paired"] == pytest.approx(1.1)


def test_a_sample_dispatches_its_steps_from_the_state_the_last_one_left():
    case = bench.Case("nf_resnet_nano", per_device_batch=2, image_size=16,
                      devices=jax.local_device_count())

    call, counts = bench.build_variant(case, "sgd+agc", LAMBDA, "float32", steps_per_sample=3)

    assert int(call().step) == 3
    assert int(call().step) == 6
    assert counts["leaves"] == 22


def test_a_case_out_of_device_memory_is_reported_and_the_rest_run(tmp_path, monkeypatch, capsys):
    def time_case(case, *args):
        if case.per_device_batch == 4:
            raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating")
        return {"case": {"model": case.model, "per_device_batch": case.per_device_batch},
                "variants": {}, "ratios": {}}

    monkeypatch.setattr(bench, "time_case", time_case)
    monkeypatch.setattr(bench, "print_case", lambda record: None)
    out = tmp_path / "train_step.json"

    bench.main(["--quick", "--per-device-batch", "4,2", "--out", str(out)])

    written = json.loads(out.read_text())
    assert written["complete"] is True
    assert list(written["failed"]) == ["nf_resnet_nano@4"]
    assert "out of memory" in written["failed"]["nf_resnet_nano@4"]
    assert [r["case"]["per_device_batch"] for r in written["results"]] == [2]
    assert "FAILED nf_resnet_nano@4" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_writes_every_optimizer_and_skipped_model(tmp_path):
    out = tmp_path / "train_step.json"

    returned = bench.main(["--quick", "--models", "nf_resnet_nano,nfnet_f99", "--repeats", "1",
                           "--optimizers", ",".join(bench.OPTIMIZERS), "--out", str(out)])

    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    assert written["complete"] and set(written["skipped"]) == {"nfnet_f99"}
    (record,) = written["results"]
    assert record["case"]["global_batch"] == 2 * jax.local_device_count()
    assert set(record["variants"]) == set(bench.OPTIMIZERS)
    assert set(record["ratios"]) == {"sgd+agc/sgd", "sgd+optax_agc/sgd", "sgd+agc_stats/sgd",
                                     "sgd+agc/sgd+optax_agc"}
    for stats in record["variants"].values():
        assert stats["median_ms"] > 0 and len(stats["samples_ms"]) == 1
    assert written["config"]["dtype"] == "bfloat16"


def test_unset_flags_take_the_cpu_or_quick_defaults():
    if jax.default_backend() != "cpu":
        pytest.skip("the defaults checked here are the CPU backend's")
    args = bench.resolve_defaults(bench.parse_args([]))
    assert (args.models, args.optimizers) == (["nf_resnet_50", "nfnet_f0"],
                                              ["sgd", "sgd+agc", "sgd+optax_agc"])
    assert (args.per_device_batch, args.image_size, args.repeats, args.steps_per_sample) == (
        [4], 64, 10, 1)
    quick = bench.resolve_defaults(bench.parse_args(["--quick", "--per-device-batch", "2,4"]))
    assert (quick.models, quick.per_device_batch, quick.image_size) == (
        ["nf_resnet_nano"], [2, 4], 32)
