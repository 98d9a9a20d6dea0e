"""Time the jitted AGC update against optax's and against a memory floor.

Two float32 parameter trees in Flax layout are filled from `jax.random`: the
example's own NF-ResNet-50 (``examples.nf_resnet.models``, ImageNet layout with a
1000-class head, shapes from ``nnx.eval_shape``: HWIO conv kernels with per-channel
gain and bias, scalar skip gains; 25.6M parameters, 177 leaves) and a
transformer-shaped one (18 pre-LN decoder layers with (d, heads, head_dim)
attention kernels; 22.7M parameters, 292 leaves). For each tree the script times

- ``floor``: one jitted elementwise pass that reads p and g and writes g, the
  least any update that reads both trees can cost;
- ``optax_agc`` and ``agc``: ``optax.adaptive_grad_clip(0.01)`` and
  ``agc_optax.agc(0.01)`` alone;
- ``agc_stats``: ``agc_optax.agc(0.01, track_stats=True)``, new state included;
- ``optax_agc+sgd`` and ``agc+sgd``: each chained with ``optax.sgd(0.1, momentum=0.9)``;
- ``norms`` (for context): only the per-unit sums of squares of g and p, the
  reduction half of any AGC, so the table shows where AGC's time goes;
- ``agc_nocond+sgd`` (for context): ``agc+sgd`` traced without the conditional
  that sends a step with an out-of-range unit to the exact branch
  (``agc_optax._clip.fast_or_exact`` swapped for "always fast" while tracing), so
  the table shows what the range check and its ``lax.cond`` cost. It is wrong
  wherever a unit is outside the float32 sums' range; the benchmark's never are.

For every variant the compiled program's top-level kernels (HLO instructions of
the entry computation other than parameters, constants, tuples and bitcasts) and
fusions are counted, in total and per leaf, so that launch overhead is visible
without an accelerator.

Every variant is jitted without donation, its inputs are placed on the device
beforehand and timed with :mod:`benchmarks._common`'s interleaved timer (after a
compiling and a warm call); the table reports medians and interquartile ranges.

Run from the repository root::

    python -m benchmarks.bench_agc                    # both trees, 1-2.5 min on 2 CPU cores
    python -m benchmarks.bench_agc --tree resnet50 --repeats 50
    python -m benchmarks.bench_agc --quick            # tiny trees, a smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import agc_optax
from agc_optax import _clip
from benchmarks import _common, hlo, trees

CLIPPING = trees.CLIPPING
EPS = 1e-3

VARIANTS = (
    "floor", "norms", "optax_agc", "agc", "agc_stats", "optax_agc+sgd", "agc+sgd",
    "agc_nocond+sgd",
)

# (numerator, denominator, upper bound) from the project's performance targets.
TARGETS = {
    "agc/floor": ("agc", "floor", 1.5),
    "agc_stats/agc": ("agc_stats", "agc", 1.1),
    "agc+sgd/optax_agc+sgd": ("agc+sgd", "optax_agc+sgd", 1.0),
}
# Reported for context only.
EXTRA_RATIOS = {
    "norms/floor": ("norms", "floor"),
    "optax_agc/floor": ("optax_agc", "floor"),
    "agc/optax_agc": ("agc", "optax_agc"),
    "agc_nocond+sgd/optax_agc+sgd": ("agc_nocond+sgd", "optax_agc+sgd"),
}


def clipped_fraction(grads: Any, clipped: Any) -> float:
    """Fraction of gradient entries that clipping changed."""
    pairs = zip(jax.tree.leaves(grads), jax.tree.leaves(clipped), strict=True)
    changed = sum(int(np.count_nonzero(np.asarray(g) != np.asarray(c))) for g, c in pairs)
    return changed / sum(g.size for g in jax.tree.leaves(grads))


def memory_floor(params: Any, grads: Any) -> Any:
    """One elementwise pass reading p and g and writing g-sized output.

    The sign flip keeps p live: XLA cannot drop a read whose value decides the result.
    """
    return jax.tree.map(lambda p, g: jnp.where(p < 0, -g, g), params, grads)


def unit_sums_of_squares(params: Any, grads: Any) -> Any:
    """Per-unit sums of squares of p and g (every axis but the last reduced), nothing else."""

    def sums(x: jax.Array) -> jax.Array:
        return jnp.sum(x * x, axis=tuple(range(x.ndim - 1)) if x.ndim > 1 else None)

    return jax.tree.map(lambda p, g: (sums(p), sums(g)), params, grads)


def without_range_check(update: Callable[..., Any]) -> Callable[..., Any]:
    """``update``, traced with agc's fast-or-exact conditional swapped for "always fast".

    A diagnostic: the result is wrong wherever a unit is outside the range of the
    float32 sums of squares (a gradient blow-up, ``eps=0`` with tiny parameters).
    """

    def traced(*args: Any) -> Any:
        choose = _clip.fast_or_exact
        _clip.fast_or_exact = lambda in_range, fast, exact: fast()
        try:
            return update(*args)
        finally:
            _clip.fast_or_exact = choose

    return traced


def make_variants(params: Any, grads: Any) -> dict[str, tuple[Callable[..., Any], tuple]]:
    """Jitted callables and their (already placed) arguments, by variant name."""

    def update(
        tx: optax.GradientTransformation, trace: Callable[..., Any] = lambda fn: fn
    ) -> tuple[Callable[..., Any], tuple]:
        state = jax.block_until_ready(jax.device_put(tx.init(params)))
        return jax.jit(trace(tx.update)), (grads, state, params)

    momentum = optax.sgd(0.1, momentum=0.9)
    agc_sgd = optax.chain(agc_optax.agc(CLIPPING, EPS), momentum)
    variants = {
        "floor": (jax.jit(memory_floor), (params, grads)),
        "norms": (jax.jit(unit_sums_of_squares), (params, grads)),
        "optax_agc": update(optax.adaptive_grad_clip(CLIPPING, EPS)),
        "agc": update(agc_optax.agc(CLIPPING, EPS)),
        "agc_stats": update(agc_optax.agc(CLIPPING, EPS, track_stats=True)),
        "optax_agc+sgd": update(optax.chain(optax.adaptive_grad_clip(CLIPPING, EPS), momentum)),
        "agc+sgd": update(agc_sgd),
        "agc_nocond+sgd": update(agc_sgd, without_range_check),
    }
    assert tuple(variants) == VARIANTS
    return variants


def summarise(samples_ms: Sequence[float]) -> dict[str, Any]:
    """Median, quartiles and extremes of one variant's times, and the samples."""
    return _common.summarise(samples_ms) | {"samples_ms": [round(t, 4) for t in samples_ms]}


