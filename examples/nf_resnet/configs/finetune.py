r"""Fine-tunes DeepMind's ImageNet NFNet-F0 on your own class folders, on one accelerator.

First write DeepMind's weights as a run directory, then fine-tune from it::

    python -m examples.nf_resnet.convert --checkpoint F0_haiku.npz --model nfnet_f0 \
        --dataset cifar10 --workdir runs/nfnet_f0_deepmind
    python -m examples.nf_resnet.train --preset finetune --data-dir DIR --workdir runs/ft

``DIR`` holds ``train/<class>/*.jpg`` and ``val/<class>/*.jpg``; the classifier starts
afresh for its number of classes (``--init-from``, :mod:`examples.nf_resnet.checkpoint_init`).
``convert`` reads a dataset only for its number of classes (its ``--dataset`` does not take
the image datasets yet); CIFAR-10 stands in, as the classifier is replaced either way.

What comes from the F0 recipe (``imagenet_nfnet_f0``, DeepMind's ``experiment_nfnets.py``):
the network and its image sizes (192 px train, 256 px test, ``resize_crop`` evaluation, the
preprocessing DeepMind's weights were trained with), AGC λ = 0.01, ε = 1e-3 with the
classifier's kernel unclipped, weight decay 2e-5 on weights only, label smoothing 0.1,
SGD-Nesterov 0.9, F0's stochastic depth 0.25 and dropout 0.2.

What is this project's choice for a small dataset on one device, from no source and not
tuned: batch 256, 10 epochs, lr 0.01 × batch / 256 (a tenth of the recipe's), 1 warm-up
epoch then cosine decay, no EMA, no MixUp, CutMix or RandAugment; ``dtype auto`` (bfloat16
on a GPU or TPU). A batch that does not fit takes ``--microbatch-size``.

Measured: nothing on a GPU yet.
"""

from examples.nf_resnet.configs.base import TrainConfig
from examples.nf_resnet.nfnet_specs import VARIANTS

F0 = VARIANTS["nfnet_f0"]
CONVERTED = "runs/nfnet_f0_deepmind"


def get_config() -> TrainConfig:
    """Returns the fine-tuning preset."""
    return TrainConfig(
        dataset="image_folder",
        model="nfnet_f0",
        init_from=CONVERTED,
        batch_size=256,
        epochs=10,
        lr=0.01,
        warmup_epochs=1,
        momentum=0.9,
        weight_decay=2e-5,
        clipping=0.01,
        agc_eps=1e-3,
        agc_exclude=r"^head/kernel$",
        label_smoothing=0.1,
        dtype="auto",
        drop_path_rate=F0.stochdepth_rate,
        dropout_rate=F0.drop_rate,
        image_size=F0.train_imsize,
        eval_image_size=F0.test_imsize,
        eval_preprocessing="resize_crop",
        crop_padding=0,
        flip=False,
        eval_batch_size=100,
        data_workers=4,
        log_every_steps=20,
    )
