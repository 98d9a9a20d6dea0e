"""The figures of experiment reports, drawn from stored runs (every seed of a run in its colour).

Each function has the signature of :data:`experiments.spec.Figure`:
``(experiment, results, figures_dir) -> written paths``, and gets the runs with at least
one finished trial.
"""

from __future__ import annotations

import math
import pathlib
import statistics
from collections.abc import Sequence
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure

from experiments.runs import number
from experiments.spec import Experiment, Result


def _save(fig: Figure, path: pathlib.Path, bottom: float = 0.0) -> list[pathlib.Path]:
    """Lays the panels out above ``bottom`` (a fraction of the height) and writes a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=90)
    return [path]


def _plot_curves(ax_acc, ax_loss, result: Result, label: str, color: Any = None) -> None:
    """Test accuracy and training loss of every trial of a run; × marks a divergence.

    ``color`` (None: the axes' next) is the run's; its other seeds are drawn lighter.
    """
    for index, trial in enumerate(result.trials):
        style = {"marker": "o", "markersize": 3, "color": color,  # Short runs: few records.
                 "label": label if index == 0 else None, "alpha": 1.0 if index == 0 else 0.5}
        (line,) = ax_acc.plot([r["step"] for r in trial.evals],
                              [number(r["test_accuracy"]) for r in trial.evals], **style)
        color = style["color"] = line.get_color()
        steps = [r["step"] for r in trial.train]
        losses = [number(r["train_loss"]) for r in trial.train]
        ax_loss.plot(steps, losses, **style)
        if trial.diverged:
            _mark_divergence(ax_loss, steps, losses, color)


def _mark_divergence(ax, steps: Sequence[int], losses: Sequence[float], color: Any) -> None:
    """An × at a diverged trial's last finite loss, or at the panel's top above its last step.

    A trial whose every logged loss is non-finite has no point to draw, so its × sits at the
    top edge of the panel, above the step where training stopped.
    """
    finite = [(s, v) for s, v in zip(steps, losses, strict=True) if math.isfinite(v)]
    if finite:
        ax.plot(*finite[-1], marker="x", markersize=10, color=color)
    elif steps:
        ax.plot(steps[-1], 0.97, marker="x", markersize=10, color=color, clip_on=False,
                transform=ax.get_xaxis_transform())


def _palette(count: int) -> tuple:
    """Distinct colours for ``count`` runs: matplotlib's 10 (tab10), or tab20's 20 beyond 10."""
    return colormaps["tab10" if count <= 10 else "tab20"].colors


def _use_distinct_colors(axes: Sequence, count: int) -> None:
    """Cycles through :func:`_palette` (tab10 is matplotlib's default cycle; tab20 past 10)."""
    for ax in axes:
        ax.set_prop_cycle(color=_palette(count))


def _legend_entries(axes: Sequence) -> dict[str, Any]:
    """``{label: handle}`` over ``axes``: one entry per label, whichever panels draw it."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    return entries


LEGEND_ROW_INCHES = 0.2


def _legend_below(fig: Figure, columns: int) -> float:
    """One legend under the panels, one entry per label; grows the figure to make room.

    The colours are the same in every panel, and a legend inside a panel would hide curves.
    Labels too long to sit side by side get one column.

    Args:
      fig: the figure, its panels drawn, at the panels' height.
      columns: the most entries a legend row holds.

    Returns:
      The fraction of the figure's height to keep free at the bottom.
    """
    entries = _legend_entries(fig.axes)
    width, height = fig.get_size_inches()
    longest = max(map(len, entries), default=0)
    columns = max(1, min(len(entries), columns, int(width * 12 // max(longest + 6, 1))))
    rows = -(-len(entries) // columns)
    legend_height = LEGEND_ROW_INCHES * rows + 0.1
    fig.set_size_inches(width, height + legend_height)
    fig.legend(list(entries.values()), list(entries), loc="lower center", ncol=columns,
               fontsize=9, frameon=False)
    return legend_height / (height + legend_height)


def _final_evals_only(results: Sequence[Result]) -> bool:
    """Whether every trial was evaluated once, at its end (a curve would be one point)."""
    return all(len(trial.evals) <= 1 for result in results for trial in result.trials)


def _plot_final_accuracy(ax, results: Sequence[Result], labels: Sequence[str]) -> None:
    """Final test accuracy per run: one dot per seed, a bar at their mean, in the run's colour."""
    for x, result in enumerate(results):
        accuracies = [number(t.evals[-1]["test_accuracy"]) for t in result.trials if t.evals]
        if not accuracies:
            continue
        (dots,) = ax.plot([x] * len(accuracies), accuracies, "o", markersize=4, alpha=0.7)
        ax.hlines(statistics.fmean(accuracies), x - 0.3, x + 0.3, color=dots.get_color())
    ax.set_xticks(range(len(results)), labels, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="final test accuracy", title="Fashion-MNIST test accuracy (bar: mean)")


def _seeds_note(results: Sequence[Result]) -> str:
    return " (lighter: other seeds)" if any(len(r.trials) > 1 for r in results) else ""


def curves(experiment: Experiment, results: Sequence[Result],
           figures_dir: pathlib.Path) -> list[pathlib.Path]:
    """Test accuracy and training loss of every run, side by side."""
    fig = Figure(figsize=(11, 4))
    ax_acc, ax_loss = fig.subplots(1, 2)
    labels = [result.labels[experiment.report.legend] for result in results]
    _use_distinct_colors((ax_acc, ax_loss), len(results))
    for result, label in zip(results, labels, strict=True):
        _plot_curves(ax_acc, ax_loss, result, label)
    if _final_evals_only(results):
        ax_acc.clear()
        _use_distinct_colors((ax_acc,), len(results))
        _plot_final_accuracy(ax_acc, results, labels)
    else:
        ax_acc.set(xlabel="step", ylabel="test accuracy", title="Fashion-MNIST test accuracy")
    ax_loss.set(xlabel="step", ylabel="training loss", title="Training loss", yscale="log")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
    bottom = _legend_below(fig, columns=2)
    if experiment.title or _seeds_note(results):
        fig.suptitle((experiment.title or experiment.name) + _seeds_note(results))
    return _save(fig, figures_dir / f"{experiment.name}.png", bottom=bottom)


def curves_by_batch(experiment: Experiment, results: Sequence[Result],
                    figures_dir: pathlib.Path) -> list[pathlib.Path]:
    """Per batch size: test accuracy and training loss of every run."""
    batches = sorted({r.labels["batch_size"] for r in results})
    fig = Figure(figsize=(max(4.2 * len(batches), 8.4), 7))  # Wide enough for the title.
    axes = fig.subplots(2, len(batches), squeeze=False)
    # One colour per legend entry in every panel, even where a batch lacks some runs.
    labels = list(dict.fromkeys(r.labels[experiment.report.legend] for r in results))
    palette = _palette(len(labels))
    colors = {label: palette[i % len(palette)] for i, label in enumerate(labels)}
    for column, batch in enumerate(batches):
        ax_acc, ax_loss = axes[0][column], axes[1][column]
        for result in (r for r in results if r.labels["batch_size"] == batch):
            label = result.labels[experiment.report.legend]
            _plot_curves(ax_acc, ax_loss, result, label, colors[label])
        ax_acc.set(title=f"batch {batch}", xlabel="step", ylabel="test accuracy", ylim=(0, 1))
        ax_acc.set_xlim(0, ax_loss.get_xlim()[1])  # Evaluations near the end stay in context.
        ax_loss.set(xlabel="step", ylabel="training loss", yscale="log")
        for ax in (ax_acc, ax_loss):
            ax.grid(alpha=0.3)
    bottom = _legend_below(fig, columns=3)
    fig.suptitle((experiment.title or "Large batches, learning rate ∝ batch size "
                  "(× marks divergence)") + _seeds_note(results))
    return _save(fig, figures_dir / f"{experiment.name}.png", bottom=bottom)


def accuracy_heat_map(experiment: Experiment, results: Sequence[Result],
                      figures_dir: pathlib.Path) -> list[pathlib.Path]:
    """Final test accuracy (mean over seeds) over (λ, batch size)."""
    batches = sorted({r.labels["batch_size"] for r in results})
    clippings = sorted({r.labels["clipping"] for r in results})
    grid = [[math.nan] * len(clippings) for _ in batches]
    for result in results:
        grid[batches.index(result.labels["batch_size"])][
            clippings.index(result.labels["clipping"])] = statistics.fmean(
                number(t.summary.get("final_test_accuracy")) for t in result.trials)
    fig = Figure(figsize=(1.2 * len(clippings) + 2, 0.9 * len(batches) + 1.5))
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(clippings)), [f"{c:g}" for c in clippings])
    ax.set_yticks(range(len(batches)), [str(b) for b in batches])
    ax.set(xlabel="AGC clipping λ", ylabel="batch size", title="Final test accuracy")
    for row, values in enumerate(grid):
        for col, value in enumerate(values):
            ax.text(col, row, "—" if math.isnan(value) else f"{value:.3f}", ha="center",
                    va="center", color="white" if not value > 0.5 else "black", fontsize=8)
    fig.colorbar(image, ax=ax)
    return _save(fig, figures_dir / f"{experiment.name}_accuracy.png")


