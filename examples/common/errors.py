"""User errors of the examples' command lines, and the checks of a run's configuration.

A :class:`UserError` is something the person at the terminal can fix (a flag out of range,
a missing directory, an unwritable file): its message names the flag or path and the fix,
and :func:`exit_on_user_error` prints it as one ``error:`` line and exits with status 2,
without a traceback. Every other exception is a bug (or the machine's problem) and keeps
its traceback.
"""

import dataclasses
import pathlib
import re
import sys
from collections.abc import Callable
from typing import Any

from examples.common import datasets


class UserError(ValueError):
    """A mistake in the command line or the files it names; the message says the fix."""


# Errors of the user's own data files, raised by the dataset reader, count as user errors.
USER_ERRORS = (UserError, datasets.DataFileError, datasets.DatasetNotFoundError)

# Fields that must be ≥ 1 (``None`` allowed when the field's default type admits it).
POSITIVE_INTS = ("batch_size", "eval_batch_size", "log_every_steps", "epochs", "steps",
                 "microbatch_size", "train_examples", "test_examples", "cpu_devices")
# Fields that must be finite and ≥ 0, with the meaning of 0 where it has one.
NON_NEGATIVE = {
    "clipping": "0 turns AGC off", "clip_global_norm": "0 turns it off",
    "crop_padding": "0: no crop", "label_smoothing": "", "weight_decay": "",
    "dropout_rate": "", "drop_path_rate": "", "warmup_epochs": "0: no warm-up",
    "erase_probability": "0: no erasing",
}
# Fields that must be finite and > 0.
POSITIVE_FLOATS = ("lr", "agc_eps")


def flag(name: str) -> str:
    """The command-line flag of a config field (``batch_size`` -> ``--batch-size``)."""
    return "--" + name.replace("_", "-")


def _check_ranges(config: Any) -> None:
    fields = {f.name for f in dataclasses.fields(config)}
    for name in POSITIVE_INTS:
        value = getattr(config, name, None)
        if name in fields and value is not None and value < 1:
            raise UserError(f"{flag(name)} {value}: must be at least 1"
                            + (" (or none)." if name != "batch_size" else "."))
    for name, meaning in NON_NEGATIVE.items():
        value = getattr(config, name, None)
        if name in fields and not 0 <= value < float("inf"):
            raise UserError(f"{flag(name)} {value}: must be ≥ 0"
                            + (f" ({meaning}); negative values are errors." if meaning else "."))
    for name in POSITIVE_FLOATS:
        value = getattr(config, name, None)
        if name in fields and not 0 < value < float("inf"):
            raise UserError(f"{flag(name)} {value}: must be > 0.")
    if getattr(config, "erase_probability", 0) > 1:
        raise UserError(f"--erase-probability {config.erase_probability}: a probability, "
                        "must be at most 1.")
    if getattr(config, "label_smoothing", 0) >= 1:
        raise UserError(f"--label-smoothing {config.label_smoothing}: must be below 1.")


def _check_examples(config: Any) -> None:
    train = config.train_examples
    if train is not None and train < config.batch_size:
        raise UserError(f"--train-examples {train} is smaller than --batch-size "
                        f"{config.batch_size}: no full batch; raise it or lower the batch.")
    size = config.microbatch_size
    if size is not None and size > config.batch_size:
        raise UserError(f"--microbatch-size {size} exceeds --batch-size {config.batch_size}; "
                        "pass a divisor of the batch, or none.")


def _check_paths(config: Any) -> None:
    pattern = getattr(config, "agc_exclude", None)
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as e:
            raise UserError(f"--agc-exclude {pattern!r}: not a regular expression ({e}).") from e
    data_dir = config.data_dir
    if data_dir is not None and not pathlib.Path(data_dir).expanduser().is_dir():
        raise UserError(f"--data-dir {data_dir}: no such directory; pass the folder holding "
                        f"the {config.dataset} files, or leave --data-dir out to search the "
                        "usual places.")


def validate(config: Any) -> None:
    """Checks a run's configuration before anything is loaded or compiled.

    Args:
      config: a :class:`~examples.common.config.LoopConfig` (or a family's subclass); the
        range checks apply to those of its fields that exist.

    Raises:
      UserError: naming the first flag out of range and what it accepts.
    """
    _check_ranges(config)
    _check_examples(config)
    _check_paths(config)


def exit_on_user_error(main: Callable[[], int]) -> int:
    """Runs a command line's body; a user error becomes one ``error:`` line and status 2.

    Args:
      main: the command's body, returning its exit status.

    Returns:
      ``main()``'s exit status, or 2 after a :data:`USER_ERRORS` exception.
    """
    try:
        return main()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
