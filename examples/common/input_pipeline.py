"""The input pipeline: grain loaders on the host, normalisation and augmentation on device.

The host only shuffles, shards and batches uint8 images with grain (a random-access
``MapDataset`` sharded by JAX process), whose iterator state is a small JSON object that
the checkpoint stores, so a resumed run continues mid-epoch exactly. The
device normalises, randomly crops, flips and erases under ``jit`` (:func:`augment`), and
:class:`DevicePrefetcher` keeps the next batches on device while a step runs.
"""

import queue
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

import grain
import jax
import jax.numpy as jnp
import numpy as np


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns the per-channel mean and standard deviation of uint8 images, in [0, 1] units."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return pixels.mean(axis=0).astype(np.float32), pixels.std(axis=0).astype(np.float32)


def train_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """Returns an endless grain dataset of this process's share of every global batch.

    Each process takes every ``process_count``-th record; its records are shuffled afresh
    every epoch (seeded by ``seed`` and the epoch) and cut into full batches. Shuffling
    and batching act on indices, and a batch is one NumPy gather, so the host spends well
    under a second per Fashion-MNIST epoch.

    Args:
      images: uint8 training images (N, H, W, C).
      labels: integer labels (N,).
      global_batch_size: examples per step over all processes.
      seed: shuffling seed.
      process_index: this process (``jax.process_index()``).
      process_count: number of processes (``jax.process_count()``).

    Returns:
      A ``MapDataset`` of ``{"image", "label"}`` batches; iterate it with
      :func:`iterate`.
    """
    if global_batch_size % process_count:
        raise ValueError(f"Batch size {global_batch_size} does not divide by "
                         f"{process_count} processes.")
    local_batch_size = global_batch_size // process_count
    indices = grain.MapDataset.range(len(images))[process_index::process_count]
    if len(indices) < local_batch_size:
        raise ValueError(f"{len(indices)} training examples per process, fewer than the "
                         f"batch of {local_batch_size}.")
    batches = indices.shuffle(seed=seed).batch(local_batch_size, drop_remainder=True)
    return batches.repeat(None).map(lambda index: {"image": images[index], "label": labels[index]})


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    """Returns the number of full global batches in one epoch."""
    return num_examples // global_batch_size


def iterate(dataset: grain.MapDataset, state: dict[str, Any] | None = None) -> Any:
    """Returns a checkpointable iterator over ``dataset``, restored to ``state`` if given.

    Args:
      dataset: from :func:`train_dataset`.
      state: a ``get_state()`` result of an earlier iterator (a small JSON-able dict).

    Returns:
      A grain ``DatasetIterator``.
    """
    options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    iterator = iter(dataset.to_iter_dataset(options))
    if state is not None:
        iterator.set_state(state)
    return iterator


class EvalBatch(NamedTuple):
    """A padded evaluation batch; ``mask`` is 1 for real examples, 0 for padding."""

    image: np.ndarray
    label: np.ndarray
    mask: np.ndarray


