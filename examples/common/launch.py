"""What a family's ``main.py`` does around training: logging, distributed start-up, exit status."""

import logging
import os
import pathlib
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax

from examples.common import errors, flags


def setup_logging() -> None:
    """Logs INFO lines with a time stamp to stderr, without JAX's and Orbax's chatter."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr,
                        force=True)
    for noisy in ("absl", "orbax", "jax"):  # Their INFO lines would drown the progress lines.
        logging.getLogger(noisy).setLevel(logging.WARNING)


def maybe_initialize_distributed() -> None:
    """Calls ``jax.distributed.initialize`` on a multi-host launch.

    Under SLURM, Open MPI or on a TPU pod JAX discovers the processes itself. A launch by
    hand sets ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` in every process; JAX does not read the
    last two, so they are passed on here. Nothing happens on a single-process launch or
    when the caller already initialised ``jax.distributed``.
    """
    if jax.distributed.is_initialized():
        return
    if os.environ.get("JAX_NUM_PROCESSES"):
        missing = [v for v in ("JAX_COORDINATOR_ADDRESS", "JAX_PROCESS_ID") if v not in os.environ]
        if missing:
            raise ValueError(f"JAX_NUM_PROCESSES is set but {missing} are not: a launch by hand "
                             "sets all three in every process.")
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
        return
    cluster_vars = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
    cluster_tasks = max(int(os.environ.get(v) or 1) for v in cluster_vars)
    if cluster_tasks > 1 or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize()


def run_command_line(argv: Sequence[str] | None, *, prog: str, description: str,
                     presets: Sequence[str], get_config: Callable[[str], Any],
                     train_and_evaluate: Callable[..., dict[str, Any]]) -> int:
    """A family's ``main``: parses the flags, joins a multi-host launch, trains.

    Args:
      argv: the arguments (``None``: ``sys.argv``).
      prog: the program's name in the usage line.
      description: what the program does.
      presets: the family's preset names, the default first.
      get_config: returns a preset's config.
      train_and_evaluate: the family's ``(config, workdir, resume=, overwrite=) -> summary``.

    Returns:
      The exit status: 0, 1 when training diverged, ``128 + signal`` when a signal
      stopped the run, 2 after a user error (a flag out of range, a work directory
      holding another run, an unwritable file), which prints one ``error:`` line and no
      traceback.
    """
    config, options = flags.parse(argv, prog=prog, description=description,
                                  presets=presets, get_config=get_config)
    setup_logging()
    maybe_initialize_distributed()

    def run() -> int:
        summary = train_and_evaluate(config, options.workdir, resume=options.resume,
                                     overwrite=options.overwrite)
        return exit_status(summary, options.workdir)

    return errors.exit_on_user_error(run)


def exit_status(summary: dict[str, Any], workdir: pathlib.Path) -> int:
    """Logs how a run ended; returns its exit status.

    0 when it finished, 1 when training diverged (a non-finite loss: the run failed, though
    its outputs are complete), ``128 + signal`` when a signal stopped it.
    """
    if summary["diverged"]:
        logging.error("The run diverged (non-finite loss); see %s.", workdir / "summary.json")
        return 1
    if summary["interrupted"]:
        return 128 + signal.Signals[summary["stop_signal"]]
    logging.info("final test accuracy %.4f, best %.4f, %s images/s, %.0f s",
                 summary["final_test_accuracy"], summary["best_test_accuracy"],
                 f"{summary['images_per_second'] or 0:.0f}", summary["wall_seconds"])
    return 0
