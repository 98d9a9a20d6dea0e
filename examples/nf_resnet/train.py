"""Trains an NF-ResNet with AGC: the family's model and optimizer in the shared trainer.

    python -m examples.nf_resnet.main --preset cpu --workdir runs/cpu

(``python -m examples.nf_resnet.train`` is the same command.) The loop, the pure steps
and the outputs are the shared ones (:mod:`examples.common.trainer`,
:mod:`examples.common.steps`); this module says which model and optimizer they train.
"""

import pathlib
import sys
from typing import Any

import numpy as np
from flax import nnx

from examples.common import state as state_lib
from examples.common import trainer
from examples.nf_resnet import bn_resnet, models, optim
from examples.nf_resnet.configs import TrainConfig


def create_model(config: TrainConfig, num_classes: int, in_features: int,
                 rngs: nnx.Rngs) -> models.ResNet:
    """Builds the configured ResNet (float32 parameters, configured compute dtype).

    ``config.model`` picks the layout and the family: ``nf_resnet_*`` an NF-ResNet,
    ``bn_resnet_*`` the BatchNorm ResNet of the same size.
    """
    if config.model not in models.VARIANTS:
        raise ValueError(f"Unknown model {config.model!r}; choose from {sorted(models.VARIANTS)}.")
    spec = models.VARIANTS[config.model]
    common = dict(in_features=in_features, activation=config.activation,
                  se_ratio=config.se_ratio, drop_path_rate=config.drop_path_rate,
                  dropout_rate=config.dropout_rate,
                  dtype=state_lib.compute_dtype(config.dtype), rngs=rngs)
    if spec.normalization == "batch":
        return bn_resnet.BNResNet(spec, num_classes, **common)
    return models.NFResNet(spec, num_classes, **common)


FAMILY = state_lib.ModelFamily(name="nf_resnet", create_model=create_model,
                               create_optimizer=optim.create_optimizer)


def create_train_state(config: TrainConfig, *, num_classes: int, in_features: int,
                       mean: np.ndarray, std: np.ndarray, total_steps: int,
                       steps_per_epoch: int
                       ) -> tuple[state_lib.TrainState, state_lib.StepContext]:
    """The NF-ResNet's initial :class:`~examples.common.state.TrainState` and step constants.

    See :func:`examples.common.state.create_train_state` for the arguments.
    """
    return state_lib.create_train_state(
        FAMILY, config, num_classes=num_classes, in_features=in_features, mean=mean, std=std,
        total_steps=total_steps, steps_per_epoch=steps_per_epoch)


def train_and_evaluate(config: TrainConfig, workdir: str | pathlib.Path, resume: bool = False,
                       overwrite: bool = False) -> dict[str, Any]:
    """Trains and evaluates an NF-ResNet; see :func:`examples.common.trainer.train_and_evaluate`."""
    return trainer.train_and_evaluate(FAMILY, config, workdir, resume=resume,
                                      overwrite=overwrite)


if __name__ == "__main__":
    from examples.nf_resnet import main

    sys.exit(main.main())
