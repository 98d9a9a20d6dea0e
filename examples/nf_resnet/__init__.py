"""Flax NNX NF-ResNets trained with adaptive gradient clipping (AGC), and DeepMind's NFNets.

Run ``python -m examples.nf_resnet.main --preset smoke`` from the repository root. DeepMind's
NFNet-F0…F7 and NF-ResNet-50…200 are :mod:`examples.nf_resnet.nfnet` (rows of
:mod:`examples.nf_resnet.nfnet_specs`); :mod:`examples.nf_resnet.pretrained` and
``python -m examples.nf_resnet.convert`` load DeepMind's weights into them.
"""
