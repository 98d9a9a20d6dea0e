"""Development tools for the tests, the benchmarks and the documentation build.

Not part of ``agc_optax``.
"""
