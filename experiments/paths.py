"""Where the experiments keep their files.

- :data:`RESULTS_DIR` (``results/``, committed): per trial, what its report needs
  (``<experiment>/<trial>/metrics.jsonl`` and ``summary.json``), and nothing else;
- :data:`RUNS_DIR` (``runs/experiments/``, git-ignored): the trainer's work directories
  (checkpoints, ``config.json``, the runner's ``train.log``), which a killed trial resumes
  from;
- :data:`FIGURES_DIR` (``docs/figures/``, committed): the figures and tables the
  documentation shows, regenerated from :data:`RESULTS_DIR` alone.
"""

from __future__ import annotations

import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "results"
RUNS_DIR = REPO_ROOT / "runs" / "experiments"
FIGURES_DIR = REPO_ROOT / "docs" / "figures"


def relative_to_repo(path: pathlib.Path) -> pathlib.Path:
    """``path`` relative to the repository root when inside it (else absolute).

    Commands that the runner prints and that reports show name their directories this way,
    so that no machine's own directories end up in committed files.
    """
    try:
        return path.resolve().relative_to(REPO_ROOT)
    except ValueError:
        return path.resolve()
