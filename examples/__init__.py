"""Examples for agc-optax."""
