"""Training presets of the ViT example, one module per preset; each defines ``get_config()``."""

import importlib

from examples.vit.configs.base import TrainConfig

PRESETS = ("smoke", "cpu", "gpu")


def get_config(preset: str) -> TrainConfig:
    """Returns the :class:`TrainConfig` of a preset.

    Args:
      preset: one of :data:`PRESETS`.

    Returns:
      The preset's configuration.
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose from {PRESETS}.")
    return importlib.import_module(f"examples.vit.configs.{preset}").get_config()


__all__ = ["PRESETS", "TrainConfig", "get_config"]
