"""The NF-ResNet example's command line: a preset plus a flag for every config field.

Run it from the repository root::

    python -m examples.nf_resnet.main --preset cpu --workdir runs/cpu
    python -m examples.nf_resnet.main --preset cpu --help   # every flag, with cpu's values

``python -m examples.nf_resnet.train`` is the same command.
"""

import sys
from collections.abc import Sequence

from examples.common import errors, flags, launch
from examples.nf_resnet import configs, train

PROG = "python -m examples.nf_resnet.main"
DESCRIPTION = "Train a Flax NNX NF-ResNet with adaptive gradient clipping (AGC)."


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the flags, joins a multi-host launch, trains; returns the exit status.

    A user error (a flag out of range, a work directory holding another run, an unwritable
    file) prints one ``error:`` line and returns 2.
    """
    config, options = flags.parse(argv, prog=PROG, description=DESCRIPTION,
                                  presets=configs.PRESETS, get_config=configs.get_config)
    launch.setup_logging()
    launch.maybe_initialize_distributed()

    def run() -> int:
        summary = train.train_and_evaluate(config, options.workdir, resume=options.resume,
                                           overwrite=options.overwrite)
        return launch.exit_status(summary, options.workdir)

    return errors.exit_on_user_error(run)


if __name__ == "__main__":
    sys.exit(main())
