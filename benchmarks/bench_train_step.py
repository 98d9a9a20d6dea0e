"""Time a full NF-ResNet training step with and without AGC.

The step is the examples' own :func:`examples.common.steps.train_step` (on-device
augmentation, forward, backward, optimizer update), built by its own
``create_train_state``: ``with_agc`` chains ``agc(λ, exclude="^head/", track_stats=True)``
before weight decay and SGD-Nesterov, exactly as ``train.py`` does, and ``no_agc`` is the
same chain without it (``--clipping 0``). Two models are timed in the same process:

- ``nf_resnet_cpu``, the CPU preset's model, on 28×28×1 batches of 128;
- ``nf_resnet_50``, the ImageNet NF-ResNet-50 layout (23.5M parameters), on 224×224×3
  batches of 64 on an accelerator, and on 64×64×3 batches of 16 on a CPU, where the
  full size would take minutes per step.

After a compiling call and a warm call, repeats are interleaved by
:mod:`benchmarks._common` (each repeat times both variants of a model, alternating which
goes first), so that load from other processes hits both alike; each call is timed to
``block_until_ready``. The table reports medians
± interquartile ranges, the overhead ``with_agc / no_agc − 1`` of the medians (target:
≤ 3 %) and the median of the per-repeat ratios (``paired``), which drifting load from
other processes disturbs less.

Run from the repository root::

    python -m benchmarks.bench_train_step                 # about 5 minutes on 2 CPU cores
    python -m benchmarks.bench_train_step --models nf_resnet_50 --repeats 50
    python -m benchmarks.bench_train_step --quick         # nano model, a smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from benchmarks import _common
from examples.common import steps
from examples.nf_resnet import train
from examples.nf_resnet.configs import TrainConfig

OVERHEAD_TARGET = 0.03


@dataclasses.dataclass(frozen=True)
class Case:
    """One model timed on one input shape."""

    model: str
    batch_size: int
    image_size: int
    channels: int


def cases(models: Sequence[str], quick: bool, accelerator: bool) -> list[Case]:
    if quick:
        return [Case("nf_resnet_nano", 32, 28, 1)]
    table = {
        "nf_resnet_cpu": Case("nf_resnet_cpu", 128, 28, 1),
        "nf_resnet_50": (Case("nf_resnet_50", 64, 224, 3) if accelerator
                         else Case("nf_resnet_50", 16, 64, 3)),
    }
    return [table[m] for m in models]


def build_step(case: Case, clipping: float, dtype: str):
    """Returns ``(jitted step, initial state, device batch)`` for one variant."""
    config = TrainConfig(model=case.model, batch_size=case.batch_size, clipping=clipping,
                         dtype=dtype, steps=1000)
    state, ctx = train.create_train_state(
        config, num_classes=10, in_features=case.channels,
        mean=np.zeros(case.channels, np.float32), std=np.ones(case.channels, np.float32),
        total_steps=1000, steps_per_epoch=100)
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    replicated, batched = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    state = jax.device_put(state, replicated)
    rng = np.random.default_rng(0)
    shape = (case.batch_size, case.image_size, case.image_size, case.channels)
    batch = jax.device_put({"image": rng.integers(0, 256, shape, dtype=np.uint8),
                            "label": rng.integers(0, 10, case.batch_size).astype(np.int32)},
                           batched)
    step = jax.jit(functools.partial(steps.train_step, ctx=ctx),
                   in_shardings=(replicated, batched), out_shardings=(replicated, replicated),
                   donate_argnums=0)
    return step, state, batch


def _stepper(step: Callable[..., Any], state: Any, batch: Any) -> Callable[[], Any]:
    """One training step per call, on a state the step donates and returns."""
    current = [state]

    def call() -> Any:
        current[0], metrics = step(current[0], batch)
        return metrics

    return call


def time_case(case: Case, repeats: int, clipping: float, dtype: str) -> dict[str, Any]:
    """Times one model's train step with AGC (λ = ``clipping``) and without."""
    calls = {name: _stepper(*build_step(case, lam, dtype))
             for name, lam in (("with_agc", clipping), ("no_agc", 0.0))}
    compile_s = _common.warm_up(calls)
    times = _common.time_interleaved(calls, repeats)
    result: dict[str, Any] = {"case": dataclasses.asdict(case), "compile_seconds": compile_s}
    for name, samples in times.items():
        stats = _common.summarise(samples)
        result[name] = {"median_ms": stats["median_ms"], "iqr_ms": stats["iqr_ms"],
                        "images_per_second": 1e3 * case.batch_size / stats["median_ms"],
                        "samples": len(samples)}
    result["agc_overhead"] = result["with_agc"]["median_ms"] / result["no_agc"]["median_ms"] - 1
    # Paired per-repeat ratios are less sensitive to drifting load than a ratio of medians.
    ratios = [a / b for a, b in zip(times["with_agc"], times["no_agc"], strict=True)]
    result["agc_overhead_paired_median"] = statistics.median(ratios) - 1
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    header = (f"{'model':<16}{'input':>14}{'no_agc ms':>16}{'with_agc ms':>16}"
              f"{'img/s (agc)':>13}{'overhead':>10}{'paired':>9}")
    print(header)
    print("-" * len(header))
    for r in results:
        c = r["case"]
        shape = f"{c['batch_size']}x{c['image_size']}²x{c['channels']}"
        cells = [f"{r[v]['median_ms']:.1f} ± {r[v]['iqr_ms']:.1f}" for v in ("no_agc", "with_agc")]
        print(f"{c['model']:<16}{shape:>14}{cells[0]:>16}{cells[1]:>16}"
              f"{r['with_agc']['images_per_second']:>13.0f}"
              f"{100 * r['agc_overhead']:>9.1f}%{100 * r['agc_overhead_paired_median']:>8.1f}%")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=("nf_resnet_cpu", "nf_resnet_50"),
                        default=["nf_resnet_cpu", "nf_resnet_50"])
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per variant")
    parser.add_argument("--clipping", type=float, default=0.01, help="AGC's λ")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto")
    parser.add_argument("--quick", action="store_true", help="nano model, 3 repeats")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output (default: benchmarks/results/train_step_<machine>.json)")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    accelerator = jax.default_backend() != "cpu"
    results = [time_case(c, repeats, args.clipping, args.dtype)
               for c in cases(args.models, args.quick, accelerator)]
    header = _common.result_header("train_step", "benchmarks.bench_train_step", argv)
    info = header["machine"]
    print(f"{info['device_count']} x {info['device_kind']} ({info['backend']}), "
          f"CPU: {info['cpu_model']} x {info['cpu_count']}, medians of {repeats} steps")
    print_table(results)
    out = args.out or _common.result_path("train_step", info, quick=args.quick)
    _common.write_results(header | {
        "config": {"repeats": repeats, "clipping": args.clipping, "dtype": args.dtype,
                   "overhead_target": OVERHEAD_TARGET},
        "results": results,
    }, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
