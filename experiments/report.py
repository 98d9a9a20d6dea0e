"""An experiment's report from its stored runs alone: a Markdown table and its figures.

Everything is read with :mod:`experiments.runs` from ``results/<experiment>/<trial>/``. A
run repeated over seeds shows the mean ± standard deviation (over seeds, ``ddof=1``) of
each number; a run with no finished trial keeps its row, marked as not run yet, so a
half-finished grid reports what it has.
"""

from __future__ import annotations

import math
import pathlib
import statistics
from collections.abc import Sequence

from experiments import runs
from experiments.runs import number
from experiments.spec import Experiment, Result


def load_results(experiment: Experiment, results_dir: pathlib.Path) -> list[Result]:
    """Reads every run of ``experiment`` (in grid order), finished trials only."""
    results = []
    for run in experiment.runs:
        trials = experiment.trials(run)
        directories = [results_dir / experiment.name / t.name for t in trials]
        finished = [runs.read_run(d) for d in directories if runs.is_finished(d)]
        results.append(Result(run, finished, len(trials)))
    return results


def peak_loss(trial: runs.RunData) -> float:
    """The largest training loss of a trial: inf when one was non-finite, NaN if none."""
    losses = [number(r.get("train_loss")) for r in trial.train]
    if any(not math.isfinite(loss) for loss in losses):
        return math.inf
    return max(losses, default=math.nan)


def mean_std(values: Sequence[float], fmt: str, std_fmt: str | None = None) -> str:
    """``"mean ± std"`` over seeds, or the value alone for one seed."""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.fmean(values))} ± " + (std_fmt or fmt).format(
        statistics.stdev(values))


def _peak_cell(result: Result) -> str:
    peaks = [peak_loss(t) for t in result.trials]
    blown = sum(math.isinf(p) for p in peaks)
    if blown:
        return "non-finite" if blown == len(peaks) else f"non-finite in {blown}/{len(peaks)}"
    if any(math.isnan(p) for p in peaks):
        return "—"
    return mean_std(peaks, "{:.3g}", "{:.2g}")


def step_milliseconds(trial: runs.RunData) -> float:
    """Wall time per training step of a trial, in ms; NaN when it logged no throughput.

    The median over its logging intervals of ``batch_size / images_per_second``: the
    first, compiling step is in no interval, and the median leaves out the intervals that
    also held an evaluation or a checkpoint.
    """
    batch = number(trial.summary.get("config", {}).get("batch_size"))
    rates = [number(r.get("images_per_second")) for r in trial.train]
    rates = [rate for rate in rates if math.isfinite(rate) and rate > 0]
    return 1000 * batch / statistics.median(rates) if rates else math.nan


def _step_time_cell(result: Result) -> str:
    times = [step_milliseconds(t) for t in result.trials]
    return "—" if any(math.isnan(t) for t in times) else mean_std(times, "{:.0f}")


def row_cells(result: Result) -> list[str]:
    """The numbers of a run's row: final/best accuracy, peak loss, steps, wall s, stopped."""
    summaries = [t.summary for t in result.trials]
    if not summaries:
        return ["not run yet", "—", "—", "—", "—", "—"]
    diverged = sum(bool(s.get("diverged")) for s in summaries)
    steps = sorted({str(s.get("steps")) for s in summaries})
    return [
        mean_std([number(s.get("final_test_accuracy")) for s in summaries], "{:.4f}"),
        mean_std([number(s.get("best_test_accuracy")) for s in summaries], "{:.4f}"),
        _peak_cell(result),
        "/".join(steps),
        mean_std([number(s.get("wall_seconds")) for s in summaries], "{:.0f}"),
        ("yes" if diverged else "no") if len(summaries) == 1 else f"{diverged}/{len(summaries)}",
    ]


STOPPED_COLUMN = "stopped (non-finite)"
STOPPED_NOTE = (f"\"{STOPPED_COLUMN}\" counts the runs a non-finite loss stopped; a blow-up whose "
                "loss stayed finite shows only in \"peak train loss\" (and in the final accuracy, "
                "often at chance).")


def table(results: Sequence[Result], columns: Sequence[str], step_time: bool = False) -> str:
    """Returns a Markdown table with one row per run (a ``seeds`` column if any has several).

    "stopped (non-finite)" counts the runs a non-finite loss stopped; "peak train loss" also
    shows blow-ups that stayed finite (and often left the network dead, at chance accuracy),
    which the table's note says. With
    ``step_time``, "ms / step" follows "wall s" (:func:`step_milliseconds`).
    """
    with_seeds = any(r.expected > 1 for r in results)
    header = [*columns, "final test acc.", "best test acc.", "peak train loss", "steps",
              "wall s", *(["ms / step"] if step_time else []), STOPPED_COLUMN,
              *(["seeds"] if with_seeds else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for result in results:
        cells = row_cells(result)
        if step_time:
            cells.insert(5, _step_time_cell(result) if result.trials else "—")
        cells = [str(result.labels.get(c, "")) for c in columns] + cells
        if with_seeds:
            cells.append(f"{len(result.trials)} of {result.expected}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_text(experiment: Experiment, results: Sequence[Result]) -> str:
    """The committed Markdown file of an experiment: question, table, machine, command."""
    trials = experiment.all_trials()
    missing = [t.name for t in trials
               if not any(d.directory.name == t.name for r in results for d in r.trials)]
    kinds = sorted({str(d.summary.get("device_kind", "?")) for r in results for d in r.trials})
    first = " ".join(experiment.command(trials[0], "…")[1:]).replace(" --workdir …", "")
    seeds = "; a seed k > 0 adds `--seed k`" if len(trials) > len(experiment.runs) else ""
    rows = table(results, experiment.report.columns, experiment.report.step_time)
    text = (f"{experiment.question}\n\n{rows}\n{STOPPED_NOTE}\n\n"
            f"Measured on: {', '.join(kinds)}. Command: `python {first}` (first run; the "
            f"others change only their own flags{seeds}).\n")
    if missing:
        text += (f"\n{len(missing)} of {len(trials)} runs have not finished yet: "
                 f"{', '.join(missing)}.\n")
    return text


def report_experiment(experiment: Experiment, results_dir: pathlib.Path,
                      figures_dir: pathlib.Path) -> list[pathlib.Path]:
    """Regenerates the figures and the Markdown table of ``experiment`` from stored runs.

    Args:
      experiment: the grid.
      results_dir: where its runs are stored (``<results_dir>/<experiment>/<trial>/``).
      figures_dir: where figures (PNG) and the table (``<name>.md``) are written.

    Returns:
      The files written.

    Raises:
      FileNotFoundError: no run of the experiment has finished.
    """
    results = load_results(experiment, results_dir)
    if not any(r.trials for r in results):
        raise FileNotFoundError(
            f"No finished run of {experiment.name!r} under {results_dir / experiment.name}; run "
            f"`python -m experiments run {experiment.name}` first.")
    finished = [r for r in results if r.trials]
    paths = [path for draw in experiment.report.figures
             for path in draw(experiment, finished, figures_dir)]
    table_path = figures_dir / f"{experiment.name}.md"
    table_path.parent.mkdir(parents=True, exist_ok=True)
    table_path.write_text(table_text(experiment, results))
    return [*paths, table_path]