def ratios(times: dict[str, list[float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Ratios of medians, and medians of the per-repeat ratios (robust to load drift)."""
    pairs = {key: spec[:2] for key, spec in TARGETS.items()} | EXTRA_RATIOS
    of_medians = {
        key: statistics.median(times[a]) / statistics.median(times[b])
        for key, (a, b) in pairs.items()
    }
    paired = {
        key: statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))
        for key, (a, b) in pairs.items()
    }
    return of_medians, paired


def _bind(fn: Callable[..., Any], args: tuple) -> Callable[[], Any]:
    return lambda: fn(*args)


def bench_tree(name: str, quick: bool, repeats: int, seed: int, hlo_dir: Path | None) -> dict:
    """Build one tree, time every variant on it, and summarise."""
    params, grads = trees.make_params_and_grads(trees.tree_shapes(name, quick), seed)
    params, grads = jax.block_until_ready(jax.device_put((params, grads)))
    leaves = jax.tree.leaves(params)
    num_params = sum(leaf.size for leaf in leaves)
    variants = make_variants(params, grads)
    if hlo_dir is not None:
        hlo_dir.mkdir(parents=True, exist_ok=True)
    kernels = {}
    for variant, (fn, args) in variants.items():
        text = fn.lower(*args).compile().as_text()
        kernels[variant] = hlo.count_kernels(text, len(leaves))
        if hlo_dir is not None:
            (hlo_dir / f"{name}_{variant.replace('+', '_')}.hlo.txt").write_text(text)
    calls = {variant: _bind(fn, args) for variant, (fn, args) in variants.items()}
    first_call_s = _common.warm_up(calls)
    times = _common.time_interleaved(calls, repeats)
    fn, args = variants["optax_agc"]
    optax_clipped, _ = fn(*args)
    stats = {variant: summarise(times[variant]) for variant in VARIANTS}
    for variant in VARIANTS:
        stats[variant]["first_call_s"] = round(first_call_s[variant], 3)
        stats[variant]["hlo"] = kernels[variant]
    of_medians, paired = ratios(times)
    floor_s = stats["floor"]["median_ms"] / 1e3
    return {
        "num_leaves": len(leaves),
        "num_params": int(num_params),
        "megabytes_per_tree": round(4 * num_params / 1e6, 2),
        "clipped_fraction": round(clipped_fraction(grads, optax_clipped), 4),
        # Bytes the floor moves (read p, read g, write g) over its median time.
        "floor_gb_per_s": round(3 * 4 * num_params / floor_s / 1e9, 2),
        "variants": stats,
        "ratios": {key: round(value, 4) for key, value in of_medians.items()},
        "paired_ratios": {key: round(value, 4) for key, value in paired.items()},
        "targets_met": {
            key: bool(of_medians[key] <= bound) for key, (_, _, bound) in TARGETS.items()
        },
    }


def format_table(results: dict[str, Any]) -> str:
    """Medians, spreads and ratios of every tree as a plain-text table."""
    lines = []
    for name, tree in results["trees"].items():
        lines.append(
            f"{name}: {tree['num_params'] / 1e6:.1f}M params, {tree['num_leaves']} leaves, "
            f"{tree['clipped_fraction']:.0%} of entries clipped, "
            f"floor {tree['floor_gb_per_s']:.1f} GB/s"
        )
        lines.append(
            f"  {'variant':<18}{'median ms':>11}{'IQR ms':>9}{'x floor':>9}{'kernels':>9}"
            f"{'/leaf':>7}"
        )
        floor = tree["variants"]["floor"]["median_ms"]
        for variant, stats in tree["variants"].items():
            lines.append(
                f"  {variant:<18}{stats['median_ms']:>11.2f}{stats['iqr_ms']:>9.2f}"
                f"{stats['median_ms'] / floor:>9.2f}{stats['hlo']['kernels']:>9}"
                f"{stats['hlo']['kernels_per_leaf']:>7.2f}"
            )
        lines.append(f"  {'ratio':<32}{'of medians':>11}{'paired':>8}  target")
        for key, value in tree["ratios"].items():
            if key in TARGETS:
                bound = TARGETS[key][2]
                verdict = "met" if tree["targets_met"][key] else "MISSED"
                target = f"<= {bound:.1f} {verdict}"
            else:
                target = ""
            lines.append(
                f"  {key:<32}{value:>11.3f}{tree['paired_ratios'][key]:>8.3f}  {target}"
            )
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(
        description="Time the jitted agc_optax.agc update against optax's AGC and a "
        "memory floor on ResNet-50- and transformer-shaped trees.",
    )
    parser.add_argument(
        "--tree", choices=("resnet50", "transformer", "all"), default="all",
        help="which parameter tree to time (default: all)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None,
        help="interleaved timed calls per variant (default: 60, or 3 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny trees: a smoke test, not a benchmark"
    )
    parser.add_argument("--seed", type=int, default=0, help="jax.random seed (default: 0)")
    parser.add_argument(
        "--out", type=Path, default=None,
        help="JSON path (default: benchmarks/results/agc_update_<machine>.json)",
    )
    parser.add_argument("--dump-hlo", type=Path, default=None, metavar="DIR",
                        help="also write each variant's compiled HLO text to DIR")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write the JSON and return it."""
    args = parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 60)
    if repeats < 1:
        raise SystemExit(f"--repeats must be at least 1, got {repeats}")
    names = ("resnet50", "transformer") if args.tree == "all" else (args.tree,)
    results: dict[str, Any] = _common.result_header("agc_update", "benchmarks.bench_agc", argv)
    machine = results["machine"]
    results |= {
        "config": {
            "clipping": CLIPPING,
            "eps": EPS,
            "repeats": repeats,
            "quick": args.quick,
            "seed": args.seed,
            "targets": {key: bound for key, (_, _, bound) in TARGETS.items()},
        },
        "trees": {},
    }
    for name in names:
        results["trees"][name] = bench_tree(name, args.quick, repeats, args.seed, args.dump_hlo)
    results["targets_met"] = {
        name: tree["targets_met"] for name, tree in results["trees"].items()
    }
    results["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    results["all_targets_met"] = all(
        met for tree in results["targets_met"].values() for met in tree.values()
    )
    print(format_table(results))
    start, end = machine["load_average_1m_at_start"], results["load_average_1m_at_end"]
    print(f"load average (1 min) at start {start}, at end {end} on {machine['cpu_count']} CPUs")
    out = args.out or _common.result_path("agc_update", machine, quick=args.quick)
    _common.write_results(results, out)
    return results


if __name__ == "__main__":
    main()
