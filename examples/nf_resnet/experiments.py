"""AGC's claims, measured: named experiment grids run through the trainer's own CLI.

Each experiment is data (:data:`EXPERIMENTS`): a preset, flags shared by its runs, and one
set of flags per run. ``run`` launches every run that has no ``summary.json`` yet as
``python -m examples.nf_resnet.train`` in ``<runs-dir>/<experiment>/<run>/``, so an
interrupted grid continues where it stopped. ``report`` rebuilds every figure and table
from the stored ``metrics.jsonl``/``summary.json`` alone::

    python -m examples.nf_resnet.experiments list
    python -m examples.nf_resnet.experiments run with_without_agc
    python -m examples.nf_resnet.experiments report with_without_agc

Defaults: runs in ``docs/runs/``, figures and tables in ``docs/figures/``, both committed
(small text and PNG files) so that any later session continues the grid and anyone can
regenerate the figures from the repository.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_RUNS_DIR = REPO_ROOT / "docs" / "runs"
DEFAULT_FIGURES_DIR = REPO_ROOT / "docs" / "figures"


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of an experiment.

    Attributes:
      name: directory name of the run, unique in its experiment.
      flags: trainer flags of this run, added after the experiment's common flags.
      labels: settings that plots and tables group by (e.g. batch size, λ).
    """

    name: str
    flags: tuple[str, ...]
    labels: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A grid of runs sharing a preset and a budget.

    Attributes:
      name: the experiment's name (its directory under the runs dir).
      question: what the experiment measures, one sentence.
      preset: the trainer preset every run starts from.
      common_flags: flags shared by every run (the budget, the model).
      runs: the grid.
      title: the figures' title, when the report draws one.
    """

    name: str
    question: str
    preset: str
    common_flags: tuple[str, ...]
    runs: tuple[Run, ...]
    title: str = ""

    def command(self, run: Run, workdir: pathlib.Path) -> list[str]:
        """The trainer command line of ``run``."""
        return [sys.executable, "-m", "examples.nf_resnet.train", "--preset", self.preset,
                "--workdir", str(workdir), *self.common_flags, *run.flags]


# Budgets are sized for the 2-core CPU machines this project runs on: each run is a few
# minutes of the `cpu` preset's model. The batch-size grids use a fixed number of steps (as
# in large-batch studies that compare at equal steps; equal epochs would leave batch 4096
# with 28 steps), so a larger batch also sees more data.
CPU_BUDGET = ("--epochs", "2")
LARGE_BATCH_BUDGET = ("--steps", "60", "--warmup-epochs", "0")
BATCH_SIZES = (256, 1024, 4096)
CLIPPINGS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32)
# Batches above this are run as microbatches of this size (same gradient, summed before
# clipping): XLA:CPU trains the cpu model ~2x faster per image at 256 than at 4096.
CPU_MICROBATCH = 256
# Flags that change how a run executes, not what it computes (up to float rounding): a
# stored run made without them still counts as done.
EXECUTION_ONLY_FLAGS = ("--microbatch-size",)
# Base learning rate: the trainer's peak is lr · batch / 256, the linear scaling rule.
LARGE_BATCH_LR = "0.2"  # peak 0.2 at batch 256, 0.8 at 1024, 3.2 at 4096
LONG_BUDGET_BATCH = 1024  # the batch of the longer-budget λ check


def _clip_label(clipping: float | None, global_norm: float | None = None) -> str:
    if global_norm:
        return f"global norm {global_norm:g}"
    return "no clipping" if not clipping else f"AGC λ={clipping:g}"


def _with_without_agc() -> Experiment:
    return Experiment(
        name="with_without_agc",
        question="Same NF-ResNet and schedule with AGC (head excluded), with no clipping, "
                 "and with global-norm clipping.",
        preset="cpu",
        common_flags=CPU_BUDGET,
        runs=(
            Run("agc", ("--clipping", "0.16"), {"clip": _clip_label(0.16)}),
            Run("no_clipping", ("--clipping", "0"), {"clip": _clip_label(0)}),
            Run("global_norm", ("--clipping", "0", "--clip-global-norm", "1.0"),
                {"clip": _clip_label(0, 1.0)}),
        ),
    )


def _batch_by_clipping_runs(
    clippings: Sequence[float], run_name: Callable[[int, float], str], largest_first: bool
) -> tuple[Run, ...]:
    """Every (batch size, λ) pair at the linearly scaled learning rate.

    Largest batch first puts the telling runs first; smallest first finishes the most runs
    early (a batch-4096 run costs 16 batch-256 runs), for grids that span sessions.
    """
    def microbatch(batch: int) -> tuple[str, ...]:
        return ("--microbatch-size", str(CPU_MICROBATCH)) if batch > CPU_MICROBATCH else ()

    return tuple(
        Run(run_name(batch, clipping),
            ("--batch-size", str(batch), *microbatch(batch), "--lr", LARGE_BATCH_LR,
             "--clipping", str(clipping)),
            {"batch_size": batch, "clipping": clipping, "clip": _clip_label(clipping)})
        for batch in sorted(BATCH_SIZES, reverse=largest_first)
        for clipping in clippings
    )


def _large_batch() -> Experiment:
    runs = _batch_by_clipping_runs(
        (0.04, 0.0), lambda batch, clip: f"batch{batch}_{'agc' if clip else 'none'}",
        largest_first=True)
    return Experiment(
        name="large_batch",
        question="Batch 256, 1024, 4096 with the learning rate scaled linearly with batch "
                 "size, with AGC (λ=0.04) and without clipping.",
        preset="cpu",
        common_flags=LARGE_BATCH_BUDGET,
        runs=runs,
    )


def _clipping_sweep() -> Experiment:
    runs = _batch_by_clipping_runs(
        CLIPPINGS, lambda batch, clip: f"batch{batch}_clip{clip:g}", largest_first=False)
    return Experiment(
        name="clipping_sweep",
        question="How to pick λ: final test accuracy and the fraction of clipped units for "
                 "λ ∈ {0.01 … 0.32} × batch sizes {256, 1024, 4096}.",
        preset="cpu",
        common_flags=(*LARGE_BATCH_BUDGET, "--log-every-steps", "5"),
        runs=runs,
    )


def _clipping_long() -> Experiment:
    runs = _batch_by_clipping_runs(
        (0.01, 0.04, 0.16, 0.32, 0.0), lambda batch, clip: f"clip{clip:g}" if clip else "none",
        largest_first=False)
    return Experiment(
        name="clipping_long",
        question="Does the λ ranking of the 60-step sweep hold at 4× the budget? Batch 1024, "
                 "240 steps (4.1 epochs), λ ∈ {0.01, 0.04, 0.16, 0.32} and no clipping.",
        preset="cpu",
        common_flags=("--steps", "240", "--warmup-epochs", "0", "--log-every-steps", "10"),
        runs=tuple(run for run in runs if run.labels["batch_size"] == LONG_BUDGET_BATCH),
        title=f"Batch {LONG_BUDGET_BATCH}, 240 steps, peak learning rate 0.8",
    )


def _skip_gain_floor() -> Experiment:
    # The first run is clipping_long's λ = 0.01 run, flag for flag.
    long_budget = _clipping_long()
    (base,) = (run.flags for run in long_budget.runs if run.labels["clipping"] == 0.01)
    return Experiment(
        name="skip_gain_floor",
        question="Is AGC's ε floor (a parameter at zero may move only ~lr·λ·ε per step) what "
                 "holds back the zero-initialised skip gains at small λ? Batch 1024, λ = 0.01, "
                 "240 steps: AGC on all but the head, also leaving out the skip gains, and "
                 "ε = 1e-2.",
        preset="cpu",
        common_flags=long_budget.common_flags,
        runs=(
            Run("head_excluded", base, {"clip": "AGC λ=0.01, ε=1e-3"}),
            Run("skip_gains_excluded", (*base, "--agc-exclude", "^head/|skip_gain$"),
                {"clip": "AGC λ=0.01, skip gains excluded"}),
            Run("eps_1e-2", (*base, "--agc-eps", "1e-2"), {"clip": "AGC λ=0.01, ε=1e-2"}),
        ),
        title="Batch 1024, λ = 0.01, 240 steps",
    )


EXPERIMENTS: dict[str, Callable[[], Experiment]] = {
    "with_without_agc": _with_without_agc,
    "large_batch": _large_batch,
    "clipping_sweep": _clipping_sweep,
    "clipping_long": _clipping_long,
    "skip_gain_floor": _skip_gain_floor,
}


# ----------------------------------------------------------------------------- running


def is_finished(workdir: pathlib.Path) -> bool:
    """Whether a run left its ``summary.json`` (also true for a run that diverged)."""
    return (workdir / "summary.json").is_file()


def run_experiment(
    experiment: Experiment,
    runs_dir: pathlib.Path,
    only: Sequence[str] = (),
    launch: Callable[[list[str], pathlib.Path], int] | None = None,
    dry_run: bool = False,
) -> dict[str, str]:
    """Runs every unfinished run of ``experiment``, one after another.

    Args:
      experiment: the grid.
      runs_dir: parent directory; run ``r`` writes to ``runs_dir/experiment.name/r.name``.
      only: names of runs to restrict to (all when empty).
      launch: starts a command in a directory and returns its exit code; defaults to a
        subprocess whose output is logged to ``train.log`` in the run's directory.
      dry_run: print what would run, run nothing.

    Returns:
      Run name -> ``"done"`` (already finished), ``"ran"``, ``"failed"`` or ``"planned"``.
    """
    launch = launch or _launch_subprocess
    unknown = set(only) - {run.name for run in experiment.runs}
    if unknown:
        raise ValueError(f"No run named {sorted(unknown)} in {experiment.name!r}; runs: "
                         f"{[run.name for run in experiment.runs]}")
    outcome = {}
    selected = [run for run in experiment.runs if not only or run.name in only]
    for index, run in enumerate(selected, 1):
        workdir = runs_dir / experiment.name / run.name
        command = experiment.command(run, workdir)
        if is_finished(workdir):
            _check_same_settings(workdir, command)
            outcome[run.name] = "done"
            continue
        print(f"[{index}/{len(selected)}] {experiment.name}/{run.name}: "
              f"{' '.join(command[1:])}", flush=True)
        if dry_run:
            outcome[run.name] = "planned"
            continue
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "run.json").write_text(json.dumps(
            {"experiment": experiment.name, "run": run.name, "labels": run.labels,
             "command": command[1:]}, indent=1) + "\n")
        start = time.monotonic()
        code = launch(command, workdir)
        ok = code == 0 and is_finished(workdir)
        outcome[run.name] = "ran" if ok else "failed"
        print(f"    {'finished' if ok else f'FAILED (exit {code}; see train.log)'} in "
              f"{time.monotonic() - start:.0f} s", flush=True)
    return outcome


def _settings(command: Sequence[str]) -> list[str]:
    """The trainer flags of a command that decide its result.

    Leaves out the interpreter, the ``--workdir`` value and :data:`EXECUTION_ONLY_FLAGS`.
    """
    flags = list(command[command.index("-m"):]) if "-m" in command else list(command)
    for flag in ("--workdir", *EXECUTION_ONLY_FLAGS):
        if flag in flags:
            del flags[flags.index(flag):flags.index(flag) + 2]
    return flags


def _check_same_settings(workdir: pathlib.Path, command: Sequence[str]) -> None:
    """Refuses to count a stored run as done when the grid now asks for other flags."""
    record = workdir / "run.json"
    if not record.is_file():
        return
    stored = _settings(json.loads(record.read_text())["command"])
    if stored != _settings(command):
        raise ValueError(
            f"{workdir} finished with flags {' '.join(stored)}, but the experiment now runs "
            f"{' '.join(_settings(command))}. Delete that directory to rerun it with the new "
            "flags, or restore the experiment's definition.")


def _launch_subprocess(command: list[str], workdir: pathlib.Path) -> int:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(workdir / "train.log", "w") as log:
        return subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env=env, check=False).returncode


# ----------------------------------------------------------------------------- reading


@dataclasses.dataclass
class RunResult:
    """What a finished run left on disk."""

    name: str
    labels: dict[str, Any]
    summary: dict[str, Any]
    train: list[dict[str, Any]]
    evals: list[dict[str, Any]]


def load_results(experiment: Experiment, runs_dir: pathlib.Path) -> list[RunResult]:
    """Reads every finished run of ``experiment`` (in grid order)."""
    results = []
    for run in experiment.runs:
        workdir = runs_dir / experiment.name / run.name
        if not is_finished(workdir):
            continue
        records = [json.loads(line) for line in
                   (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        results.append(RunResult(
            name=run.name, labels=run.labels,
            summary=json.loads((workdir / "summary.json").read_text()),
            train=[r for r in records if "train_loss" in r],
            evals=[r for r in records if "test_accuracy" in r],
        ))
    return results


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


# ----------------------------------------------------------------------------- reporting


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_curves(ax_acc, ax_loss, result: RunResult, label: str, **style) -> None:
    style = {"marker": "o", "markersize": 3, **style}  # Short runs have few records.
    steps = [r["step"] for r in result.evals]
    ax_acc.plot(steps, [_number(r["test_accuracy"]) for r in result.evals], label=label, **style)
    train_steps = [r["step"] for r in result.train]
    losses = [_number(r["train_loss"]) for r in result.train]
    (line,) = ax_loss.plot(train_steps, losses, label=label, **style)
    if result.summary.get("diverged"):
        finite = [(s, v) for s, v in zip(train_steps, losses, strict=True) if math.isfinite(v)]
        if finite:
            ax_loss.plot(*finite[-1], marker="x", markersize=10, color=line.get_color())


def _summary_table(results: Sequence[RunResult], columns: Sequence[str]) -> str:
    """Returns a Markdown table with one row per run.

    "diverged" means a non-finite loss stopped the run; "peak train loss" also shows blow-ups
    that stayed finite (and often left the network dead, at chance accuracy).
    """
    header = [*columns, "final test acc.", "best test acc.", "peak train loss", "steps", "wall s",
              "diverged"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for result in results:
        s = result.summary
        cells = [str(result.labels.get(c, "")) for c in columns]
        cells += [f"{_number(s.get('final_test_accuracy')):.4f}",
                  f"{_number(s.get('best_test_accuracy')):.4f}",
                  _peak_loss(result),
                  str(s.get("steps")),
                  f"{_number(s.get('wall_seconds')):.0f}", "yes" if s.get("diverged") else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _peak_loss(result: RunResult) -> str:
    losses = [_number(r.get("train_loss")) for r in result.train]
    if any(not math.isfinite(loss) for loss in losses):
        return "non-finite"
    return f"{max(losses):.3g}" if losses else "—"


def _machine_line(results: Sequence[RunResult]) -> str:
    kinds = sorted({str(r.summary.get("device_kind", "?")) for r in results})
    return f"Measured on: {', '.join(kinds)}."


def report_with_without_agc(experiment, results, figures_dir) -> list[pathlib.Path]:
    """Test accuracy and training loss of every run, one figure each panel."""
    plt = _pyplot()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for result in results:
        _plot_curves(ax_acc, ax_loss, result, result.labels["clip"])
    ax_acc.set(xlabel="step", ylabel="test accuracy", title="Fashion-MNIST test accuracy")
    ax_loss.set(xlabel="step", ylabel="training loss", title="Training loss", yscale="log")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
    if experiment.title:
        fig.suptitle(experiment.title)
    return _save(fig, plt, figures_dir / f"{experiment.name}.png")


def report_large_batch(experiment, results, figures_dir) -> list[pathlib.Path]:
    """Per batch size: training loss and test accuracy with and without AGC."""
    plt = _pyplot()
    batches = sorted({r.labels["batch_size"] for r in results})
    fig, axes = plt.subplots(2, len(batches), figsize=(4.2 * len(batches), 7), squeeze=False)
    for column, batch in enumerate(batches):
        ax_acc, ax_loss = axes[0][column], axes[1][column]
        for result in (r for r in results if r.labels["batch_size"] == batch):
            _plot_curves(ax_acc, ax_loss, result, result.labels["clip"])
        ax_acc.set(title=f"batch {batch}", xlabel="step", ylabel="test accuracy", ylim=(0, 1))
        ax_loss.set(xlabel="step", ylabel="training loss", yscale="log")
        for ax in (ax_acc, ax_loss):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(experiment.title
                 or "Large batches, learning rate ∝ batch size (× marks divergence)")
    return _save(fig, plt, figures_dir / f"{experiment.name}.png")


def report_clipping_sweep(experiment, results, figures_dir) -> list[pathlib.Path]:
    """Final test accuracy heat map over (λ, batch) and clip fraction over training."""
    plt = _pyplot()
    batches = sorted({r.labels["batch_size"] for r in results})
    clippings = sorted({r.labels["clipping"] for r in results})
    grid = [[float("nan")] * len(clippings) for _ in batches]
    for result in results:
        row, col = batches.index(result.labels["batch_size"]), clippings.index(
            result.labels["clipping"])
        grid[row][col] = _number(result.summary.get("final_test_accuracy"))
    fig, ax = plt.subplots(figsize=(1.2 * len(clippings) + 2, 0.9 * len(batches) + 1.5))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(clippings)), [f"{c:g}" for c in clippings])
    ax.set_yticks(range(len(batches)), [str(b) for b in batches])
    ax.set(xlabel="AGC clipping λ", ylabel="batch size", title="Final test accuracy")
    for row in range(len(batches)):
        for col in range(len(clippings)):
            value = grid[row][col]
            ax.text(col, row, "—" if math.isnan(value) else f"{value:.3f}", ha="center",
                    va="center", color="white" if not value > 0.5 else "black", fontsize=8)
    fig.colorbar(image, ax=ax)
    paths = _save(fig, plt, figures_dir / f"{experiment.name}_accuracy.png")

    fig, axes = plt.subplots(1, len(batches), figsize=(4.2 * len(batches), 3.6), squeeze=False)
    for column, batch in enumerate(batches):
        ax = axes[0][column]
        for result in (r for r in results if r.labels["batch_size"] == batch):
            records = [r for r in result.train if r.get("clip_fraction") is not None]
            ax.plot([r["step"] for r in records], [r["clip_fraction"] for r in records],
                    label=f"λ={result.labels['clipping']:g}")
        ax.set(title=f"batch {batch}", xlabel="step", ylabel="fraction of units clipped",
               yscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return paths + _save(fig, plt, figures_dir / f"{experiment.name}_clip_fraction.png")


def report_clipping_long(experiment, results, figures_dir) -> list[pathlib.Path]:
    """The curves of :func:`report_with_without_agc`, plus AGC's clip fraction per kind."""
    paths = report_with_without_agc(experiment, results, figures_dir)
    clipped = [r for r in results if any(t.get("clip_fraction_by_param") for t in r.train)]
    kinds = sorted({kind for r in clipped for t in r.train
                    for kind in (t.get("clip_fraction_by_param") or {})})
    if not kinds:  # Runs from before the trainer logged it.
        return paths
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds), 3.4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for result in clipped:
            records = [t for t in result.train if (t.get("clip_fraction_by_param") or {})
                       .get(kind) is not None]
            ax.plot([t["step"] for t in records],
                    [t["clip_fraction_by_param"][kind] for t in records],
                    label=result.labels["clip"])
        ax.set(title=kind, xlabel="step", ylim=(-0.03, 1.03))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of units clipped\n(mean over leaves of that kind)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("Which parameters AGC clips")
    return paths + _save(fig, plt, figures_dir / f"{experiment.name}_clip_by_param.png")


