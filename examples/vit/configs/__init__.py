"""Training presets of the ViT example."""
