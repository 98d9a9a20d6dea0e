"""Plots the test accuracy and loss curves of several runs in one figure.

Run it from the repository root::

    python -m examples.common.plot runs/agc runs/no_agc --out curves.png

Each run directory holds the ``metrics.jsonl`` and ``summary.json`` that a trainer
writes (read with :mod:`examples.common.runs`); a run is labelled by the settings in
which it differs from the others.
"""

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from examples.common.runs import METRICS, RunData, read_run

# Settings worth naming in a label, with their short names.
LABEL_KEYS = {
    "model": "", "batch_size": "batch", "lr": "lr", "clipping": "λ",
    "clip_global_norm": "global norm", "epochs": "epochs", "steps": "steps",
    "weight_decay": "wd", "dataset": "", "seed": "seed", "train_examples": "examples",
}


def describe(config: dict[str, Any]) -> str:
    """Returns a readable label such as ``λ=0.16 batch=128``."""
    parts = []
    for key, short in LABEL_KEYS.items():
        if key not in config or config[key] is None:
            continue
        value = config[key]
        if key == "clipping" and value == 0:
            parts.append("no AGC")
        elif key == "clip_global_norm" and not value:
            continue
        else:
            parts.append(f"{short}={value}" if short else str(value))
    return " ".join(parts)


def varying_keys(runs: Sequence[RunData]) -> set[str]:
    """Returns the labelled settings whose values differ between runs."""
    return {k for k in LABEL_KEYS if len({json.dumps(r.config.get(k)) for r in runs}) > 1}


def labels(runs: Sequence[RunData]) -> list[str]:
    """Labels runs by the settings that differ between them (or by directory name)."""
    varying = varying_keys(runs)
    result = []
    for run in runs:
        shown = {k: v for k, v in run.config.items() if k in varying}
        text = describe(shown) if shown else run.directory.name
        result.append(text + (" (diverged)" if run.diverged else ""))
    return result


def plot(run_dirs: Sequence[pathlib.Path], out: pathlib.Path) -> None:
    """Draws test accuracy, test loss and training loss against epochs for every run."""
    runs = [read_run(d) for d in run_dirs]
    fig = Figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    for run, label in zip(runs, labels(runs), strict=True):
        evals, trains = run.evals, run.train
        line, = axes[0].plot([r["epoch"] for r in evals], [r["test_accuracy"] for r in evals],
                             marker=".", label=label)
        axes[1].plot([r["epoch"] for r in evals], [r["test_loss"] for r in evals],
                     marker=".", color=line.get_color())
        axes[2].plot([r.get("epoch", r["step"]) for r in trains],
                     [r["train_loss"] for r in trains], color=line.get_color(), alpha=0.8)
    for ax, title in zip(axes, ("test accuracy", "test loss", "training loss"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    varying = varying_keys(runs)
    fig.suptitle(describe({k: v for k, v in runs[0].config.items() if k not in varying}),
                 fontsize="medium")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line."""
    parser = argparse.ArgumentParser(prog="python -m examples.common.plot",
                                     description="Plot the curves of several training runs.")
    parser.add_argument("run_dirs", nargs="+", type=pathlib.Path, help="run directories")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="the PNG to write")
    args = parser.parse_args(argv)
    missing = [d for d in args.run_dirs if not (d / METRICS).exists()]
    if missing:
        parser.error(f"no {METRICS} in {', '.join(map(str, missing))}")
    plot(args.run_dirs, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
