"""A Flax NNX Vision Transformer trained with AdamW and, optionally, AGC."""