def eval_batches(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[EvalBatch]:
    """Yields this process's slice of every global evaluation batch, the last one padded.

    Args:
      images: uint8 test images.
      labels: integer labels.
      global_batch_size: examples per batch over all processes.
      process_index: this process.
      process_count: number of processes.

    Yields:
      Batches of ``global_batch_size // process_count`` examples.
    """
    local = global_batch_size // process_count
    for start in range(0, len(images), global_batch_size):
        stop = min(start + global_batch_size, len(images))
        pad = global_batch_size - (stop - start)
        image = np.concatenate([images[start:stop], np.zeros((pad, *images.shape[1:]), np.uint8)])
        label = np.concatenate([labels[start:stop], np.zeros((pad,), labels.dtype)])
        mask = np.concatenate([np.ones((stop - start,), np.float32), np.zeros((pad,), np.float32)])
        mine = slice(process_index * local, (process_index + 1) * local)
        yield EvalBatch(image[mine], label[mine], mask[mine])


def normalize(images: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """Maps uint8 images to float32 with zero mean and unit variance per channel."""
    return (images.astype(jnp.float32) / 255.0 - mean) / std


def augment(rng: jax.Array, images: jax.Array, padding: int, flip: bool,
            erase_probability: float = 0.0) -> jax.Array:
    """Random crop after zero padding, random horizontal flip and random erasing, per example.

    Args:
      rng: a PRNG key.
      images: normalised NHWC images.
      padding: pixels of zero padding on each side before the crop; 0 for no crop.
      flip: whether to flip half of the images left to right.
      erase_probability: the chance that an image has a random rectangle replaced by
        noise (:func:`random_erase`); 0 for none.

    Returns:
      Augmented images of the same shape.
    """
    n, h, w, _ = images.shape
    crop_rng, flip_rng = jax.random.split(rng)
    if padding:
        padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        offsets = jax.random.randint(crop_rng, (n, 2), 0, 2 * padding + 1)
        crop = lambda image, o: jax.lax.dynamic_slice(  # noqa: E731
            image, (o[0], o[1], 0), (h, w, image.shape[-1])
        )
        images = jax.vmap(crop)(padded, offsets)
    if flip:
        flips = jax.random.bernoulli(flip_rng, 0.5, (n, 1, 1, 1))
        images = jnp.where(flips, images[:, :, ::-1], images)
    if erase_probability:
        # A key of its own, so that crops and flips stay what they were without erasing.
        images = random_erase(jax.random.fold_in(rng, 1), images, erase_probability)
    return images


# Random erasing's rectangle: 2 % to 40 % of the image, height/width ratio 0.3 to 1/0.3.
ERASE_AREA = (0.02, 0.4)
ERASE_ASPECT = (0.3, 1 / 0.3)


def erase_boxes(rng: jax.Array, n: int, height: int, width: int,
                probability: float) -> jax.Array:
    """Draws the rectangles of random erasing, one per image.

    Args:
      rng: a PRNG key.
      n: number of images.
      height: image height in pixels.
      width: image width in pixels.
      probability: the chance that an image's rectangle is not empty.

    Returns:
      ``(n, 4)`` int32 ``(top, left, rows, columns)``: an area drawn uniformly from
      :data:`ERASE_AREA` of the image and an aspect ratio drawn log-uniformly from
      :data:`ERASE_ASPECT`, rounded and cut to fit, at a uniform position; ``rows`` is 0
      for an image left alone.
    """
    area_rng, aspect_rng, top_rng, left_rng, apply_rng = jax.random.split(rng, 5)
    area = jax.random.uniform(area_rng, (n,), minval=ERASE_AREA[0],
                              maxval=ERASE_AREA[1]) * height * width
    log_aspect = jax.random.uniform(aspect_rng, (n,), minval=jnp.log(ERASE_ASPECT[0]),
                                    maxval=jnp.log(ERASE_ASPECT[1]))
    rows = jnp.clip(jnp.round(jnp.sqrt(area * jnp.exp(log_aspect))), 1, height).astype(jnp.int32)
    columns = jnp.clip(jnp.round(jnp.sqrt(area / jnp.exp(log_aspect))), 1, width).astype(jnp.int32)
    top = jnp.floor(jax.random.uniform(top_rng, (n,)) * (height - rows + 1)).astype(jnp.int32)
    left = jnp.floor(jax.random.uniform(left_rng, (n,)) * (width - columns + 1)).astype(jnp.int32)
    rows = jnp.where(jax.random.bernoulli(apply_rng, probability, (n,)), rows, 0)
    return jnp.stack([top, left, rows, columns], axis=1)


def erase(images: jax.Array, boxes: jax.Array, fill: jax.Array) -> jax.Array:
    """Replaces each image's rectangle ``(top, left, rows, columns)`` by ``fill``.

    Args:
      images: NHWC images.
      boxes: ``(n, 4)`` integer rectangles, as :func:`erase_boxes` draws them.
      fill: values of the same shape as ``images``.

    Returns:
      The images with their rectangles' pixels (every channel) taken from ``fill``.
    """
    _, height, width, _ = images.shape
    top, left, rows, columns = (boxes[:, i, None, None, None] for i in range(4))
    y = jnp.arange(height)[None, :, None, None]
    x = jnp.arange(width)[None, None, :, None]
    inside = (y >= top) & (y < top + rows) & (x >= left) & (x < left + columns)
    return jnp.where(inside, fill, images)


def random_erase(rng: jax.Array, images: jax.Array, probability: float) -> jax.Array:
    """Random erasing: with ``probability``, a random rectangle of an image becomes noise.

    Args:
      rng: a PRNG key.
      images: normalised NHWC images.
      probability: the chance that each image is erased.

    Returns:
      The images, a rectangle of some (:func:`erase_boxes`) replaced by standard normal
      noise: random values of the normalised images' scale.

    References:
      Zhong, Zheng, Kang, Li, Yang, *Random Erasing Data Augmentation*, AAAI 2020,
      arXiv:1708.04896.
    """
    n, height, width, _ = images.shape
    box_rng, noise_rng = jax.random.split(rng)
    boxes = erase_boxes(box_rng, n, height, width, probability)
    return erase(images, boxes, jax.random.normal(noise_rng, images.shape, images.dtype))


class InMemoryData:
    """A small dataset held in memory (Fashion-MNIST, MNIST, CIFAR-10), batched by grain.

    The interface the examples' loops use for every dataset (the NF-ResNet example's image
    datasets, :class:`examples.nf_resnet.image_data.ImageData`, have the same): sizes,
    pixel statistics, this process's training batches and evaluation batches. Images stay
    uint8 and uncropped; the training step normalizes and augments them on the devices.

    Attributes:
      name: the dataset's name.
      num_classes: the number of classes.
      num_train_examples: training images (over all processes).
      num_eval_examples: test images (padding excluded).
      in_features: channels of an image.
      mean: per-channel pixel mean of the training images, in [0, 1] units.
      std: per-channel pixel standard deviation.
      test_images: the uint8 test images (for prediction; evaluation batches them).
      test_labels: their labels.
    """

    def __init__(self, name: str, data: Any, global_batch_size: int, eval_batch_size: int):
        """Wraps ``data`` (a :class:`~examples.common.datasets.ImageDataset`).

        Args:
          name: the dataset's name.
          data: the images and labels.
          global_batch_size: training examples per step over all processes.
          eval_batch_size: evaluation examples per batch over all processes.
        """
        self.name, self._data = name, data
        self._batch_sizes = (global_batch_size, eval_batch_size)
        self.num_classes = data.num_classes
        self.num_train_examples = len(data.train_images)
        self.num_eval_examples = len(data.test_images)
        self.in_features = data.train_images.shape[-1]
        self.mean, self.std = channel_stats(data.train_images)
        self.test_images, self.test_labels = data.test_images, data.test_labels

    def train_batches(self, seed: int, state: dict[str, Any] | None = None) -> Any:
        """This process's endless training batches, from loader state ``state`` on.

        Returns:
          A grain iterator of ``{"image", "label"}`` with ``get_state()``.
        """
        return iterate(train_dataset(
            self._data.train_images, self._data.train_labels,
            global_batch_size=self._batch_sizes[0], seed=seed,
            process_index=jax.process_index(), process_count=jax.process_count()), state)

    def eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """One pass over this process's share of the padded test batches (with ``mask``)."""
        for batch in eval_batches(self._data.test_images, self._data.test_labels,
                                  global_batch_size=self._batch_sizes[1],
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count()):
            yield batch._asdict()


def device_batches(iterator: Any, sharding: jax.sharding.Sharding
                   ) -> tuple["DevicePrefetcher", dict[str, Any]]:
    """A loader's batches on the devices, prefetched.

    Args:
      iterator: a grain iterator of this process's share of each global batch.
      sharding: the sharding of a global batch.

    Returns:
      ``(batches, state)``: an iterator of ``(device batch, loader state after it)`` and
      the loader's state before the first batch (what a checkpoint stores before a step).
    """
    return DevicePrefetcher(iterator, sharding), iterator.get_state()


class DevicePrefetcher:
    """Moves batches to devices in a background thread, a few steps ahead.

    Each batch comes with the loader's state *after* it was read, so the state of the
    last batch handed out is what a checkpoint must store: resuming from it yields exactly
    the batches that were not consumed yet.
    """

    def __init__(self, host_iterator: Any, sharding: jax.sharding.Sharding, size: int = 2):
        """Starts prefetching.

        Args:
          host_iterator: a grain iterator (from :func:`iterate`) of dicts of NumPy arrays.
          sharding: the sharding of the global batch (split over the batch axis).
          size: how many batches to keep ready.
        """
        self._iterator = host_iterator
        self._sharding = sharding
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for batch in self._iterator:
                state = self._iterator.get_state()
                device_batch = jax.tree.map(
                    lambda x: jax.make_array_from_process_local_data(self._sharding, x), batch
                )
                while not self._stop.is_set():
                    try:
                        self._queue.put((device_batch, state), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except Exception as e:  # Re-raised in the consumer's thread.
            self._queue.put((e, None))

    def __iter__(self) -> "DevicePrefetcher":
        return self

    def __next__(self) -> tuple[dict[str, jax.Array], dict[str, Any]]:
        """Returns the next device batch and the loader state after it."""
        batch, state = self._queue.get()
        if isinstance(batch, Exception):
            raise batch
        return batch, state

    def close(self) -> None:
        """Stops the background thread."""
        self._stop.set()
        self._thread.join(timeout=5)
