"""The devices a run trains on: one data-parallel mesh, the compute dtype, ``--cpu-devices``.

Every example trains data-parallel: the state replicated on every device of every
process, each batch split over them (:func:`data_parallel`).

``--cpu-devices``: data parallelism over the cores of a machine without an accelerator.

XLA:CPU runs much of a small model's elementwise work (normalizations, activations,
softmax) on one core per device. Split into several JAX devices (``jax_num_cpu_devices``),
the CPU trains data-parallel like a multi-GPU host: each device takes its share of the
batch, and the trainer's shardings do the rest. The result is the same up to float
rounding. On the 2-core VM the ViT ``cpu`` preset ran about 1.5× more images per second on
two devices than on one (the preset's docstring has the figures).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from examples.common.errors import UserError, flag

# Steps the host dispatches beyond the one running. JAX dispatches asynchronously; unbounded,
# the host can queue hundreds of steps. On XLA:CPU split into two devices (--cpu-devices 2)
# a loop of the ViT cpu preset's step that queued 500 without waiting aborted the process:
# one device's share of a step waited over 40 s for the other's at an all-reduce (one-off
# probe, twice). Two steps ahead trained as fast as waiting every 50 steps did, within the
# machine's noise (about 2000 images/s for either).
MAX_STEPS_AHEAD = 2


class DataParallel(NamedTuple):
    """Batches split over a 1-D mesh of every device; the state replicated."""

    batch: NamedSharding
    replicated: NamedSharding


def data_parallel(config: Any) -> DataParallel:
    """The shardings of a data-parallel run, checking that the batches divide evenly.

    Raises:
      UserError: ``batch_size`` or ``eval_batch_size`` does not divide by the devices.
    """
    for name in ("batch_size", "eval_batch_size"):
        if getattr(config, name) % jax.device_count():
            raise UserError(f"{flag(name)} {getattr(config, name)} does not divide by the "
                            f"{jax.device_count()} devices.")
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    return DataParallel(NamedSharding(mesh, P("data")), NamedSharding(mesh, P()))


def eval_batch_size(configured: int, num_examples: int) -> int:
    """``configured``, but no larger than the test set rounded up to the devices (less padding)."""
    devices = jax.device_count()
    return min(configured, -(-num_examples // devices) * devices)


def num_microbatches(config: Any) -> int:
    """How many microbatches a global batch is split into (1: none; ``--microbatch-size``).

    Raises:
      UserError: ``--microbatch-size`` does not divide ``--batch-size``, or is not a
        multiple of the device count (every device takes an equal share of a microbatch).
    """
    size = config.microbatch_size
    if not size or size >= config.batch_size:
        return 1
    devices = jax.device_count()
    if config.batch_size % size or size % devices:
        candidates = [d for d in range(devices, size + 1, devices) if config.batch_size % d == 0]
        raise UserError(
            f"--microbatch-size {size} must divide --batch-size {config.batch_size} and be a "
            f"multiple of the {devices} devices; e.g. --microbatch-size "
            f"{max(candidates, default=config.batch_size)}.")
    return config.batch_size // size


def limit_steps_ahead(history: list[Any]) -> None:
    """Waits for the step :data:`MAX_STEPS_AHEAD` before the newest in ``history``.

    Args:
      history: the metrics of the steps dispatched since the last training record, newest
        last; every step before them has finished (the record fetched their metrics).
    """
    if len(history) > MAX_STEPS_AHEAD:
        jax.block_until_ready(history[-MAX_STEPS_AHEAD - 1])


def compute_dtype(name: str) -> jnp.dtype:
    """Resolves ``--dtype``: ``auto`` is bfloat16 on GPU/TPU and float32 on CPU."""
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    return jnp.dtype(name)


def use_cpu_devices(count: int | None) -> None:
    """Asks JAX for ``count`` CPU devices, before its backends start.

    Args:
      count: the number of CPU devices; ``None`` leaves JAX's own setting (one device
        unless ``XLA_FLAGS`` asks for more). A GPU or TPU run ignores it: its devices are
        the accelerators.

    Raises:
      UserError: JAX already runs on the CPU in this process with another number of
        devices (it was used before the run started, e.g. by the caller of
        ``train_and_evaluate``), which can no longer change.
    """
    if count is None:
        return
    try:
        jax.config.update("jax_num_cpu_devices", count)
        return
    except RuntimeError:  # The backends have started: check that they agree.
        pass
    if jax.default_backend() != "cpu" or jax.local_device_count() == count:
        return
    raise UserError(
        f"--cpu-devices {count}: JAX already runs on {jax.local_device_count()} CPU device(s) "
        "in this process and cannot change that; start a new process (the command line "
        f"sets it before JAX starts), or pass --cpu-devices {jax.local_device_count()} or none.")
