"""Plots the curves of one or more runs: accuracy, loss, AGC's clip fraction and norms.

Run it from the repository root::

    python -m examples.common.plot runs/agc runs/no_agc --out curves.png
    python -m examples.common.plot runs/agc --x step --out curves.png

Each run directory holds the ``metrics.jsonl`` and ``summary.json`` (or, while it runs,
``config.json``) that a trainer writes (read with :mod:`examples.common.runs`). A run's
legend names the settings in which its configuration differs from the others' (one run:
its main settings); the title names the settings they share.
"""

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from examples.common import workdir as workdir_lib
from examples.common.runs import METRICS, RunData, read_run

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


def run_config(run: RunData) -> dict[str, Any]:
    """A run's configuration: its summary's, or while it runs, its ``config.json``."""
    return run.config or workdir_lib.stored_config(run.directory) or {}


def varying_keys(runs: Sequence[RunData]) -> set[str]:
    """The configuration fields whose values differ between runs (execution-only aside)."""
    configs = [run_config(r) for r in runs]
    keys = set().union(*configs) - set(workdir_lib.EXECUTION_ONLY)
    return {k for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1}


def labels(runs: Sequence[RunData]) -> list[str]:
    """Labels runs by the settings that differ between them (one run: its main settings)."""
    varying = varying_keys(runs)
    result = []
    for run in runs:
        config = run_config(run)
        shown = {k: v for k, v in config.items()
                 if (k in varying if varying else k in LABEL_KEYS)}
        text = describe(shown) or run.directory.name  # No configuration recorded.
        result.append(text + (" (diverged)" if run.diverged else ""))
    return result


def _x(records: Sequence[dict[str, Any]], axis: str) -> list[float]:
    return [r[axis] for r in records]


def figure(runs: Sequence[RunData], x: str = "epoch") -> Figure:
    """Draws accuracy, loss, AGC's clip fraction and AGC's gradient norms for every run.

    Args:
      runs: the runs.
      x: the horizontal axis, ``"epoch"`` or ``"step"``.

    Returns:
      The figure: four panels, one line per run in each (two in the loss panel, and two in
      the norm panel: the gradient norm before and after clipping, on a log scale).
    """
    fig = Figure(figsize=(20, 4.4))
    ax_acc, ax_loss, ax_clip, ax_norm = fig.subplots(1, 4)
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
        _plot_norms(ax_norm, trains, x, color)
    titles = ("test accuracy", "loss (training —, test --)", "AGC clip fraction (training)",
              "gradient norm, AGC's leaves (before —, after clipping --)")
    for ax, title in zip((ax_acc, ax_loss, ax_clip, ax_norm), titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    if agc_off:
        ax_clip.text(0.98, 0.97, "AGC off (no clip fraction):\n" + "\n".join(agc_off),
                     transform=ax_clip.transAxes, ha="right", va="top", fontsize="small")
    varying = varying_keys(runs)
    if len(runs) > 1:
        ax_acc.legend(fontsize="small")
    shared = {k: v for k, v in run_config(runs[0]).items()
              if k in LABEL_KEYS and k not in varying}
    # One run: its label (its main settings); several: the settings they share.
    fig.suptitle(labels(runs)[0] if len(runs) == 1 else describe(shared), fontsize="medium")
    fig.tight_layout()
    return fig


def _plot_norms(ax: Any, trains: Sequence[dict[str, Any]], x: str, color: str) -> None:
    """The gradient norm before (—) and after (--) clipping, where the run recorded them.

    Runs made before the trainer logged AGC's norms, and runs without AGC, draw nothing.
    """
    for key, style in (("grad_norm", "-"), ("clipped_grad_norm", "--")):
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
    parser = argparse.ArgumentParser(prog="python -m examples.common.plot",
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
