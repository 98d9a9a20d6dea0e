"""The summary table that ends ``scripts/accelerator_check.sh``.

Reads the check's step records (a tab-separated file the script writes: step, status,
seconds, note) and the result files the steps wrote (``agc_update_<machine>.json``,
``train_step_<machine>.json``, ``gpu_preset_<machine>.json``), prints one table of what ran
and the figures that answer the check's questions, and writes it all to
``accelerator_check_<machine>.json`` beside them. Exits 1 if the preset ran but left no
summary (it was stopped before its training loop started).

Run by the script; by hand::

    python -m benchmarks.check_summary --status STATUS.tsv --results DIR --slug MACHINE
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import _common

# The ratios of a train-step case that the table shows, in this order.
TRAIN_STEP_RATIOS = ("sgd+agc/sgd", "sgd+optax_agc/sgd", "sgd+agc/sgd+optax_agc",
                     "sgd+agc_stats/sgd")


def read_steps(status: Path) -> list[dict[str, Any]]:
    """The step records: ``[{"step", "status", "seconds", "note"}, ...]``."""
    steps = []
    for line in status.read_text().splitlines():
        name, state, seconds, note = [*line.split("\t"), "", "", ""][:4]
        steps.append({"step": name, "status": state, "seconds": int(seconds or 0),
                      "note": note})
    return steps


def load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def agc_update_lines(result: dict[str, Any]) -> list[str]:
    """Per tree: its size, every ratio of medians, and any kernel or fusion counts."""
    lines = []
    for name, tree in result.get("trees", {}).items():
        counts = {k: v for k, v in tree.items()
                  if any(word in k for word in ("kernel", "fusion")) and not isinstance(v, dict)}
        ratio_text = ", ".join(f"{k} {v:.3f}" for k, v in tree.get("ratios", {}).items())
        lines.append(f"  {name} ({tree.get('num_leaves')} leaves): {ratio_text}")
        if counts:
            lines.append("    " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return lines


def train_step_lines(result: dict[str, Any]) -> list[str]:
    """Per case: ms per step without clipping, and the ratios of :data:`TRAIN_STEP_RATIOS`."""
    lines = []
    for record in result.get("results", []):
        case, ratios = record["case"], record["ratios"]
        shown = [f"{k} {ratios[k]['of_medians']:.3f} (paired {ratios[k]['paired']:.3f})"
                 for k in TRAIN_STEP_RATIOS if k in ratios]
        lines.append(f"  {case['model']}, {case['per_device_batch']}/device x "
                     f"{case['devices']}, {case['image_size']}²: sgd "
                     f"{record['variants']['sgd']['median_ms']:.1f} ms/step; " + "; ".join(shown))
    lines += [f"  {model}: skipped, {why}" for model, why in result.get("skipped", {}).items()]
    lines += [f"  {case}: failed, {why}" for case, why in result.get("failed", {}).items()]
    if not result.get("complete", True):
        lines.append("  incomplete: the step was stopped before its last case")
    return lines


def preset_lines(summary: dict[str, Any]) -> list[str]:
    rate = summary.get("images_per_second")
    return [f"  {summary.get('steps')} steps in {summary.get('wall_seconds', 0):.0f} s, "
            f"{'-' if rate is None else f'{rate:.0f}'} images/s after the first step, "
            f"stopped by {summary.get('stop_signal')}, {summary.get('num_params')} parameters"]


def main(argv: Sequence[str] | None = None) -> int:
    """Prints the table, writes ``accelerator_check_<slug>.json``; returns the exit status."""
    parser = argparse.ArgumentParser(description="Summarise an accelerator check.")
    parser.add_argument("--status", type=Path, required=True, help="the steps' TSV records")
    parser.add_argument("--results", type=Path, required=True, help="the result directory")
    parser.add_argument("--slug", required=True, help="the machine's file-name label")
    parser.add_argument("--seconds", type=int, default=None, help="the check's wall time")
    parser.add_argument("--budget", type=int, default=None, help="the check's time budget")
    args = parser.parse_args(argv)
    steps = read_steps(args.status)
    files = {name: args.results / f"{name}_{args.slug}.json"
             for name in ("agc_update", "train_step", "gpu_preset")}
    results = {name: load(path) for name, path in files.items()}
    preset_ran = any(s["step"] == "gpu preset" and s["status"] != "skipped" for s in steps)
    missing_summary = preset_ran and results["gpu_preset"] is None

    print(f"{'step':<18}{'status':<20}{'seconds':>8}  note")
    for s in steps:
        print(f"{s['step']:<18}{s['status']:<20}{s['seconds']:>8}  {s['note']}")
    if missing_summary:
        print("gpu preset: no summary.json; it was stopped before its training loop started")
    sections = (("bench_agc: update ratios (medians)", "agc_update", agc_update_lines),
                ("bench_train_step: step time ratios", "train_step", train_step_lines),
                ("gpu preset", "gpu_preset", preset_lines))
    for title, name, lines in sections:
        if results[name] is not None:
            print(f"\n{title} ({files[name].name})")
            print("\n".join(lines(results[name])))
    if args.seconds is not None:
        print(f"\nwall time {args.seconds} s (budget {args.budget} s)")
    _common.write_results({"benchmark": "accelerator_check", "machine": _common.machine_info(),
                           "wall_seconds": args.seconds, "budget_seconds": args.budget,
                           "steps": steps, "result_files": {
                               name: path.name for name, path in files.items()
                               if results[name] is not None}},
                          args.results / f"accelerator_check_{args.slug}.json")
    return 1 if missing_summary else 0


if __name__ == "__main__":
    sys.exit(main())
