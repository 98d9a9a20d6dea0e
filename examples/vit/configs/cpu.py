"""The CPU preset: full Fashion-MNIST on 2 CPU cores in about a quarter of an hour.

A 0.3M-parameter ViT on 7×7 patches (16 tokens: XLA:CPU runs the 49 tokens of 4×4
patches about three times slower per image), AdamW with a short warm-up and β₂ = 0.99,
batch 64, flips but no crops (a shifted crop moves every patch boundary), AGC before
AdamW at λ = 0.01 with the units read from the model by ``infer_unit_axes``.

Run it from the repository root::

    python -m examples.vit.main --preset cpu --workdir runs/vit_cpu
"""

from examples.vit.configs.base import TrainConfig


def get_config() -> TrainConfig:
    """Returns the CPU preset."""
    return TrainConfig(
        model="vit_cpu",
        batch_size=64,
        lr=1e-3,
        b2=0.99,
        warmup_epochs=0.2,
        epochs=7,
        clipping=0.01,
        crop_padding=0,
        log_every_steps=100,
    )
