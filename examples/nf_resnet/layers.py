"""Building blocks of normalizer-free networks: scaled WS convs, scaled activations, SE.

References:
  Brock, De, Smith, *Characterizing signal propagation to close the performance gap in
  unnormalized ResNets*, ICLR 2021, arXiv:2101.08692.
  Brock, De, Smith, Simonyan, *High-Performance Large-Scale Image Recognition Without
  Normalization*, ICML 2021, arXiv:2102.06171.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

# γ such that γ · act(z) has unit variance for z ~ N(0, 1) (values from the NFNets code).
ACTIVATION_GAMMAS: dict[str, float] = {
    "relu": 1.7139588594436646,
    "gelu": 1.7015043497085571,
    "silu": 1.7881293296813965,
}

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Returns the plain activation function called ``name``.

    Args:
      name: one of ``ACTIVATION_GAMMAS``.

    Returns:
      The activation function.
    """
    if name not in _ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; choose from {sorted(_ACTIVATIONS)}.")
    return _ACTIVATIONS[name]


def scaled_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Returns ``x -> γ · act(x)``, variance preserving for standard normal inputs.

    Args:
      name: one of ``ACTIVATION_GAMMAS``.

    Returns:
      The scaled activation function.
    """
    act, gamma = activation(name), ACTIVATION_GAMMAS[name]
    return lambda x: act(x) * gamma


class WSConv(nnx.Module):
    """2-D convolution with Scaled Weight Standardization, a learnable gain and a bias.

    The kernel is standardised over its fan-in axes on every call,
    ``Ŵ = gain · (W − mean(W)) / (std(W) · √fan_in)``, so the output of a unit-variance
    input has unit variance whatever the kernel's scale (arXiv:2101.08692, section 5).
    Kernels are stored HWIO, which is what AGC's default unit rule expects.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int,
        *,
        strides: int = 1,
        groups: int = 1,
        eps: float = 1e-4,
        dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
    ):
        """Creates the layer.

        Args:
          in_features: input channels.
          out_features: output channels.
          kernel_size: spatial size of the square kernel.
          strides: spatial stride.
          groups: feature groups; each output channel sees ``in_features // groups``
            input channels, so the kernel is ``(k, k, in_features // groups, out)`` and
            its fan-in ``k · k · in_features // groups``.
          eps: floor on ``var(W) · fan_in``, so a constant kernel does not divide by zero.
          dtype: compute dtype (parameters stay float32); ``None`` keeps the input's.
          rngs: random streams for the kernel initialiser.
        """
        if in_features % groups or out_features % groups:
            raise ValueError(f"WSConv: {groups} groups do not divide {in_features} input and "
                             f"{out_features} output channels.")
        shape = (kernel_size, kernel_size, in_features // groups, out_features)
        init = nnx.initializers.variance_scaling(1.0, "fan_in", "normal")
        self.kernel = nnx.Param(init(rngs.params(), shape, jnp.float32))
        self.gain = nnx.Param(jnp.ones((out_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))
        self.strides = strides
        self.groups = groups
        self.eps = eps
        self.dtype = dtype

    def standardized_kernel(self) -> jax.Array:
        """Returns the scaled, standardised kernel ``Ŵ`` in float32."""
        kernel = self.kernel[...]
        fan_in = kernel.shape[0] * kernel.shape[1] * kernel.shape[2]
        mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
        var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
        scale = jax.lax.rsqrt(jnp.maximum(var * fan_in, self.eps)) * self.gain[...]
        return (kernel - mean) * scale

    def __call__(self, x: jax.Array) -> jax.Array:
        """Convolves an NHWC batch with ``SAME`` padding."""
        dtype = self.dtype or x.dtype
        y = jax.lax.conv_general_dilated(
            x.astype(dtype),
            self.standardized_kernel().astype(dtype),
            window_strides=(self.strides, self.strides),
            padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.groups,
        )
        return y + self.bias[...].astype(dtype)


class SqueezeExcite(nnx.Module):
    """Squeeze-and-excite channel gating, scaled by 2 to keep the signal's variance.

    References:
      Hu, Shen, Sun, *Squeeze-and-Excitation Networks*, CVPR 2018, arXiv:1709.01507.
      arXiv:2102.06171, appendix: the NFNet blocks multiply the SE output by 2.
    """

    def __init__(
        self,
        features: int,
        hidden: int,
        *,
        activation: str = "relu",
        dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
    ):
        """Creates the layer.

        Args:
          features: channels of the gated input.
          hidden: width of the bottleneck.
          activation: name of the hidden activation.
          dtype: compute dtype.
          rngs: random streams for the initialisers.
        """
        self.reduce = nnx.Linear(features, hidden, dtype=dtype, rngs=rngs)
        self.expand = nnx.Linear(hidden, features, dtype=dtype, rngs=rngs)
        self.activation = _ACTIVATIONS[activation]

    def __call__(self, x: jax.Array) -> jax.Array:
        """Gates the channels of an NHWC batch."""
        pooled = jnp.mean(x, axis=(1, 2))
        gate = jax.nn.sigmoid(self.expand(self.activation(self.reduce(pooled))))
        return x * (2.0 * gate[:, None, None, :]).astype(x.dtype)


class StochasticDepth(nnx.Module):
    """Drops a whole residual branch per example during training, without rescaling.

    In training each example keeps its branch with probability ``1 − rate`` and the kept
    branches are *not* divided by ``1 − rate`` (the NFNets code's ``StochDepth`` with
    ``scale_by_keep=False``); in evaluation (``deterministic=True``, e.g. under
    ``nnx.view(model, deterministic=True)``) the branch passes unchanged.

    References:
      Huang, Sun, Liu, Sedra, Weinberger, *Deep Networks with Stochastic Depth*, ECCV 2016,
      arXiv:1603.09382.
    """

    def __init__(self, rate: float, *, deterministic: bool = False, rngs: nnx.Rngs):
        """Creates the layer.

        Args:
          rate: the probability of dropping the branch, in ``[0, 1)``.
          deterministic: start in evaluation mode.
          rngs: random streams (its ``dropout`` stream draws the masks).
        """
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"StochasticDepth: rate {rate} is not in [0, 1).")
        self.rate = rate
        self.deterministic = deterministic
        self.rngs = rngs["dropout"].fork()

    def set_view(self, deterministic: bool | None = None) -> None:
        """Sets the mode under ``nnx.view``.

        Args:
          deterministic: if True, the branch always passes (evaluation).
        """
        if deterministic is not None:
            self.deterministic = deterministic

    def __call__(self, x: jax.Array) -> jax.Array:
        """Masks an NHWC batch's examples (training) or returns it (evaluation)."""
        if self.deterministic or self.rate == 0.0:
            return x
        keep = jax.random.bernoulli(self.rngs(), 1.0 - self.rate, (x.shape[0], 1, 1, 1))
        return x * keep.astype(x.dtype)
