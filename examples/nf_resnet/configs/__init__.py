"""Training presets, one module per preset; each defines ``get_config() -> TrainConfig``."""

from examples.common.config import load_preset
from examples.nf_resnet.configs.base import (
    DATASET_CHOICES,
    MODEL_CHOICES,
    TrainConfig,
    has_batch_statistics,
    validate,
)

PRESETS = ("smoke", "cpu", "cpu_grid", "gpu", "imagenet_nfnet_f0", "imagenet_nf_resnet50",
           "finetune")


def get_config(preset: str) -> TrainConfig:
    """Returns the :class:`TrainConfig` of a preset.

    Args:
      preset: one of :data:`PRESETS`.

    Returns:
      The preset's configuration.
    """
    return load_preset(__name__, PRESETS, preset)


__all__ = ["DATASET_CHOICES", "MODEL_CHOICES", "PRESETS", "TrainConfig", "get_config",
           "has_batch_statistics", "validate"]
