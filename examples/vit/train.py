"""Trains a ViT with AdamW: the family's model and optimizer in the shared trainer.

    python -m examples.vit.main --preset cpu --workdir runs/vit_cpu

(``python -m examples.vit.train`` is the same command.) The loop, the pure steps and the
outputs are the shared ones (:mod:`examples.common.trainer`, :mod:`examples.common.steps`);
this module says which model and optimizer they train.
"""

import pathlib
import sys
from typing import Any

import optax
from flax import nnx

from examples.common import errors, trainer
from examples.common import state as state_lib
from examples.vit import models, optim
from examples.vit.configs import TrainConfig

# (height, width, channels) of each dataset's images: the ViT's token grid depends on it.
IMAGE_SHAPES = {"fashion_mnist": (28, 28, 1), "mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
NUM_CLASSES = 10  # Of every dataset above.


def create_model(config: TrainConfig, num_classes: int, in_features: int,
                 rngs: nnx.Rngs) -> models.ViT:
    """Builds the configured ViT (float32 parameters, configured compute dtype).

    Raises:
      UserError: the model's patches do not tile the dataset's images.
    """
    if config.model not in models.VARIANTS:
        raise ValueError(f"Unknown model {config.model!r}; choose from {sorted(models.VARIANTS)}.")
    side = IMAGE_SHAPES[config.dataset][0]
    if side % models.VARIANTS[config.model].patch_size:
        tiling = sorted(name for name, spec in models.VARIANTS.items()
                        if side % spec.patch_size == 0)
        raise errors.UserError(
            f"--model {config.model} cuts images into "
            f"{models.VARIANTS[config.model].patch_size}-pixel patches, which do not tile "
            f"{config.dataset}'s {side}×{side} images; pick one of {tiling}.")
    return models.ViT(
        models.VARIANTS[config.model], num_classes, image_size=side,
        in_features=in_features, dropout_rate=config.dropout_rate,
        dtype=state_lib.compute_dtype(config.dtype), rngs=rngs,
    )


def unit_axes(config: TrainConfig) -> Any:
    """AGC's ``unit_axes`` for the configured model (``--agc-units``).

    ``infer`` traces the model's forward pass on an abstract copy of the model (no arrays
    are allocated) and reads each parameter's fan-in from it.
    """
    height, width, channels = IMAGE_SHAPES[config.dataset]
    model = nnx.eval_shape(lambda: create_model(config, NUM_CLASSES, channels, nnx.Rngs(0)))
    return optim.unit_axes_rule(config.agc_units, model, (1, height, width, channels))


def create_optimizer(config: TrainConfig, total_steps: int, steps_per_epoch: int
                     ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with the configured clipping (:func:`examples.vit.optim.create_optimizer`).

    Raises:
      UserError: ``--b1`` or ``--b2`` is outside [0, 1).
    """
    for name in ("b1", "b2"):
        value = getattr(config, name)
        if not 0 <= value < 1:
            raise errors.UserError(f"--{name} {value}: AdamW's moment decay must be in [0, 1) "
                                   "(optax's defaults: --b1 0.9 --b2 0.999).")
    rule = unit_axes(config) if config.clipping > 0 else None
    return optim.create_optimizer(config, total_steps, steps_per_epoch, rule)


FAMILY = state_lib.ModelFamily(name="vit", create_model=create_model,
                               create_optimizer=create_optimizer)


def train_and_evaluate(config: TrainConfig, workdir: str | pathlib.Path, resume: bool = False,
                       overwrite: bool = False) -> dict[str, Any]:
    """Trains and evaluates a ViT; see :func:`examples.common.trainer.train_and_evaluate`."""
    return trainer.train_and_evaluate(FAMILY, config, workdir, resume=resume,
                                      overwrite=overwrite)


if __name__ == "__main__":
    from examples.vit import main

    sys.exit(main.main())
