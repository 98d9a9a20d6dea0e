"""The ViT example's command line: a preset plus a flag for every config field.

Run it from the repository root::

    python -m examples.vit.main --preset cpu --workdir runs/vit_cpu
    python -m examples.vit.main --preset cpu --help   # every flag, with cpu's values

``python -m examples.vit.train`` is the same command.
"""

import sys
from collections.abc import Sequence

from examples.common import launch
from examples.vit import configs, train

PROG = "python -m examples.vit.main"
DESCRIPTION = ("Train a Flax NNX Vision Transformer with AdamW and, optionally, adaptive "
               "gradient clipping (AGC) before or after it.")


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the flags, trains; returns the exit status (2 after a user error)."""
    return launch.run_command_line(argv, prog=PROG, description=DESCRIPTION,
                                   presets=configs.PRESETS, get_config=configs.get_config,
                                   train_and_evaluate=train.train_and_evaluate)


if __name__ == "__main__":
    sys.exit(main())
