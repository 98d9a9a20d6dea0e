"""The GPU preset: a 4.8M-parameter ViT on 4×4 patches for one accelerator.

Run it from the repository root::

    python -m examples.vit.main --preset gpu --workdir runs/vit_gpu

The usual small-data ViT recipe: AdamW (β₂ = 0.999, weight decay 0.05 on kernels),
5 warm-up epochs then cosine decay, label smoothing 0.1, dropout 0.1, crops and flips;
AGC before AdamW at λ = 0.01.
"""

from examples.vit.configs.base import TrainConfig


def get_config() -> TrainConfig:
    """Returns the GPU preset."""
    return TrainConfig(
        model="vit_small",
        dropout_rate=0.1,
        batch_size=512,
        lr=1e-3,
        warmup_epochs=5,
        epochs=60,
        clipping=0.01,
        eval_batch_size=2000,
        log_every_steps=100,
    )
