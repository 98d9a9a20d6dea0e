"""AGC on a simulated 8-device mesh: bytes across devices and time, vs optax's AGC.

A float32 parameter tree with the leaf kinds that sharding splits (attention
query/key/value and output kernels, MLP kernels, an embedding, conv kernels,
their biases and gains; 7.5M parameters in 30 leaves) is placed in one of four
layouts:

- ``unsharded``: every leaf whole on one device (the baseline);
- ``fsdp``: an 8-device "data" mesh splitting a fan-in axis of every kernel;
- ``tp``: an 8-device "model" mesh, Megatron-style: query/key/value, MLP-in and
  conv kernels split along their units, attention-out and MLP-out kernels
  along their fan-in, embeddings by vocabulary row;
- ``fsdp+tp``: a 4 x 2 ("data", "model") mesh doing both at once.

Mesh axes are Auto (as ``jax.sharding.Mesh`` makes them) or Explicit (the
default of ``jax.make_mesh``). For each layout the script compiles three jitted
updates: ``agc`` (``agc_optax.agc`` with each leaf's true fan-in axes),
``agc_optax_axes`` (``agc_optax.agc`` with optax's shape rule, which reduces
only axis 0 of every rank-3 kernel) and ``optax_agc``
(``optax.adaptive_grad_clip``). It reads every cross-device collective and its
bytes from the compiled HLO (:mod:`tools.hlo_collectives`), checks the
result against the same update unsharded and times it (medians of interleaved
repeats, :mod:`benchmarks._common`). Simulated devices share the host's cores,
so the times say little about real accelerators; the bytes are what the same
program moves on any backend.

Run from the repository root::

    python -m benchmarks.bench_sharded              # ~25 s on 2 CPU cores
    python -m benchmarks.bench_sharded --quick      # tiny tree, a smoke test
"""

from __future__ import annotations

import os

# The number of simulated host devices is fixed when JAX starts.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

import argparse
import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import agc_optax
from benchmarks import _common
from tools import hlo_collectives

CLIPPING = 0.01
EPS = 1e-3
NUM_DEVICES = 8
LAYOUTS = ("unsharded", "fsdp", "tp", "fsdp+tp")
VARIANTS = ("agc", "agc_optax_axes", "optax_agc")
MESHES = {
    "fsdp": ((8,), ("data",)),
    "tp": ((8,), ("model",)),
    "fsdp+tp": ((4, 2), ("data", "model")),
}


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One parameter: shape, fan-in axes, and the axes FSDP and tensor parallelism split.

    ``fsdp`` is the axis split over "data", ``tp`` the one split over "model"
    (None: not split); ``fsdp+tp`` applies both.
    """

    shape: tuple[int, ...]
    fan_in: tuple[int, ...]
    fsdp: int | None
    tp: int | None

    def spec(self, layout: str) -> P:
        """The leaf's PartitionSpec in ``layout``."""
        entries: list[Any] = [None] * len(self.shape)
        if layout in ("fsdp", "fsdp+tp") and self.fsdp is not None:
            entries[self.fsdp] = "data"
        if layout in ("tp", "fsdp+tp") and self.tp is not None:
            current = entries[self.tp]
            entries[self.tp] = "model" if current is None else (current, "model")
        return P(*entries)


def model_leaves(width: int, heads: int, layers: int, channels: int) -> dict[str, Leaf]:
    """A transformer (d = width) plus a small conv stem, in Flax layout.

    Vectors (biases, gains, norms) stay replicated under FSDP, as is common;
    under tensor parallelism the biases of unit-split kernels follow them.
    """
    head_dim, hidden, vocab = width // heads, 4 * width, 4 * width
    tree: dict[str, Leaf] = {
        "embed/embedding": Leaf((vocab, width), (1,), fsdp=1, tp=0),
        "stem/conv/kernel": Leaf((3, 3, channels, channels), (0, 1, 2), fsdp=2, tp=3),
        "stem/conv/gain": Leaf((channels,), (0,), fsdp=None, tp=0),
        "stem/conv/bias": Leaf((channels,), (0,), fsdp=None, tp=0),
    }
    for i in range(layers):
        prefix = f"layer{i}"
        for name in ("query", "key", "value"):
            tree[f"{prefix}/attn/{name}/kernel"] = Leaf((width, heads, head_dim), (0,), 0, 1)
            tree[f"{prefix}/attn/{name}/bias"] = Leaf((heads, head_dim), (0, 1), None, 0)
        tree[f"{prefix}/attn/out/kernel"] = Leaf((heads, head_dim, width), (0, 1), 0, 0)
        tree[f"{prefix}/attn/out/bias"] = Leaf((width,), (0,), None, None)
        tree[f"{prefix}/mlp/wi/kernel"] = Leaf((width, hidden), (0,), 0, 1)
        tree[f"{prefix}/mlp/wi/bias"] = Leaf((hidden,), (0,), None, 0)
        tree[f"{prefix}/mlp/wo/kernel"] = Leaf((hidden, width), (0,), 0, 0)
        tree[f"{prefix}/mlp/wo/bias"] = Leaf((width,), (0,), None, None)
        tree[f"{prefix}/norm/scale"] = Leaf((width,), (0,), None, None)
    return tree


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a/b": x}`` to ``{"a": {"b": x}}``."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, last = path.split("/")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return tree


