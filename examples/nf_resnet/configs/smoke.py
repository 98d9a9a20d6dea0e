"""The smoke preset: a real Fashion-MNIST subset, well under 2 minutes on 2 CPU cores.

Run it from the repository root::

    python -m examples.nf_resnet.train --preset smoke --workdir /tmp/nf_smoke

The batch of 128 divides by 8, so the same preset runs on 8 simulated devices. With
``--dataset image_folder --data-dir DIR`` it trains on any small class-folder tree (at
least 128 training images, or pass a smaller ``--batch-size``) at 64 × 64 pixels
(``image_size``, which Fashion-MNIST ignores).
"""

from examples.nf_resnet.configs.base import TrainConfig


def get_config() -> TrainConfig:
    """Returns the smoke preset."""
    return TrainConfig(
        model="nf_resnet_nano",
        train_examples=16384,
        test_examples=2000,
        batch_size=128,
        lr=0.8,
        warmup_epochs=0.5,
        epochs=3,
        clipping=0.16,
        eval_batch_size=1000,
        log_every_steps=16,
        image_size=64,
    )
