"""The experiment grids' base: the ``cpu`` preset as it stood until 2026-12-05.

10 epochs of the 300K-parameter ``nf_resnet_cpu`` on one CPU device, weight decay 5e-5:
0.9218 test accuracy in 773 s on a shared 2-core AMD EPYC VM (670-780 images/s). Every
NF-ResNet grid in ``experiments/nf_resnet.py`` starts from this preset, so that its stored
runs keep matching their trials; the ``cpu`` preset is this one trained twice as long, with
10x the weight decay, on two CPU devices (``cpu_preset_retune``).

Run it from the repository root::

    python -m examples.nf_resnet.train --preset cpu_grid --workdir runs/cpu_grid
"""

from examples.nf_resnet.configs.base import TrainConfig


def get_config() -> TrainConfig:
    """Returns the grids' base preset."""
    return TrainConfig(
        model="nf_resnet_cpu",
        batch_size=128,
        lr=0.8,
        warmup_epochs=0.5,
        epochs=10,
        clipping=0.16,
        weight_decay=5e-5,
        log_every_steps=50,
    )
