"""``--cpu-devices``: data parallelism over the cores of a machine without an accelerator.

XLA:CPU runs much of a small model's elementwise work (normalizations, activations,
softmax) on one core per device. Split into several JAX devices (``jax_num_cpu_devices``),
the CPU trains data-parallel like a multi-GPU host: each device takes its share of the
batch, and the trainer's shardings do the rest. The result is the same up to float
rounding. On the 2-core VM the ViT ``cpu`` preset ran about 1.5× more images per second on
two devices than on one (the preset's docstring has the figures).
"""

import jax

from examples.common.errors import UserError


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
