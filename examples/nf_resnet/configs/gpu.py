"""The GPU preset: the full-accuracy recipe for one accelerator, aiming at ≥ 0.95.

Run it from the repository root::

    python -m examples.nf_resnet.train --preset gpu --workdir runs/gpu

A ResNet-18-sized NF-ResNet with the NFNets regularisers (stochastic depth, dropout,
squeeze-excite) and the reference recipe: SGD with Nesterov momentum, lr 0.1 × batch/256
with warm-up and cosine decay, weight decay on weights only, label smoothing 0.1.
"""

from examples.nf_resnet.configs.base import TrainConfig


def get_config() -> TrainConfig:
    """Returns the GPU preset."""
    return TrainConfig(
        model="nf_resnet_18",
        se_ratio=0.25,
        drop_path_rate=0.1,
        dropout_rate=0.25,
        batch_size=512,
        lr=0.2,
        warmup_epochs=5,
        epochs=60,
        clipping=0.04,
        weight_decay=5e-5,
        crop_padding=4,
        eval_batch_size=2000,
        log_every_steps=100,
    )
