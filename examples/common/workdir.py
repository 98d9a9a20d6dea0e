"""One run per work directory: a new run refuses a directory holding another run.

A run writes its configuration to ``config.json`` before its first step (after the checks
that can refuse it, so a mistyped flag does not claim the directory). A later run in
the same directory must either continue it (``--resume``, with the same configuration up
to :data:`EXECUTION_ONLY` fields) or clear it first (``--overwrite``); otherwise the
trainer stops with a :class:`~examples.common.errors.UserError` naming both ways forward,
so checkpoints and records of two runs never mix.
"""

import dataclasses
import json
import logging
import pathlib
import shutil
from typing import Any

import jax

from examples.common import config as config_lib
from examples.common import runs
from examples.common.errors import UserError, flag

CONFIG = runs.CONFIG
CHECKPOINTS = "checkpoints"
# What a run writes; --overwrite deletes exactly these.
RUN_FILES = (CONFIG, runs.METRICS, runs.SUMMARY, CHECKPOINTS)
# Fields that change how a run is computed, not what it computes: a resumed run may change
# them (the fields :mod:`examples.common.config` marks ``execution_only``, and says why).
EXECUTION_ONLY = config_lib.execution_only_fields(config_lib.LoopConfig)
# Not so for a model with batch statistics: BatchNorm normalizes each microbatch on its own
# ("ghost" batch norm), so the split changes what the run computes.
BATCH_STATISTICS_FIELDS = config_lib.batch_statistics_fields(config_lib.LoopConfig)


def existing_run_files(workdir: pathlib.Path) -> list[str]:
    """The names of :data:`RUN_FILES` present in ``workdir`` (an empty folder counts as none)."""
    present = []
    for name in RUN_FILES:
        path = workdir / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            present.append(name)
    return present


def stored_config(workdir: pathlib.Path) -> dict[str, Any] | None:
    """The configuration a directory's run recorded (``config.json``, else ``summary.json``)."""
    for name, key in ((CONFIG, None), (runs.SUMMARY, "config")):
        path = workdir / name
        if path.is_file():
            stored = json.loads(path.read_text())
            return stored if key is None else stored.get(key)
    return None


def config_differences(stored: dict[str, Any], config: Any) -> list[str]:
    """``--flag stored -> new`` for every field, execution-only ones aside, that differs."""
    current = json.loads(json.dumps(dataclasses.asdict(config)))  # Tuples become lists.
    names = sorted((stored.keys() | current.keys()) - set(EXECUTION_ONLY))
    return [f"{flag(n)} {stored.get(n)} -> {current.get(n)}" for n in names
            if stored.get(n) != current.get(n)]


def _check_writable(workdir: pathlib.Path) -> None:
    for path in (workdir, *(workdir / n for n in RUN_FILES if (workdir / n).is_file())):
        try:
            if path.is_dir():
                probe = path / ".write_test"
                probe.touch()
                probe.unlink()
            else:
                with open(path, "a"):
                    pass
        except OSError as e:
            raise UserError(f"{path} is not writable ({e.strerror}); fix its permissions or "
                            "pass another --workdir.") from e


def prepare(workdir: pathlib.Path, config: Any, *, resume: bool, overwrite: bool) -> None:
    """Makes ``workdir`` ready for a run of ``config``, or refuses it.

    :func:`write_config` then claims the directory, once the run is about to start.

    Args:
      workdir: the run's directory (created if missing).
      config: the run's configuration (a dataclass).
      resume: the run continues the directory's run (whose configuration must match).
      overwrite: the directory's earlier run is deleted first.

    Raises:
      UserError: the directory holds another run (and neither ``resume`` nor ``overwrite``
        is set), a resumed run's configuration differs, or the directory is not writable.
    """
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other: pass one.")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--workdir {workdir}: cannot create it ({e.strerror}).") from e
    present = existing_run_files(workdir)
    if present and overwrite:
        for name in present:
            path = workdir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif present and not resume:
        raise UserError(
            f"--workdir {workdir} already holds a run ({', '.join(present)}). Continue it "
            "with --resume, or pass a new --workdir (or --overwrite to delete that run).")
    elif present and (stored := stored_config(workdir)) is not None:
        differences = config_differences(stored, config)
        if differences:
            raise UserError(
                f"--resume: {workdir} holds a run with other settings ({'; '.join(differences)})."
                " Resume with its settings, or pass a new --workdir (or --overwrite).")
    _check_writable(workdir)


def check_batch_statistics_resume(workdir: pathlib.Path, config: Any) -> None:
    """Refuses to resume a run whose model has batch statistics with another microbatch split.

    :func:`prepare` treats ``microbatch_size`` as execution-only, which holds only for
    models without batch statistics; the trainer calls this once the model is built and
    turns out to have some.

    Raises:
      UserError: the directory's run was made with another ``--microbatch-size``.
    """
    stored = stored_config(workdir) or {}
    current = json.loads(json.dumps(dataclasses.asdict(config)))
    differences = [f"{flag(n)} {stored.get(n)} -> {current.get(n)}"
                   for n in BATCH_STATISTICS_FIELDS if n in stored and stored[n] != current[n]]
    if differences:
        raise UserError(
            f"--resume: {workdir} holds a run with other settings ({'; '.join(differences)}). "
            "This model normalizes each microbatch with its own batch statistics, so the split "
            "changes the run: resume with its settings, or pass a new --workdir (or --overwrite).")


def write_config(workdir: pathlib.Path, config: Any) -> None:
    """Claims ``workdir`` for ``config``'s run, once the run has passed its start-up checks."""
    (workdir / CONFIG).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")


class RunDirectory:
    """A run's work directory, made ready (or refused) before anything is computed.

    Only process 0 reads and writes it; every process knows its paths.

    Attributes:
      path: the directory, absolute.
      checkpoints: its ``checkpoints/`` folder.
    """

    def __init__(self, workdir: str | pathlib.Path, config: Any, *, resume: bool,
                 overwrite: bool):
        """Checks and prepares ``workdir`` (:func:`prepare`) on process 0.

        Raises:
          UserError: see :func:`prepare`.
        """
        self.path = pathlib.Path(workdir).absolute()
        self.checkpoints = self.path / CHECKPOINTS
        self._config, self._resume = config, resume
        self._is_main = jax.process_index() == 0
        if self._is_main:
            prepare(self.path, config, resume=resume, overwrite=overwrite)
            logging.info("Outputs go to %s", workdir)

    def claim(self, has_batch_stats: bool) -> None:
        """Writes ``config.json`` once the run has passed its start-up checks.

        Args:
          has_batch_stats: whether the model keeps batch statistics (then a resumed run
            must keep its microbatch split: :func:`check_batch_statistics_resume`).
        """
        if not self._is_main:
            return
        if self._resume and has_batch_stats:
            check_batch_statistics_resume(self.path, self._config)
        write_config(self.path, self._config)
