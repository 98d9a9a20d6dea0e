"""DeepMind's NF-ResNet-50 recipe on ImageNet, with AGC as in the NFNets paper.

Run it from the repository root on the ILSVRC-2012 class folders::

    python -m examples.nf_resnet.train --preset imagenet_nf_resnet50 --data-dir DIR

The recipe is DeepMind's base ImageNet experiment, ``nfnets/experiment.py`` of
google-deepmind/deepmind-research (``get_config`` and ``Experiment._make_opt``), with its
network switched to the NF-ResNet of ``nf_resnet.py`` (Brock, De, Smith, *Characterizing
signal propagation to close the performance gap in unnormalized ResNets*, ICLR 2021,
arXiv:2101.08692):

- global batch 1024, 90 epochs of ImageNet's 1,281,167 training images;
- SGD with Nesterov momentum 0.9, lr 0.1 scaled by batch / 256 (peak 0.4), a linear warm-up
  of 5 epochs from 0, then cosine decay to 0;
- weight decay 1e-4 on the weights, not on gains, biases or scales (``pred``);
- label smoothing 0.1, float32 compute (``bfloat16=False``), no EMA (``use_ema=False``), no
  MixUp, CutMix or RandAugment (``augment_name=None``);
- the Inception-style crop and flip at 224 px; evaluation ``crop_resize`` at 224 px,
  batch 50 (per host);
- ``NF_ResNet``'s defaults: stochastic depth 0.1 (the row's), dropout 0 (``drop_rate=0.0``).

One addition: AGC with λ = 0.01, ε = 1e-3, leaving the classifier's kernel unclipped, as
the NFNets paper trains NF-ResNets with AGC (Brock, De, Smith, Simonyan, ICML 2021,
arXiv:2102.06171, section 4.1 and figure 2, where AGC lets NF-ResNet-50 train at large
batch sizes; λ = 0.01 is the NFNets' setting). DeepMind's ``experiment.py`` does not clip;
``--clipping 0`` gives its recipe exactly.

Measured: nothing on a GPU or TPU yet. ``tests/examples/test_imagenet_presets.py`` checks these
numbers against the sources above.
"""

from examples.nf_resnet.configs.base import TrainConfig
from examples.nf_resnet.nfnet_specs import VARIANTS

R50 = VARIANTS["nf_resnet_50"]


def get_config() -> TrainConfig:
    """Returns the NF-ResNet-50 ImageNet preset."""
    return TrainConfig(
        dataset="image_folder",
        model="nf_resnet_50",
        batch_size=1024,
        epochs=90,
        lr=0.1,
        warmup_epochs=5,
        momentum=0.9,
        weight_decay=1e-4,
        clipping=0.01,
        agc_eps=1e-3,
        agc_exclude=r"^head/kernel$",
        ema_decay=0.0,
        label_smoothing=0.1,
        dtype="float32",
        drop_path_rate=R50.stochdepth_rate,
        dropout_rate=R50.drop_rate,
        image_size=R50.train_imsize,
        eval_image_size=R50.test_imsize,
        eval_preprocessing="crop_resize",
        randaugment=None,
        mixing="none",
        crop_padding=0,
        flip=False,
        eval_batch_size=50,
        data_workers=8,
        log_every_steps=100,
    )
