"""agc-optax: Adaptive Gradient Clipping (Brock et al. 2021) for optax.

Needs jax, optax and numpy only (``pip install agc-optax``); the flax helpers
(:func:`nnx_unit_axes`, :func:`infer_unit_axes` on an ``nnx.Module``) import
flax when called (``pip install 'agc-optax[flax]'``).

Quick start::

    import optax
    from agc_optax import agc

    tx = optax.chain(agc(0.01, exclude="^head/"), optax.sgd(0.1, momentum=0.9))

References:
    Brock, De, Smith, Simonyan, High-Performance Large-Scale Image Recognition
    Without Normalization, ICML 2021, https://arxiv.org/abs/2102.06171.
"""

from agc_optax._agc import AGCState as AGCState
from agc_optax._agc import adaptive_grad_clip as adaptive_grad_clip
from agc_optax._agc import agc as agc
from agc_optax._agc import clip_grads as clip_grads
from agc_optax._agc import with_agc as with_agc
from agc_optax._exclude import ExcludeError as ExcludeError
from agc_optax._infer import infer_unit_axes as infer_unit_axes
from agc_optax._inferred import InferredUnitAxes as InferredUnitAxes
from agc_optax._nnx import NNXUnitAxes as NNXUnitAxes
from agc_optax._nnx import nnx_unit_axes as nnx_unit_axes
from agc_optax._norms import unitwise_norm as unitwise_norm
from agc_optax._paths import path_to_str as path_to_str
from agc_optax._unit_axes import default_unit_axes as default_unit_axes
from agc_optax._unit_axes import output_first_unit_axes as output_first_unit_axes

__version__ = "0.1.0"

__all__ = [
    "AGCState",
    "ExcludeError",
    "InferredUnitAxes",
    "NNXUnitAxes",
    "adaptive_grad_clip",
    "agc",
    "clip_grads",
    "default_unit_axes",
    "infer_unit_axes",
    "nnx_unit_axes",
    "output_first_unit_axes",
    "path_to_str",
    "unitwise_norm",
    "with_agc",
]
