"""AGC's share of a full training step: NF-ResNet-50 and NFNet-F0, SGD with and without AGC.

The step is the example's own :func:`examples.nf_resnet.train.train_step` (on-device
augmentation, forward, backward, optimizer update) on the model that
``examples.nf_resnet.networks.create_model`` builds for ``--models``, with a 1000-class head,
bfloat16 compute and float32 parameters, data-parallel over every local device (state
replicated, batch split), on synthetic uint8 images. Only the optimizer differs between
the variants (``--optimizers``), each ``[clipping →] weight decay → SGD-Nesterov`` as in
the example:

- ``sgd``: no clipping (the example with ``--clipping 0``);
- ``sgd+agc``: ``agc_optax.agc(λ, ε, exclude=<the example's agc_exclude>)`` first;
- ``sgd+optax_agc``: ``optax.adaptive_grad_clip(λ, ε)`` under ``optax.masked``, leaving
  out the same leaves (the classifier);
- ``sgd+agc_stats``: ``sgd+agc`` with ``track_stats=True``, what the example trains with.

Each timed sample dispatches ``--steps-per-sample`` steps back to back and waits for the
last, as a training loop does, so a host round trip inside a step (e.g. a ``lax.cond``
whose predicate the host decides) shows as lost time rather than hiding behind a wait.
Samples are interleaved across the variants by :mod:`benchmarks._common`. The table
gives per-step medians and the ratios to ``sgd`` as ratios of medians and as medians of
per-repeat ratios (``paired``). The JSON is rewritten after every case, so a run cut
short keeps what it finished (``"complete": false``).

Run from the repository root::

    python -m benchmarks.bench_train_step            # ImageNet shapes, on an accelerator
    python -m benchmarks.bench_train_step --per-device-batch 32,128 --repeats 10
    python -m benchmarks.bench_train_step --quick    # nano model, a smoke test
    # A few minutes on 2 CPU cores:
    python -m benchmarks.bench_train_step --image-size 64 --per-device-batch 4
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import agc_optax
from benchmarks import _common
from examples.nf_resnet import train
from examples.nf_resnet.configs import TrainConfig

DEFAULT_MODELS = ("nf_resnet_50", "nfnet_f0")
# Training image sizes of DeepMind's ImageNet recipes (arXiv:2101.08692, arXiv:2102.06171).
IMAGENET_TRAIN_SIZE = {
    "nf_resnet_50": 224, "nf_resnet_101": 224, "nf_resnet_152": 224, "nf_resnet_200": 224,
    "nfnet_f0": 192, "nfnet_f1": 224, "nfnet_f2": 256, "nfnet_f3": 320,
    "nfnet_f4": 384, "nfnet_f5": 416, "nfnet_f6": 448, "nfnet_f7": 480,
}
NUM_CLASSES = 1000
OPTIMIZERS = ("sgd", "sgd+agc", "sgd+optax_agc", "sgd+agc_stats")
DEFAULT_OPTIMIZERS = OPTIMIZERS[:3]
BASELINE = "sgd"
# (per-device batch, image size, repeats, steps per sample) when a flag is not given:
# ImageNet shapes on an accelerator; on a CPU, where one ImageNet step takes a minute,
# small images and batches.
ACCELERATOR_DEFAULTS = (64, None, 20, 3)
CPU_DEFAULTS = (4, 64, 10, 1)


@dataclasses.dataclass(frozen=True)
class Case:
    """One model on one input shape, data-parallel over ``devices`` devices."""

    model: str
    per_device_batch: int
    image_size: int
    devices: int

    @property
    def global_batch(self) -> int:
        """The batch over all devices."""
        return self.per_device_batch * self.devices


def example_models() -> tuple[str, ...]:
    """The model names the NF-ResNet example accepts (its ``--model`` choices)."""
    field = next(f for f in dataclasses.fields(TrainConfig) if f.name == "model")
    return tuple(field.metadata["choices"])


def plan_cases(models: Sequence[str], batches: Sequence[int], image_size: int | None,
               devices: int) -> tuple[list[Case], dict[str, str]]:
    """The cases to time, and the models skipped with the reason.

    Args:
      models: model names; one the example does not have yet is skipped, not an error.
      batches: per-device batch sizes, each timed for every model.
      image_size: input side; ``None`` takes each model's ImageNet training size.
      devices: local devices the batch is split over.

    Returns:
      ``(cases, skipped)``: cases ordered by batch, then model (a run cut short has
      every model at the first batch); ``{model: reason}``.

    Raises:
      ValueError: ``image_size`` is ``None`` and a model has no known ImageNet size.
    """
    known, sizes, skipped = example_models(), {}, {}
    for model in models:
        if model not in known:
            skipped[model] = (f"examples.nf_resnet has no model {model!r} yet "
                              f"(its --model choices: {', '.join(known)})")
        elif image_size or model in IMAGENET_TRAIN_SIZE:
            sizes[model] = image_size or IMAGENET_TRAIN_SIZE[model]
        else:
            raise ValueError(f"--models {model}: no ImageNet training size is known for it; "
                             f"pass --image-size (known: {sorted(IMAGENET_TRAIN_SIZE)}).")
    cases = [Case(model, batch, size, devices) for batch in batches
             for model, size in sizes.items()]
    return cases, skipped


def excluded_mask(params: Any, exclude: str) -> Any:
    """``True`` for the leaves whose path matches ``exclude`` (``re.search``, as ``agc`` does)."""
    pattern = re.compile(exclude)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: bool(pattern.search(agc_optax.path_to_str(path))), params)


def clipper(optimizer: str, clipping: float, eps: float,
            exclude: str) -> optax.GradientTransformation | None:
    """The clipping that ``optimizer`` puts before weight decay and SGD (``None``: none)."""
    if optimizer == "sgd":
        return None
    if optimizer in ("sgd+agc", "sgd+agc_stats"):
        return agc_optax.agc(clipping, eps, exclude=exclude,
                             track_stats=optimizer == "sgd+agc_stats")
    if optimizer == "sgd+optax_agc":
        clipped = lambda params: jax.tree.map(  # noqa: E731
            lambda e: not e, excluded_mask(params, exclude))
        return optax.masked(optax.adaptive_grad_clip(clipping, eps), clipped)
    raise ValueError(f"Unknown optimizer {optimizer!r}; choose from {OPTIMIZERS}.")


def create_state(case: Case, optimizer: str, clipping: float,
                 dtype: str) -> tuple[train.TrainState, train.Static]:
    """The example's state and step constants with ``optimizer`` in place of its clipping."""
    half = np.full(3, 0.5, np.float32)  # Pixel mean and standard deviation.
    config = example_config(case, 0.0, dtype)  # The example's optimizer, unclipped.
    state, static = train.create_train_state(
        config, num_classes=NUM_CLASSES, in_features=3, mean=half, std=half,
        total_steps=1000, steps_per_epoch=100)
    clip = clipper(optimizer, clipping, config.agc_eps, config.agc_exclude)
    tx = static.tx if clip is None else optax.chain(clip, static.tx)
    return (state._replace(opt_state=tx.init(state.params)),
            dataclasses.replace(static, tx=tx))