def params_and_grads(leaves: dict[str, Leaf], seed: int) -> tuple[Any, Any]:
    """Params ~ N(0, 0.05); grads whose norm ratio per unit spans CLIPPING x 10^[-1, 1]."""
    rng = np.random.default_rng(seed)
    params, grads = {}, {}
    for path, leaf in leaves.items():
        param = rng.normal(0, 0.05, leaf.shape).astype(np.float32)
        unit_shape = [1 if i in leaf.fan_in else n for i, n in enumerate(leaf.shape)]
        scale = 0.05 * CLIPPING * 10.0 ** rng.uniform(-1, 1, unit_shape)
        params[path] = param
        grads[path] = (scale * rng.normal(0, 1, leaf.shape)).astype(np.float32)
    return nest(params), nest(grads)


def make_mesh(layout: str, axis_type: str) -> Mesh | None:
    if layout == "unsharded":
        return None
    shape, names = MESHES[layout]
    types = (AxisType.Explicit if axis_type == "explicit" else AxisType.Auto,) * len(shape)
    return jax.make_mesh(shape, names, axis_types=types)


def describe_mesh(mesh: Mesh, axis_type: str) -> str:
    """E.g. ``explicit 4x2 (data,model)``."""
    sizes = "x".join(str(n) for n in mesh.shape.values())
    return f"{axis_type} {sizes} ({','.join(mesh.shape)})"


def optax_axes(path: str, x: Any) -> tuple[int, ...]:
    """The fan-in axes optax 0.2.8 picks: rank 2 and 3 reduce axis 0, rank 4 (0, 1, 2)..."""
    del path
    if sum(n != 1 for n in x.shape) <= 1:
        return tuple(range(x.ndim))
    return (0,) if x.ndim in (2, 3) else tuple(range(x.ndim - 1))


def transforms(leaves: dict[str, Leaf]) -> dict[str, optax.GradientTransformation]:
    """``agc`` with each leaf's fan-in; ``agc`` with optax's shape rule; optax's AGC."""
    unit_axes = nest({path: leaf.fan_in for path, leaf in leaves.items()})
    variants = {
        "agc": agc_optax.agc(CLIPPING, EPS, unit_axes=unit_axes),
        "agc_optax_axes": agc_optax.agc(CLIPPING, EPS, unit_axes=optax_axes),
        "optax_agc": optax.adaptive_grad_clip(CLIPPING, EPS),
    }
    assert tuple(variants) == VARIANTS
    return variants


def update_fn(tx: optax.GradientTransformation) -> Callable[..., Any]:
    return jax.jit(lambda grads, params: tx.update(grads, optax.EmptyState(), params)[0])


def relative_error(actual: Any, expected: Any) -> float:
    worst = 0.0
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        worst = max(worst, float(np.max(np.abs(a - e)) / max(np.max(np.abs(e)), 1e-30)))
    return worst


def sharding_kept(out: Any, shardings: Any) -> bool:
    return all(
        leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
        for leaf, sharding in zip(jax.tree.leaves(out), jax.tree.leaves(shardings), strict=True)
    )


def measure(
    leaves: dict[str, Leaf], repeats: int, seed: int, axis_types: Sequence[str]
) -> list[dict[str, Any]]:
    """Compiles, checks and times every (layout, mesh type, variant)."""
    params, grads = params_and_grads(leaves, seed)
    txs = transforms(leaves)
    device = jax.devices()[0]
    plain = jax.device_put((grads, params), device)
    unsharded = {name: update_fn(tx)(*plain) for name, tx in txs.items()}

    rows: list[dict[str, Any]] = []
    runnable: dict[int, tuple[Callable[..., Any], tuple]] = {}
    configs = [("unsharded", "-")] + [
        (layout, axis_type) for layout in LAYOUTS[1:] for axis_type in axis_types
    ]
    for layout, axis_type in configs:
        mesh = make_mesh(layout, axis_type)
        if mesh is None:
            shardings = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(device), params)
        else:
            shardings = nest(
                {p: NamedSharding(mesh, leaf.spec(layout)) for p, leaf in leaves.items()}
            )
        args = jax.device_put((grads, params), (shardings, shardings))
        per_device = sum(
            int(np.prod(s.shard_shape(x.shape))) * 4
            for x, s in zip(jax.tree.leaves(params), jax.tree.leaves(shardings), strict=True)
        )
        for variant, tx in txs.items():
            row: dict[str, Any] = {
                "layout": layout,
                "mesh": "-" if mesh is None else describe_mesh(mesh, axis_type),
                "variant": variant,
                "param_bytes_per_device": per_device,
            }
            fn = update_fn(tx)
            context = jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()
            try:
                with context:
                    compiled = fn.lower(*args).compile()
                    out = fn(*args)
            except Exception as error:  # Reported in the table, e.g. optax's ShardingTypeError.
                row["status"] = f"{type(error).__name__}"
                row["error"] = str(error).splitlines()[0][:300]
                rows.append(row)
                continue
            ops = hlo_collectives.parse_collectives(compiled.as_text())
            summary = hlo_collectives.summarize(ops)
            row.update(
                status="ok",
                collectives={k: v for k, v in summary.items() if k != "total"},
                collective_count=summary["total"]["count"],
                bytes_across_devices=summary["total"]["bytes"],
                largest_collective_elements=max(
                    (s.size for op in ops for s in (*op.operands, *op.results)), default=0
                ),
                all_gathers=summary.get("all-gather", {}).get("count", 0),
                max_relative_error=relative_error(out, unsharded[variant]),
                sharding_kept=sharding_kept(out, shardings),
            )
            runnable[len(rows)] = (compiled, args)
            rows.append(row)

    calls = {index: _bind(fn, args) for index, (fn, args) in runnable.items()}
    _common.warm_up(calls)
    for index, samples in _common.time_interleaved(calls, repeats).items():
        stats = _common.summarise(samples)
        rows[index]["median_ms"] = stats["median_ms"]
        rows[index]["iqr_ms"] = stats["iqr_ms"]
    return rows


