"""Synthetic batches for throughput, and the images/s meter."""

import numpy as np
import pytest

from examples.common import input_pipeline
from examples.nf_resnet import synthetic, throughput


def test_synthetic_batches_have_the_model_size_and_valid_labels():
    dataset = synthetic.synthetic_dataset(global_batch_size=8, image_size=20, num_classes=5,
                                          seed=0, process_index=1, process_count=2)
    iterator = input_pipeline.iterate(dataset)
    batches = [next(iterator) for _ in range(3)]
    for batch in batches:
        assert batch["image"].shape == (4, 20, 20, 3) and batch["image"].dtype == np.uint8
        assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
        assert batch["label"].min() >= 0 and batch["label"].max() < 5
    assert not np.array_equal(batches[0]["image"], batches[1]["image"])
    np.testing.assert_array_equal(batches[0]["image"], batches[2]["image"])  # A pool of 2.
    assert batches[0]["image"].std() > 50  # Uniform noise, not a constant.


def test_processes_draw_different_images_and_batches_must_divide():
    first = [next(input_pipeline.iterate(synthetic.synthetic_dataset(
        global_batch_size=4, image_size=8, num_classes=3, process_index=p, process_count=2)))
        for p in range(2)]
    assert not np.array_equal(first[0]["image"], first[1]["image"])
    with pytest.raises(ValueError, match="divide by 3"):
        synthetic.synthetic_dataset(global_batch_size=4, image_size=8, num_classes=3,
                                    process_count=3)


def test_images_per_second_counts_over_each_window():
    now = [10.0]
    meter = throughput.ImagesPerSecond(clock=lambda: now[0])
    meter.add(256)
    meter.add(256)
    now[0] = 12.0
    assert meter.rate() == 256.0
    meter.add(100)
    now[0] = 12.5
    assert meter.rate() == 200.0