def synthetic_batch(case: Case, sharding: NamedSharding) -> dict[str, jax.Array]:
    """Random uint8 ImageNet-like images and labels, split over the devices."""
    rng = np.random.default_rng(0)
    shape = (case.global_batch, case.image_size, case.image_size, 3)
    batch = {"image": rng.integers(0, 256, shape, dtype=np.uint8),
             "label": rng.integers(0, NUM_CLASSES, case.global_batch).astype(np.int32)}
    return jax.device_put(batch, sharding)


def example_config(case: Case, clipping: float, dtype: str) -> TrainConfig:
    """The example's configuration of ``case``: its defaults for everything else."""
    return TrainConfig(model=case.model, batch_size=case.global_batch, dtype=dtype,
                       clipping=clipping, steps=1000)


def build_variant(case: Case, optimizer: str, clipping: float, dtype: str,
                  steps_per_sample: int) -> tuple[Callable[[], Any], dict[str, int]]:
    """A call that runs ``steps_per_sample`` steps and returns the state, and the model's size.

    Each call continues from the state the previous one returned (donated, as in training).
    """
    state, static = create_state(case, optimizer, clipping, dtype)
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), ("data",))
    replicated, batched = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    counts = parameter_counts(state)
    state = jax.device_put(state, replicated)
    batch = synthetic_batch(case, batched)
    step = jax.jit(lambda s, b: train.train_step(s, b, static), in_shardings=(replicated, batched),
                   out_shardings=(replicated, replicated), donate_argnums=0)
    current = [state]

    def call() -> train.TrainState:
        # No wait between the steps: the next is dispatched while the last one runs.
        for _ in range(steps_per_sample):
            current[0], _ = step(current[0], batch)
        return current[0]

    return call, counts


