"""AGC's claims, measured: named grids of training runs, resumable, reported from disk.

Each experiment is a value (:class:`~experiments.spec.Experiment`): a trainer module, a
preset, flags shared by its runs, one set of flags per run, the seeds, and its report.
``run`` launches every trial that has no ``summary.json`` yet in
``<runs-dir>/<experiment>/<trial>/``, so an interrupted grid continues where it stopped;
``report`` rebuilds every figure and table from the stored files alone. From the
repository root::

    python -m experiments list
    python -m experiments run with_without_agc
    python -m experiments report with_without_agc

Defaults: runs in ``docs/runs/``, figures and tables in ``docs/figures/``, both committed
so that any later session continues a grid and anyone can regenerate the figures.

A model family adds its grids as a module of values (like :mod:`experiments.nf_resnet`)
listed in :mod:`experiments.catalog`.
"""
