"""Benchmarks of agc_optax; run them as scripts (see README.md)."""