def parameter_counts(state: train.TrainState) -> dict[str, int]:
    """The model's parameter count and number of parameter leaves."""
    leaves = jax.tree.leaves(state.params)
    return {"params": int(sum(x.size for x in leaves)), "leaves": len(leaves)}


def peak_device_bytes() -> int | None:
    """Peak bytes in use on the first device so far (``None`` where the backend keeps none)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def ratios(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Every variant's time over ``sgd``'s, and ``sgd+agc`` over ``sgd+optax_agc``."""
    pairs = [(v, BASELINE) for v in times if v != BASELINE and BASELINE in times]
    if "sgd+agc" in times and "sgd+optax_agc" in times:
        pairs.append(("sgd+agc", "sgd+optax_agc"))
    return {f"{a}/{b}": {
        "of_medians": statistics.median(times[a]) / statistics.median(times[b]),
        "paired": statistics.median(x / y for x, y in zip(times[a], times[b], strict=True)),
    } for a, b in pairs}


def time_case(case: Case, optimizers: Sequence[str], clipping: float, dtype: str,
              repeats: int, steps_per_sample: int) -> dict[str, Any]:
    """Times one case's optimizers, interleaved; returns its JSON record."""
    calls, counts = {}, {}
    for optimizer in optimizers:
        calls[optimizer], counts = build_variant(case, optimizer, clipping, dtype,
                                                 steps_per_sample)
    compile_s = _common.warm_up(calls)
    samples = _common.time_interleaved(calls, repeats)
    per_step = {v: [t / steps_per_sample for t in ts] for v, ts in samples.items()}
    variants = {}
    for optimizer, times in per_step.items():
        stats = _common.summarise(times)
        variants[optimizer] = {**stats, "images_per_second": 1e3 * case.global_batch
                               / stats["median_ms"], "first_call_s": compile_s[optimizer],
                               "samples_ms": times}
    return {"case": dataclasses.asdict(case) | {"global_batch": case.global_batch},
            "example_config": dataclasses.asdict(example_config(case, clipping, dtype)),
            **counts, "variants": variants, "ratios": ratios(per_step),
            "peak_device_bytes": peak_device_bytes()}


def out_of_memory(error: Exception) -> bool:
    """Whether a runtime error says the device ran out of memory."""
    return "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower()


def print_case(record: dict[str, Any]) -> None:
    """One case's table: per-step medians, images per second, ratios to ``sgd``."""
    c = record["case"]
    print(f"\n{c['model']}: {c['per_device_batch']} x {c['devices']} device(s) "
          f"x {c['image_size']}² x 3, {record['params'] / 1e6:.1f}M parameters "
          f"in {record['leaves']} leaves")
    print(f"  {'optimizer':<16}{'ms/step':>10}{'IQR':>8}{'img/s':>9}{'/ sgd':>8}{'paired':>8}")
    for name, stats in record["variants"].items():
        ratio = record["ratios"].get(f"{name}/{BASELINE}")
        cells = (f"{ratio['of_medians']:>8.3f}{ratio['paired']:>8.3f}" if ratio
                 else f"{'':>8}{'':>8}")
        print(f"  {name:<16}{stats['median_ms']:>10.1f}{stats['iqr_ms']:>8.1f}"
              f"{stats['images_per_second']:>9.1f}{cells}")
    head_to_head = record["ratios"].get("sgd+agc/sgd+optax_agc")
    if head_to_head:
        print(f"  sgd+agc / sgd+optax_agc: {head_to_head['of_medians']:.3f} "
              f"(paired {head_to_head['paired']:.3f})")


