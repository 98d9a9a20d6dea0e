"""Every named experiment, from each model family's module of grids."""

from experiments import nf_resnet, vit
from experiments.spec import Experiment

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e for e in (*nf_resnet.EXPERIMENTS, *vit.EXPERIMENTS)}
