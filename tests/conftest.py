"""Hooks for the whole test suite; shared code lives in ``tests/helpers/``."""