def _bind(fn: Callable[..., Any], args: tuple) -> Callable[[], Any]:
    return lambda: fn(*args)


def format_bytes(n: int) -> str:
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def format_table(results: dict[str, Any]) -> str:
    """One line per (layout, mesh, variant)."""
    header = (
        f"{'layout':<10}{'mesh':<27}{'variant':<16}{'status':<20}{'collectives':<26}"
        f"{'bytes/device':>13}{'params/device':>14}{'median ms':>11}{'rel err':>10}"
    )
    lines = [header, "-" * len(header)]
    for row in results["rows"]:
        if row["status"] != "ok":
            lines.append(
                f"{row['layout']:<10}{row['mesh']:<27}{row['variant']:<16}{row['status']:<20}"
            )
            continue
        kinds = ", ".join(f"{v['count']} {k}" for k, v in row["collectives"].items()) or "none"
        lines.append(
            f"{row['layout']:<10}{row['mesh']:<27}{row['variant']:<16}{'ok':<20}{kinds:<26}"
            f"{format_bytes(row['bytes_across_devices']):>13}"
            f"{format_bytes(row['param_bytes_per_device']):>14}"
            f"{row.get('median_ms', float('nan')):>11.2f}{row['max_relative_error']:>10.1e}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Bytes moved across devices and time of the sharded AGC update on a "
        "simulated 8-device CPU mesh, against the unsharded update and optax's "
        "adaptive_grad_clip under the same sharding.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny tree: a smoke test")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls per row (default 20; 2 if --quick)"
    )
    parser.add_argument(
        "--mesh-types", choices=("auto", "explicit", "both"), default="both",
        help="Auto (jax.sharding.Mesh) and/or Explicit (jax.make_mesh) meshes",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=None,
        help="where to write the JSON results (default: "
        "benchmarks/results/sharded_update_<machine>.json)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark, prints the table, writes the JSON and returns it."""
    args = parse_args(argv)
    if jax.device_count() < NUM_DEVICES:
        raise SystemExit(
            f"needs {NUM_DEVICES} devices, JAX sees {jax.device_count()}: start Python with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={NUM_DEVICES}"
        )
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 20)
    sizes = (
        {"width": 32, "heads": 8, "layers": 1, "channels": 16}
        if args.quick
        else {"width": 512, "heads": 8, "layers": 2, "channels": 128}
    )
    leaves = model_leaves(**sizes)
    axis_types = ("auto", "explicit") if args.mesh_types == "both" else (args.mesh_types,)
    rows = measure(leaves, repeats, args.seed, axis_types)
    results = _common.result_header("sharded_update", "benchmarks.bench_sharded", argv)
    results |= {
        "config": {
            "clipping": CLIPPING,
            "eps": EPS,
            "quick": args.quick,
            "repeats": repeats,
            "seed": args.seed,
            "sizes": sizes,
            "num_leaves": len(leaves),
            "num_params": int(sum(np.prod(leaf.shape) for leaf in leaves.values())),
            "bytes_note": "per-device payload of each cross-device collective, summed "
            "(the larger of its operand and result bytes), read from the compiled HLO",
        },
        "rows": rows,
    }
    print(
        f"{results['config']['num_params'] / 1e6:.2f}M float32 params in "
        f"{len(leaves)} leaves; {jax.device_count()} x {jax.devices()[0].device_kind}"
    )
    print(format_table(results))
    machine = results["machine"]
    _common.write_results(
        results, args.out or _common.result_path("sharded_update", machine, quick=args.quick)
    )
    return results


if __name__ == "__main__":
    main()
