"""The ViT example's command line: a preset plus a flag for every config field.

Run it from the repository root::

    python -m examples.vit.main --preset cpu --workdir runs/vit_cpu
    python -m examples.vit.main --preset cpu --help   # every flag, with cpu's values

``python -m examples.vit.train`` is the same command.
"""

import sys
from collections.abc import Sequence

from examples.common import flags, launch
from examples.vit import configs, train

PROG = "python -m examples.vit.main"
DESCRIPTION = ("Train a Flax NNX Vision Transformer with AdamW and, optionally, adaptive "
               "gradient clipping (AGC) before or after it.")


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the flags, joins a multi-host launch, trains; returns the exit status."""
    config, options = flags.parse(argv, prog=PROG, description=DESCRIPTION,
                                  presets=configs.PRESETS, get_config=configs.get_config)
    launch.setup_logging()
    launch.maybe_initialize_distributed()
    summary = train.train_and_evaluate(config, options.workdir, resume=options.resume)
    return launch.exit_status(summary, options.workdir)


if __name__ == "__main__":
    sys.exit(main())
