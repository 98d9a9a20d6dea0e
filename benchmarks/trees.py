"""The parameter trees the AGC benchmark times, with random parameters and gradients.

Two float32 trees in Flax layout: the example's NF-ResNet-50 (shapes from
``nnx.eval_shape`` of ``examples.nf_resnet.models``) and an 18-layer pre-LN decoder-only
transformer; ``quick`` gives tiny trees of the same leaf kinds, for smoke tests.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from examples.nf_resnet import models

# The clipping the trees' gradients are scaled for (the benchmark's λ).
CLIPPING = 0.01
PARAM_STD = 0.05
# With params ~ N(0, PARAM_STD) a unit's grad/param norm ratio is about
# grad_std / PARAM_STD, so grad stds spread log-uniformly over a decade either
# side of CLIPPING * PARAM_STD leave roughly half of the units clipped.
GRAD_STD_CENTRE = CLIPPING * PARAM_STD
GRAD_STD_DECADES = 1.0


@dataclasses.dataclass(frozen=True)
class TransformerShape:
    """Sizes of a pre-LN decoder-only transformer."""

    num_layers: int = 18
    d_model: int = 256
    num_heads: int = 4
    head_dim: int = 64
    mlp_ratio: int = 4
    vocab_size: int = 32_000
    max_len: int = 1024


# The full-size transformer and the tiny one behind --quick: same leaf kinds, fewer and smaller.
TRANSFORMERS = {
    "full": TransformerShape(),
    "quick": TransformerShape(
        num_layers=1, d_model=32, num_heads=2, head_dim=16, vocab_size=100, max_len=16
    ),
}


def _f32(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def resnet_shapes(quick: bool) -> dict[str, Any]:
    """Shapes of the example's NF-ResNet-50 parameters (nf_resnet_nano if ``quick``).

    The model is built abstractly (``nnx.eval_shape``: no memory, no compute) with an
    ImageNet-sized 1000-class head, and its ``nnx.Param`` state becomes a plain dict.
    """
    variant, num_classes = ("nf_resnet_nano", 10) if quick else ("nf_resnet_50", 1000)
    model = nnx.eval_shape(
        lambda: models.NFResNet(models.VARIANTS[variant], num_classes, rngs=nnx.Rngs(0))
    )
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def transformer_shapes(shape: TransformerShape) -> dict[str, Any]:
    """Shapes of a decoder-only transformer parameter tree in Flax layout."""
    d, h, k = shape.d_model, shape.num_heads, shape.head_dim
    hidden = shape.mlp_ratio * d

    def layer_norm() -> dict[str, Any]:
        return {"scale": _f32(d), "bias": _f32(d)}

    def projection() -> dict[str, Any]:
        return {"kernel": _f32(d, h, k), "bias": _f32(h, k)}

    tree: dict[str, Any] = {
        "embed": {"embedding": _f32(shape.vocab_size, d)},
        "pos_embed": {"embedding": _f32(shape.max_len, d)},
    }
    for index in range(shape.num_layers):
        tree[f"layer{index}"] = {
            "ln1": layer_norm(),
            "attn": {
                "query": projection(),
                "key": projection(),
                "value": projection(),
                "out": {"kernel": _f32(h, k, d), "bias": _f32(d)},
            },
            "ln2": layer_norm(),
            "mlp": {
                "wi": {"kernel": _f32(d, hidden), "bias": _f32(hidden)},
                "wo": {"kernel": _f32(hidden, d), "bias": _f32(d)},
            },
        }
    tree["final_ln"] = layer_norm()
    return tree


def tree_shapes(name: str, quick: bool) -> dict[str, Any]:
    """Shape tree of the named preset."""
    if name == "resnet50":
        return resnet_shapes(quick)
    return transformer_shapes(TRANSFORMERS["quick" if quick else "full"])


def make_params_and_grads(shapes: Any, seed: int) -> tuple[Any, Any]:
    """Random params ~ N(0, PARAM_STD) and grads whose scale varies per output unit."""
    leaves, treedef = jax.tree.flatten(shapes)
    sizes = [int(np.prod(leaf.shape)) for leaf in leaves]
    units = [leaf.shape[-1] if leaf.shape else 1 for leaf in leaves]
    # Three flat draws cut into leaves: sampling leaf by leaf would compile a kernel per shape.
    p_key, g_key, s_key = jax.random.split(jax.random.key(seed), 3)
    flat_p = np.asarray(jax.random.normal(p_key, (sum(sizes),), jnp.float32))
    flat_g = np.asarray(jax.random.normal(g_key, (sum(sizes),), jnp.float32))
    # One scale per slice of the last (output) axis, so clipped and unclipped units mix.
    decades = jax.random.uniform(s_key, (sum(units),), jnp.float32, -1.0, 1.0)
    flat_scale = np.asarray(GRAD_STD_CENTRE * 10.0 ** (GRAD_STD_DECADES * decades))
    params, grads = [], []
    p_start = s_start = 0
    for leaf, size, unit in zip(leaves, sizes, units, strict=True):
        p_slice = slice(p_start, p_start + size)
        scale = flat_scale[s_start : s_start + unit].reshape(leaf.shape[-1:])
        params.append(PARAM_STD * flat_p[p_slice].reshape(leaf.shape))
        grads.append(scale * flat_g[p_slice].reshape(leaf.shape))
        p_start, s_start = p_start + size, s_start + unit
    params, grads = jax.device_put((params, grads))
    return jax.tree.unflatten(treedef, params), jax.tree.unflatten(treedef, grads)
