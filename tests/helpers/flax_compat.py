"""Flax names the tests use that changed within the supported flax releases.

``nnx.as_pure`` (flax 0.12.7) was ``nnx.pure`` before; the minimum-versions
job of ``.ci/run`` runs these tests on the oldest flax that pyproject.toml allows.
"""

from flax import nnx

as_pure = getattr(nnx, "as_pure", None) or nnx.pure
