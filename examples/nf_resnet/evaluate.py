"""Evaluates a trained NF-ResNet run's checkpoint on the test set.

Run it from the repository root::

    python -m examples.nf_resnet.evaluate --workdir runs/smoke
    python -m examples.nf_resnet.evaluate --workdir runs/smoke --all-test-examples

In Python, :func:`load` returns the trained model (see
:class:`examples.common.evaluation.TrainedModel`) for prediction.
"""

import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from examples.common import evaluation
from examples.nf_resnet import train
from examples.nf_resnet.configs import TrainConfig

PROG = "python -m examples.nf_resnet.evaluate"


def load(workdir: str | pathlib.Path, step: int | None = None,
         **overrides: Any) -> evaluation.TrainedModel:
    """Restores an NF-ResNet run; see :func:`examples.common.evaluation.load`."""
    return evaluation.load(train, TrainConfig, workdir, step, **overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the flags, restores the checkpoint, prints its test accuracy."""
    return evaluation.main(argv, prog=PROG, train=train, config_class=TrainConfig)


if __name__ == "__main__":
    sys.exit(main())
