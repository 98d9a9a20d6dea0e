"""A tiny experiment and fake stored trials for the tests of the ``experiments`` package."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from experiments import figures, fingerprint
from experiments.spec import Experiment, Report, Run

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = Experiment(
    name="tiny",
    question="Two smoke runs, with and without AGC.",
    preset="smoke",
    overrides={"steps": 6, "train_examples": 512, "log_every_steps": 2},
    runs=(Run("agc", {"clipping": 0.16}, {"clip": "AGC λ=0.16"}),
          Run("none", {"clipping": 0.0}, {"clip": "no clipping"})),
    report=Report(figures=(figures.curves,), columns=("clip",)),
)


def trial_config(experiment: Experiment = TINY, index: int = 0, **changes: Any) -> dict:
    """The configuration trial ``index`` of ``experiment`` runs with, as its summary records it."""
    trial = experiment.all_trials()[index]
    config = dataclasses.asdict(fingerprint.trial_config(experiment, trial))
    return json.loads(json.dumps({**config, **changes}))


def fake_trial(directory: pathlib.Path, final: float, losses=(2.0, 1.5), diverged=False,
               by_kind=None, config: dict | None = None) -> pathlib.Path:
    """A finished trial's files, as the trainer writes them (``config``: its recorded one)."""
    directory.mkdir(parents=True)
    records = [{"step": 10 * (i + 1), "train_loss": loss, "clip_fraction": 0.01,
                "clip_fraction_by_param": by_kind} for i, loss in enumerate(losses)]
    records.append({"step": 10 * len(losses), "epoch": 0.3, "test_loss": 1.5,
                    "test_accuracy": final})
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"final_test_accuracy": final, "best_test_accuracy": final,
               "steps": 10 * len(losses), "wall_seconds": 100.0 + final, "diverged": diverged,
               "device_kind": "cpu", **({"config": config} if config is not None else {})}
    (directory / "summary.json").write_text(json.dumps(summary))
    return directory