def _save(fig, plt, path: pathlib.Path) -> list[pathlib.Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]


REPORTS = {
    "with_without_agc": (report_with_without_agc, ("clip",)),
    "large_batch": (report_large_batch, ("batch_size", "clip")),
    "clipping_sweep": (report_clipping_sweep, ("batch_size", "clip")),
    "clipping_long": (report_clipping_long, ("batch_size", "clip")),
    "skip_gain_floor": (report_with_without_agc, ("clip",)),
}


def report_experiment(experiment: Experiment, runs_dir: pathlib.Path,
                      figures_dir: pathlib.Path, kind: str | None = None) -> list[pathlib.Path]:
    """Regenerates the figures and the Markdown table of ``experiment`` from stored runs.

    Args:
      experiment: the grid.
      runs_dir: where its runs are stored.
      figures_dir: where figures (PNG) and the table (``<name>.md``) are written.
      kind: which report to draw (a key of :data:`REPORTS`); defaults to the experiment's
        name.

    Returns:
      The files written.

    Raises:
      FileNotFoundError: no run of the experiment has finished.
    """
    results = load_results(experiment, runs_dir)
    if not results:
        raise FileNotFoundError(
            f"No finished run of {experiment.name!r} under {runs_dir / experiment.name}; run "
            f"`python -m examples.nf_resnet.experiments run {experiment.name}` first.")
    draw, columns = REPORTS[kind or experiment.name]
    paths = draw(experiment, results, figures_dir)
    table = figures_dir / f"{experiment.name}.md"
    missing = len(experiment.runs) - len(results)
    first_command = " ".join(experiment.command(experiment.runs[0], pathlib.Path("…"))[1:])
    table.write_text(
        f"{experiment.question}\n\n{_summary_table(results, columns)}\n"
        f"{_machine_line(results)} Command: `{first_command}` "
        f"(first run; the others change only their own flags).\n"
        + (f"\n{missing} of {len(experiment.runs)} runs have not finished yet.\n"
           if missing else ""))
    return [*paths, table]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m examples.nf_resnet.experiments",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the experiments and their runs")
    for name in ("run", "report"):
        sub = commands.add_parser(name, help=f"{name} an experiment")
        sub.add_argument("experiment", choices=sorted(EXPERIMENTS))
        sub.add_argument("--runs-dir", type=pathlib.Path, default=DEFAULT_RUNS_DIR)
        sub.add_argument("--figures-dir", type=pathlib.Path, default=DEFAULT_FIGURES_DIR)
        if name == "run":
            sub.add_argument("--only", nargs="*", default=(), help="run only these runs")
            sub.add_argument("--dry-run", action="store_true", help="print, run nothing")
            sub.add_argument("--no-report", action="store_true",
                             help="do not regenerate the figures afterwards")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, build in EXPERIMENTS.items():
            experiment = build()
            print(f"{name}: {experiment.question}")
            for run in experiment.runs:
                print(f"    {run.name}: {' '.join(run.flags)}")
        return 0
    experiment = EXPERIMENTS[args.experiment]()
    if args.command == "run":
        outcome = run_experiment(experiment, args.runs_dir, args.only, dry_run=args.dry_run)
        print(json.dumps(outcome, indent=1))
        if not args.dry_run and not args.no_report and any(
                state in ("done", "ran") for state in outcome.values()):
            for path in report_experiment(experiment, args.runs_dir, args.figures_dir):
                print(f"wrote {path}")
        return 1 if "failed" in outcome.values() else 0
    for path in report_experiment(experiment, args.runs_dir, args.figures_dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
