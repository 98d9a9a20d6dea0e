"""The CPU preset: full Fashion-MNIST on 2 CPU cores, ≥ 0.92 test accuracy.

Measured (results/cpu_preset): 10 epochs of the 300K-parameter ``nf_resnet_cpu`` reach
0.922 in 13-15 minutes on a shared 2-core AMD EPYC VM (670 images/s; 8 epochs end at 0.9198).
Two re-tunings from the experiments (made before agc compared squared norms, when the
preset gave 0.9234) ended within 0.0012 of it, not at 0.93: the skip gains
left out of AGC (0.9243), and that plus weight decay 5e-4 (0.9246 in 813 s). The experiment
grids build on this preset, so it stays as their stored runs were made.

Run it from the repository root::

    python -m examples.nf_resnet.train --preset cpu --workdir runs/cpu
"""

from examples.nf_resnet.configs.base import TrainConfig


def get_config() -> TrainConfig:
    """Returns the CPU preset."""
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
