"""The smoke preset: a real Fashion-MNIST subset, well under 2 minutes on 2 CPU cores.

Run it from the repository root::

    python -m examples.vit.main --preset smoke --workdir /tmp/vit_smoke

The batch of 128 divides by 8, so the same preset runs on 8 simulated devices.
"""

from examples.vit.configs.base import TrainConfig


def get_config() -> TrainConfig:
    """Returns the smoke preset."""
    return TrainConfig(
        model="vit_nano",
        train_examples=16384,
        test_examples=2000,
        batch_size=128,
        lr=2e-3,
        b2=0.99,
        warmup_epochs=0.5,
        epochs=3,
        clipping=0.01,
        crop_padding=0,
        log_every_steps=16,
    )