def parse_sizes(text: str) -> list[int]:
    """``"32,128"`` -> ``[32, 128]``; every size must be positive."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return sizes


def parse_names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time a full NF-ResNet/NFNet training step with SGD, SGD + agc_optax.agc "
        "and SGD + optax.adaptive_grad_clip.")
    parser.add_argument("--models", type=parse_names, default=",".join(DEFAULT_MODELS),
                        help="comma-separated example models (default: %(default)s); one the "
                        "example does not have yet is skipped and reported")
    parser.add_argument("--optimizers", type=parse_names, default=",".join(DEFAULT_OPTIMIZERS),
                        help=f"comma-separated, from {', '.join(OPTIMIZERS)} "
                        "(default: %(default)s)")
    parser.add_argument("--per-device-batch", type=parse_sizes, default=None,
                        help="comma-separated per-device batch sizes, each a case "
                        f"(default: {ACCELERATOR_DEFAULTS[0]} on an accelerator, "
                        f"{CPU_DEFAULTS[0]} on a CPU)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input side (default: each model's ImageNet training size on an "
                        f"accelerator, e.g. 224 and 192; {CPU_DEFAULTS[1]} on a CPU)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="interleaved samples per optimizer (default: "
                        f"{ACCELERATOR_DEFAULTS[2]} on an accelerator, {CPU_DEFAULTS[2]} on a CPU)")
    parser.add_argument("--steps-per-sample", type=int, default=None,
                        help="steps dispatched back to back per sample (default: "
                        f"{ACCELERATOR_DEFAULTS[3]} on an accelerator, {CPU_DEFAULTS[3]} on a CPU)")
    parser.add_argument("--clipping", type=float, default=0.01, help="λ (default: 0.01)")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16",
                        help="compute dtype; parameters stay float32 (default: bfloat16)")
    parser.add_argument("--quick", action="store_true",
                        help="nf_resnet_nano on 2 x 32² images per device, 2 repeats: a smoke test")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default: benchmarks/results/train_step_<machine>.json)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.optimizers) - set(OPTIMIZERS))
    if unknown or BASELINE not in args.optimizers:
        parser.error(f"--optimizers {','.join(args.optimizers)}: choose from {OPTIMIZERS}, "
                     f"including {BASELINE!r} (the baseline of every ratio)")
    return args


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fills the flags left unset with the backend's (or ``--quick``'s) defaults."""
    if args.quick:
        batch, size, repeats, per_sample = (2,), 32, 2, 1
        args.models = ["nf_resnet_nano"] if args.models == list(DEFAULT_MODELS) else args.models
    else:
        accelerator = jax.default_backend() != "cpu"
        batch, size, repeats, per_sample = ACCELERATOR_DEFAULTS if accelerator else CPU_DEFAULTS
        batch = (batch,)
    args.per_device_batch = args.per_device_batch or list(batch)
    args.image_size = args.image_size or size
    args.repeats = args.repeats or repeats
    args.steps_per_sample = args.steps_per_sample or per_sample
    if args.repeats < 1 or args.steps_per_sample < 1 or (args.image_size or 1) < 1:
        raise SystemExit("--repeats, --steps-per-sample and --image-size must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark, prints the tables, writes the JSON (after every case) and returns it."""
    args = resolve_defaults(parse_args(argv))
    cases, skipped = plan_cases(args.models, args.per_device_batch, args.image_size,
                                jax.local_device_count())
    results = _common.result_header("train_step", "benchmarks.bench_train_step", argv)
    machine = results["machine"]
    out = args.out or _common.result_path("train_step", machine, quick=args.quick)
    results |= {"config": {
        "models": args.models, "optimizers": args.optimizers, "clipping": args.clipping,
        "dtype": args.dtype, "num_classes": NUM_CLASSES, "repeats": args.repeats,
        "steps_per_sample": args.steps_per_sample, "quick": args.quick,
        "compilation_cache": os.environ.get("JAX_COMPILATION_CACHE_DIR")},
        "skipped": skipped, "failed": {}, "results": [], "complete": False}
    print(f"{machine['device_count']} x {machine['device_kind']} ({machine['backend']}), "
          f"CPU: {machine['cpu_model']} x {machine['cpu_count']}; {args.repeats} samples of "
          f"{args.steps_per_sample} step(s) per optimizer, {args.dtype}")
    for model, reason in skipped.items():
        print(f"SKIPPED {model}: {reason}", file=sys.stderr)
    for case in cases:
        try:
            record = time_case(case, args.optimizers, args.clipping, args.dtype, args.repeats,
                               args.steps_per_sample)
        except jax.errors.JaxRuntimeError as error:
            if not out_of_memory(error):
                raise
            label = f"{case.model}@{case.per_device_batch}"
            results["failed"][label] = f"out of memory: {str(error).splitlines()[0][:300]}"
            print(f"FAILED {label}: out of device memory", file=sys.stderr)
            continue
        results["results"].append(record)
        print_case(record)
        _common.write_results(results, out)
    results["complete"] = True
    results["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    _common.write_results(results, out)
    return results


if __name__ == "__main__":
    main()
