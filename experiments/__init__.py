"""AGC's claims, measured: named grids of training runs, resumable, reported from stored runs.

Each experiment is a value (:class:`~experiments.spec.Experiment`): a trainer module, a
preset, config overrides shared by its runs, one set of overrides per run, the seeds, and
its report. ``run`` launches every trial not stored yet: it trains in
``runs/experiments/<experiment>/<trial>/`` (git-ignored, resumable) and stores what the
report needs, ``metrics.jsonl`` and ``summary.json``, in
``results/<experiment>/<trial>/`` (committed), so an interrupted grid continues where it
stopped; a stored run counts only while the configuration it recorded is the trial's
(:mod:`experiments.fingerprint`). ``report`` rebuilds every figure and table under
``docs/figures/`` from ``results/`` alone. From the repository root::

    python -m experiments list
    python -m experiments run with_without_agc
    python -m experiments report with_without_agc
    python -m experiments report --all   # every table and figure the docs show

Modules, each importing only those above it: :mod:`~experiments.paths` (where files go),
:mod:`~experiments.runs` (reading a stored run), :mod:`~experiments.spec` (what an
experiment is), :mod:`~experiments.fingerprint` (does a stored run match its trial),
:mod:`~experiments.figures`, :mod:`~experiments.report`, :mod:`~experiments.runner`,
:mod:`~experiments.plot`, the grids (:mod:`~experiments.nf_resnet`,
:mod:`~experiments.vit`), :mod:`~experiments.catalog` and :mod:`~experiments.cli`.

From ``examples``, the experiments import only public pieces: each family's ``configs``
package (presets, the config class), :mod:`examples.common.config` (the fields' metadata:
which are execution-only) and :mod:`examples.common.runs` (the names and records of the
files a run writes); never the trainer or its helpers, and ``examples`` imports nothing
from here. A trainer is launched as a process, with flags spelled from the overrides.

A model family adds its grids as a module of values (like :mod:`experiments.nf_resnet`)
listed in :mod:`experiments.catalog`.
"""