def clip_fraction_by_batch(experiment: Experiment, results: Sequence[Result],
                           figures_dir: pathlib.Path) -> list[pathlib.Path]:
    """AGC's fraction of clipped units over training, per batch size and λ."""
    batches = sorted({r.labels["batch_size"] for r in results})
    fig = Figure(figsize=(4.2 * len(batches), 3.6))
    axes = fig.subplots(1, len(batches), squeeze=False)
    for column, batch in enumerate(batches):
        ax = axes[0][column]
        for result in (r for r in results if r.labels["batch_size"] == batch):
            for index, trial in enumerate(result.trials):
                records = [r for r in trial.train if r.get("clip_fraction") is not None]
                ax.plot([r["step"] for r in records], [r["clip_fraction"] for r in records],
                        label=result.labels[experiment.report.legend] if index == 0 else None)
        ax.set(title=f"batch {batch}", xlabel="step", ylabel="fraction of units clipped",
               yscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, figures_dir / f"{experiment.name}_clip_fraction.png")


def clip_fraction_by_kind(experiment: Experiment, results: Sequence[Result],
                          figures_dir: pathlib.Path) -> list[pathlib.Path]:
    """AGC's clip fraction per kind of parameter (kernel, gain, skip gain…) over training."""
    by_kind = [(r, t) for r in results for t in r.trials
               if any(rec.get("clip_fraction_by_param") for rec in t.train)]
    kinds = sorted({kind for _, t in by_kind for rec in t.train
                    for kind in (rec.get("clip_fraction_by_param") or {})})
    if not kinds:  # Runs from before the trainer logged it.
        return []
    fig = Figure(figsize=(3.6 * len(kinds), 3.4))
    axes = fig.subplots(1, len(kinds), squeeze=False)
    legend = experiment.report.legend
    run_names = dict.fromkeys(result.run.name for result, _ in by_kind)
    colours = {name: f"C{i}" for i, name in enumerate(run_names)}
    for ax, kind in zip(axes[0], kinds, strict=True):
        labelled = set()
        for result, trial in by_kind:
            records = [rec for rec in trial.train
                       if (rec.get("clip_fraction_by_param") or {}).get(kind) is not None]
            if not records:
                continue
            first = result.run.name not in labelled  # The run's first seed: its legend entry.
            labelled.add(result.run.name)
            ax.plot([rec["step"] for rec in records],
                    [rec["clip_fraction_by_param"][kind] for rec in records],
                    color=colours[result.run.name], alpha=1.0 if first else 0.45,
                    label=result.labels[legend] if first else None)
        ax.set(title=kind, xlabel="step", ylim=(-0.03, 1.03))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of units clipped\n(mean over leaves of that kind)")
    entries = _legend_entries(axes[0])
    axes[0][-1].legend(list(entries.values()), list(entries), fontsize=8)
    fig.suptitle("Which parameters AGC clips")
    return _save(fig, figures_dir / f"{experiment.name}_clip_by_param.png")


def clip_fraction_curves(experiment: Experiment, results: Sequence[Result],
                         figures_dir: pathlib.Path) -> list[pathlib.Path]:
    """AGC's fraction of clipped units over training, one line per run with AGC (seed 0)."""
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    for result in results:
        records = [r for r in result.trials[0].train
                   if math.isfinite(number(r.get("clip_fraction")))]
        if records:
            ax.plot([r["step"] for r in records], [r["clip_fraction"] for r in records],
                    label=result.labels[experiment.report.legend])
    if not ax.lines:  # No run of the grid used AGC.
        return []
    ax.set(xlabel="step", ylabel="fraction of units clipped", ylim=(-0.03, 1.03),
           title="AGC's clip fraction")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, figures_dir / f"{experiment.name}_clip_fraction.png")
