"""DeepMind's NFNet-F0 recipe on ImageNet: batch 4096, 360 epochs, AGC λ = 0.01.

Run it from the repository root on the ILSVRC-2012 class folders (``DIR/train/<wnid>/``,
``DIR/val/<wnid>/``)::

    python -m examples.nf_resnet.train --preset imagenet_nfnet_f0 --data-dir DIR

Every number is DeepMind's, from ``nfnets/experiment_nfnets.py`` of google-deepmind/
deepmind-research (``get_config`` and ``Experiment._make_opt``) and its base
``nfnets/experiment.py``, and matches Brock, De, Smith, Simonyan, *High-Performance
Large-Scale Image Recognition Without Normalization*, ICML 2021, arXiv:2102.06171
(section 4.1 for AGC, table 1 and appendix C for the variant's rates and sizes):

- global batch 4096, 360 epochs of ImageNet's 1,281,167 training images;
- SGD with Nesterov momentum 0.9, lr 0.1 scaled by batch / 256 (peak 1.6), a linear
  warm-up of 5 epochs from 0, then cosine decay to 0 (``WarmupCosineDecay``);
- weight decay 2e-5 on the weights, not on gains and biases (``pred_gb``);
- AGC λ = 0.01, ε = 1e-3 on every weight but the final linear layer's (``pred_fc``: its
  ``w`` only, here ``head/kernel``; its bias is clipped like the other gains and biases);
- an EMA of the weights with decay 0.99999 (``tf1_ema``: ``min(0.99999, (1 + t)/(10 + t))``),
  evaluated beside the weights;
- label smoothing 0.1, bfloat16 compute;
- F0's row (``nfnet_specs.VARIANTS``, DeepMind's ``nfnet_params``): stochastic depth 0.25,
  dropout 0.2, training at 192 px and testing at 256 px;
- CutMix + MixUp (α = 0.2; ``cutmix_mixup``) and RandAugment ``405`` (4 layers at
  magnitude 5, F0's level), the Inception-style crop and flip on the host (no device crop);
- evaluation: ``resize_crop_32`` (resize to 256 + 32, centre 256 crop), batch 50 (DeepMind's
  per host; pass a multiple of the device count, e.g. 400 on 8 GPUs).

Differences, by design: RandAugment runs in the host's loaders before mixing (DeepMind's
after, ``augment_before_mix=False``); the images come from a class-folder tree or TFDS
through grain rather than tf.data.

Measured: nothing on a GPU or TPU yet. ``tests/examples/test_imagenet_presets.py`` checks these
numbers against the sources above; the pipeline runs on CPU on generated images.
"""

from examples.nf_resnet.configs.base import TrainConfig
from examples.nf_resnet.nfnet_specs import VARIANTS

F0 = VARIANTS["nfnet_f0"]


def get_config() -> TrainConfig:
    """Returns the NFNet-F0 ImageNet preset."""
    return TrainConfig(
        dataset="image_folder",
        model="nfnet_f0",
        batch_size=4096,
        epochs=360,
        lr=0.1,
        warmup_epochs=5,
        momentum=0.9,
        weight_decay=2e-5,
        clipping=0.01,
        agc_eps=1e-3,
        agc_exclude=r"^head/kernel$",
        ema_decay=0.99999,
        label_smoothing=0.1,
        dtype="bfloat16",
        drop_path_rate=F0.stochdepth_rate,
        dropout_rate=F0.drop_rate,
        image_size=F0.train_imsize,
        eval_image_size=F0.test_imsize,
        eval_preprocessing="resize_crop",
        randaugment="405",
        mixing="mixup_cutmix",
        mixup_alpha=0.2,
        crop_padding=0,
        flip=False,
        eval_batch_size=50,
        data_workers=8,
        log_every_steps=100,
    )
