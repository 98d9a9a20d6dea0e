"""Random images at the model's size, so that throughput can be measured without a dataset.

The batches come from a small pool of uniform random uint8 images drawn once, so the host
spends no time on them and the measured images/s is the device's. They go through the same
device-side normalisation and augmentation as real images.
"""

import dataclasses

import grain
import numpy as np


@dataclasses.dataclass(frozen=True)
class _PoolBatch:
    """Batch ``k`` of the pool, cyclically."""

    images: np.ndarray
    labels: np.ndarray
    batch_size: int

    def __call__(self, k: int) -> dict[str, np.ndarray]:
        rows = (int(k) * self.batch_size + np.arange(self.batch_size)) % len(self.images)
        return {"image": self.images[rows], "label": self.labels[rows]}


def synthetic_dataset(
    *,
    global_batch_size: int,
    image_size: int,
    num_classes: int,
    seed: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    pool_batches: int = 2,
) -> grain.MapDataset:
    """An endless grain dataset of random images and labels, this process's share.

    Args:
      global_batch_size: examples per step over all processes.
      image_size: the side of the square images.
      num_classes: labels are uniform in ``[0, num_classes)``.
      seed: seed of the pool (each process draws its own from ``seed`` and its index).
      process_index: this process.
      process_count: the number of processes.
      pool_batches: how many distinct batches the pool holds.

    Returns:
      A ``MapDataset`` of ``{"image": uint8 (B, S, S, 3), "label": int32 (B,)}`` with
      ``B = global_batch_size // process_count``, like the real loaders' batches.
    """
    if global_batch_size % process_count:
        raise ValueError(f"Batch size {global_batch_size} does not divide by "
                         f"{process_count} processes.")
    batch_size = global_batch_size // process_count
    rng = np.random.default_rng([seed, process_index])
    pool = pool_batches * batch_size
    images = rng.integers(0, 256, (pool, image_size, image_size, 3), np.uint8)
    labels = rng.integers(0, num_classes, pool).astype(np.int32)
    return grain.MapDataset.range(pool_batches).repeat(None).map(
        _PoolBatch(images, labels, batch_size))
