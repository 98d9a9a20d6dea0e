"""Every named experiment, from each model family's module of grids, and the run figures.

:data:`RUN_FIGURES` are the figures of single stored runs that the documentation shows
beside the experiments' (drawn with :mod:`experiments.plot`), so that
``python -m experiments report --all`` regenerates every figure and table from
``results/``.
"""

from experiments import nf_resnet, vit
from experiments.spec import Experiment

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e for e in (*nf_resnet.EXPERIMENTS, *vit.EXPERIMENTS)}

# Figure file name -> the stored runs it draws (relative to the results directory).
RUN_FIGURES: dict[str, tuple[str, ...]] = {
    # The NF-ResNet cpu preset's run, seed 0 (docs/examples/nf_resnet.md).
    "cpu_preset.png": ("cpu_preset_retune/epochs20_wd5e-4_2_devices",),
    # The ViT cpu preset's run, seed 0 of its last re-tuning (docs/examples/vit.md).
    "vit_cpu_preset.png": ("vit_cpu_preset_retune/shifted_patches_2_cpu_devices_crop1_28_epochs",),
}
# Stored runs that are no trial of an experiment (each drawn by a run figure).
STANDALONE_RUNS: tuple[str, ...] = ()
