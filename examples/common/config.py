"""The configuration fields the shared trainer reads; each family's config extends it.

Some fields say in their metadata how they relate to a run's result, the one place that
the work directory's resume check (:mod:`examples.common.workdir`) and the experiments'
comparison of stored runs (:mod:`experiments.fingerprint`) read it from:

- ``metadata["execution_only"]``: the field changes how a run is computed, not what it
  computes (up to float rounding), so a resumed run may change it and a stored run made
  with another value still stands;
- ``metadata["batch_statistics"]``: except for a model with batch statistics (BatchNorm
  normalizes each microbatch on its own), where the field decides the result;
- ``metadata["unused_when_set"]``: the name of another field that, once set (not
  ``None``), makes this one irrelevant (``epochs`` beside ``steps``).
"""

import dataclasses
import importlib
from typing import Any

from examples.common import datasets

# The metadata of an execution-only field. A microbatch split gives the whole batch's
# gradient (up to float rounding); the data directory is where the same files are read
# from; evaluation batches and the logging interval do not touch the training state; CPU
# devices split the same batch (and its batch statistics are reduced over all of them).
EXECUTION_ONLY = {"execution_only": True}


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """Data, batch, length, augmentation, clipping, logging and seed of a training run.

    A family's ``TrainConfig`` subclasses this and adds its model's and optimizer's
    fields; every field becomes a command-line flag (:mod:`examples.common.flags`), with
    the text below as its help.

    Attributes:
      dataset: the dataset to train and evaluate on.
      data_dir: the directory holding the dataset's files (``None``: ``$AGC_OPTAX_DATA``,
        the cache, the system's copy, else a download).
      train_examples: use only the first this many training examples (``None``: all).
      test_examples: evaluate on only the first this many test examples (``None``: all).
      model: the model variant, one of the family's.
      batch_size: global batch size, over all devices and hosts.
      microbatch_size: split each batch into microbatches of this size and sum their
        gradients before clipping (gradient accumulation: one optimizer step per batch,
        for batches that do not fit in memory, or run slowly, at once; ``None``: no split).
        BatchNorm then normalizes each microbatch with its own statistics ("ghost" batch
        norm) and moves its running averages once per microbatch.
      epochs: training length in epochs, unless ``steps`` is set.
      steps: training length in steps; overrides ``epochs``.
      label_smoothing: label-smoothing factor of the training loss.
      clipping: AGC's λ; 0 turns AGC off.
      agc_eps: AGC's ε: units with ‖W‖ < ε are compared with λ·ε.
      agc_exclude: regex of the parameter paths AGC leaves alone (the classifier).
      clip_global_norm: clip the global gradient norm to this (``optax.clip_by_global_norm``,
        the classic baseline); 0 is off.
      crop_padding: zero padding before the random crop; 0 for no crop.
      flip: random horizontal flips.
      erase_probability: the chance that random erasing replaces a rectangle of an image
        by noise; 0 for none.
      dtype: the compute dtype (``auto``: bfloat16 on GPU/TPU, float32 on CPU); parameters
        and AGC statistics stay float32.
      cpu_devices: where JAX runs on the CPU, split it into this many JAX devices and
        train data-parallel over them (``None``: JAX's own setting, one device unless
        ``XLA_FLAGS`` asks for more). XLA:CPU runs much of a small model's elementwise
        work on one core per device, so on a multi-core machine this can be faster; the
        result is the same up to float rounding. Ignored on a GPU or TPU.
      eval_batch_size: global batch size of evaluation.
      log_every_steps: interval of training records in ``metrics.jsonl``.
      seed: seeds initialisation, shuffling, augmentation and dropout.
    """

    dataset: str = dataclasses.field(default="fashion_mnist",
                                     metadata={"choices": tuple(sorted(datasets.SOURCES))})
    data_dir: str | None = dataclasses.field(default=None, metadata=EXECUTION_ONLY)
    train_examples: int | None = None
    test_examples: int | None = None
    model: str = ""
    batch_size: int = 256
    microbatch_size: int | None = dataclasses.field(
        default=None, metadata={**EXECUTION_ONLY, "batch_statistics": True})
    epochs: int = dataclasses.field(default=10, metadata={"unused_when_set": "steps"})
    steps: int | None = None
    label_smoothing: float = 0.1
    clipping: float = 0.01
    agc_eps: float = 1e-3
    agc_exclude: str = r"^head/"
    clip_global_norm: float = 0.0
    crop_padding: int = 2
    flip: bool = True
    erase_probability: float = 0.0
    dtype: str = dataclasses.field(default="auto",
                                   metadata={"choices": ("auto", "float32", "bfloat16")})
    cpu_devices: int | None = dataclasses.field(default=None, metadata=EXECUTION_ONLY)
    eval_batch_size: int = dataclasses.field(default=1000, metadata=EXECUTION_ONLY)
    log_every_steps: int = dataclasses.field(default=50, metadata=EXECUTION_ONLY)
    seed: int = 0


def execution_only_fields(config: Any) -> tuple[str, ...]:
    """The fields of a config (class or instance) marked ``execution_only``, in order."""
    return tuple(f.name for f in dataclasses.fields(config) if f.metadata.get("execution_only"))


def batch_statistics_fields(config: Any) -> tuple[str, ...]:
    """The execution-only fields that decide the result of a model with batch statistics."""
    return tuple(f.name for f in dataclasses.fields(config)
                 if f.metadata.get("batch_statistics"))


def load_preset(package: str, presets: tuple[str, ...], preset: str) -> LoopConfig:
    """Returns preset ``preset`` of a family: ``get_config()`` of module ``package.preset``.

    Args:
      package: the family's presets package, e.g. ``"examples.vit.configs"``.
      presets: the names of its presets (one module each).
      preset: the one to load.

    Returns:
      The preset's configuration.

    Raises:
      ValueError: ``preset`` is not one of ``presets``.
    """
    if preset not in presets:
        raise ValueError(f"Unknown preset {preset!r}; choose from {presets}.")
    return importlib.import_module(f"{package}.{preset}").get_config()
