"""Plots the curves of one or more runs: accuracy, loss, AGC's clip fraction and norms.

Run it from the repository root::

    python -m experiments.plot runs/agc runs/no_agc --out curves.png
    python -m experiments.plot runs/agc --x step --out curves.png

Each run directory holds the ``metrics.jsonl`` and ``summary.json`` (or, while it runs,
``config.json``) that a trainer writes, or is a stored run under ``results/`` (read with
:mod:`experiments.runs`). A run's legend names the settings in which its configuration
differs from the others' (one run: its main settings); the title names the settings they
share. The panel of AGC's gradient norms is drawn when some run recorded them.
"""

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from examples.common.config import LoopConfig, execution_only_fields
from experiments.runs import METRICS, RunData, read_run

# Settings worth naming in a label, with their short names; other fields that differ
# between runs are named by their own names.
LABEL_KEYS = {
    "model": "", "batch_size": "batch", "lr": "lr", "clipping": "λ",
    "clip_global_norm": "global norm", "epochs": "epochs", "steps": "steps",
    "weight_decay": "wd", "dataset": "", "seed": "seed", "train_examples": "examples",
}


def describe(config: dict[str, Any]) -> str:
    """Returns a readable label such as ``λ=0.16 batch=128``, known settings first."""
    parts = []
    for key in [*[k for k in LABEL_KEYS if k in config],
                *sorted(k for k in config if k not in LABEL_KEYS)]:
        value, short = config[key], LABEL_KEYS.get(key, key)
        if key == "clipping" and value == 0:
            parts.append("no AGC")
        elif key in LABEL_KEYS and (value is None
                                    or (key == "clip_global_norm" and not value)):
            continue
        else:
            parts.append(f"{short}={value}" if short else str(value))
    return " ".join(parts)


def varying_keys(runs: Sequence[RunData]) -> set[str]:
    """The configuration fields whose values differ between runs (execution-only aside)."""
    configs = [r.config for r in runs]
    keys = set().union(*configs) - set(execution_only_fields(LoopConfig))
    return {k for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1}


def labels(runs: Sequence[RunData]) -> list[str]:
    """Labels runs by the settings that differ between them (one run: its main settings)."""
    varying = varying_keys(runs)
    result = []
    for run in runs:
        config = run.config
        shown = {k: v for k, v in config.items()
                 if (k in varying if varying else k in LABEL_KEYS)}
        text = describe(shown) or run.directory.name  # No configuration recorded.
        result.append(text + (" (diverged)" if run.diverged else ""))
    return result


def _x(records: Sequence[dict[str, Any]], axis: str) -> list[float]:
    return [r[axis] for r in records]


NORM_KEYS = ("grad_norm", "clipped_grad_norm")  # AGC's gradient norm before, after clipping
TITLES = ("test accuracy", "loss (training —, test --)", "AGC clip fraction (training)",
          "gradient norm of AGC's leaves\n(before clipping —, after --)")


def recorded_norms(runs: Sequence[RunData]) -> bool:
    """Whether any run recorded AGC's gradient norms (runs before the trainer did, did not)."""
    return any(r.get(key) is not None for run in runs for r in run.train for key in NORM_KEYS)


def figure(runs: Sequence[RunData], x: str = "epoch") -> Figure:
    """Draws accuracy, loss, AGC's clip fraction and AGC's gradient norms for every run.

    Args:
      runs: the runs.
      x: the horizontal axis, ``"epoch"`` or ``"step"``.

    Returns:
      The figure: one line per run in each panel (two in the loss panel, and two in the
      norm panel: the gradient norm before and after clipping, on a log scale). The norm
      panel is left out when no run recorded the norms.
    """
    panels = 4 if recorded_norms(runs) else 3
    fig = Figure(figsize=(5 * panels, 4.4))
    axes = fig.subplots(1, panels)
    ax_acc, ax_loss, ax_clip = axes[:3]
    agc_off = []
    for run, label in zip(runs, labels(runs), strict=True):
        evals, trains = run.evals, run.train
        line, = ax_acc.plot(_x(evals, x), [r["test_accuracy"] for r in evals], marker=".",
                            label=label)
        color = line.get_color()
        ax_loss.plot(_x(trains, x), [r["train_loss"] for r in trains], color=color, alpha=0.8)
        ax_loss.plot(_x(evals, x), [r["test_loss"] for r in evals], color=color, ls="--",
                     marker=".")
        clipped = [r for r in trains if r.get("clip_fraction") is not None]
        ax_clip.plot(_x(clipped, x), [r["clip_fraction"] for r in clipped], color=color)
        if not clipped:
            agc_off.append(label)
        if panels == 4:
            _plot_norms(axes[3], trains, x, color)
    for ax, title in zip(axes, TITLES, strict=False):
        ax.set_title(title)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    if agc_off:
        ax_clip.text(0.98, 0.97, "AGC off (no clip fraction):\n" + "\n".join(agc_off),
                     transform=ax_clip.transAxes, ha="right", va="top", fontsize="small")
    if len(runs) > 1:
        ax_acc.legend(fontsize="small")
    fig.suptitle(_title(runs), fontsize="medium")
    fig.tight_layout()
    return fig


def _title(runs: Sequence[RunData]) -> str:
    """One run: its label (its main settings); several: the settings they share."""
    if len(runs) == 1:
        return labels(runs)[0]
    varying = varying_keys(runs)
    return describe({k: v for k, v in runs[0].config.items()
                     if k in LABEL_KEYS and k not in varying})


def _plot_norms(ax: Any, trains: Sequence[dict[str, Any]], x: str, color: str) -> None:
    """The gradient norm before (—) and after (--) clipping, where the run recorded them.

    Runs without AGC draw nothing.
    """
    for key, style in zip(NORM_KEYS, ("-", "--"), strict=True):
        records = [r for r in trains if r.get(key) is not None]
        ax.plot(_x(records, x), [r[key] for r in records], color=color, ls=style)
    if any(line.get_xdata().size for line in ax.lines):
        ax.set_yscale("log")


def plot(run_dirs: Sequence[pathlib.Path], out: pathlib.Path, x: str = "epoch") -> None:
    """Writes the :func:`figure` of the runs in ``run_dirs`` to the PNG ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    figure([read_run(d) for d in run_dirs], x).savefig(out, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line."""
    parser = argparse.ArgumentParser(prog="python -m experiments.plot",
                                     description="Plot the curves of training runs: "
                                     "accuracy, loss, AGC's clip fraction and gradient norms.")
    parser.add_argument("run_dirs", nargs="+", type=pathlib.Path, help="run directories")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="the PNG to write")
    parser.add_argument("--x", choices=("epoch", "step"), default="epoch",
                        help="the horizontal axis")
    args = parser.parse_args(argv)
    missing = [d for d in args.run_dirs if not (d / METRICS).exists()]
    if missing:
        parser.error(f"no {METRICS} in {', '.join(map(str, missing))}")
    plot(args.run_dirs, args.out, args.x)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
