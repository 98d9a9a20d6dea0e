"""A Flax NNX NF-ResNet trained with adaptive gradient clipping (AGC).

Run ``python -m examples.nf_resnet.main --preset smoke`` from the repository root.
"""
