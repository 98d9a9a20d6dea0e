"""infer_unit_axes on deep plain-JAX networks: answers and trace time.

A 48-layer unrolled transformer and a network with NFNet-F3's block layout
(depths 4, 8, 24, 12; weight-standardised bottleneck convs with grouped 3x3s,
squeeze-excite and skip gains), both in plain JAX with small widths: the jaxpr's
size, not the widths, sets the cost of the walk. Expected fan-in axes are the
kernels' contracted axes, written from each layer's definition.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from agc_optax import infer_unit_axes

LAYERS, WIDTH, HEADS = 48, 16, 2
F3_DEPTHS, F3_WIDTHS, GROUP_WIDTH = (4, 8, 24, 12), (16, 32, 48, 48), 8


def transformer_params(layers: int = LAYERS, width: int = WIDTH) -> dict:
    d = width // HEADS
    return {f"layer_{i}": {
        "qkv": jax.ShapeDtypeStruct((width, 3, HEADS, d), jnp.float32),   # (in, 3, heads, dim)
        "out": jax.ShapeDtypeStruct((HEADS, d, width), jnp.float32),      # (heads, dim, out)
        "mlp_in": jax.ShapeDtypeStruct((width, 4 * width), jnp.float32),
        "mlp_out": jax.ShapeDtypeStruct((4 * width, width), jnp.float32),
        "scale": jax.ShapeDtypeStruct((width,), jnp.float32),
    } for i in range(layers)}


def _layer_norm(x, scale):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-6) * scale


def transformer(params: dict, x: jax.Array) -> jax.Array:
    """Pre-LN blocks, unrolled in Python (one jaxpr equation per op per layer)."""
    for layer in params.values():
        q, k, v = jnp.einsum("btd,dshk->sbthk", _layer_norm(x, layer["scale"]), layer["qkv"])
        weights = jax.nn.softmax(jnp.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(k.shape[-1]))
        x = x + jnp.einsum("bhqs,bshk,hko->bqo", weights, v, layer["out"])
        x = x + jax.nn.gelu(x @ layer["mlp_in"]) @ layer["mlp_out"]
    return x


def _ws_conv(w, gain, x, stride=1, groups=1):
    mean = w.mean((0, 1, 2), keepdims=True)
    var = w.var((0, 1, 2), keepdims=True)
    fan_in = np.prod(w.shape[:-1])
    w = (w - mean) * jax.lax.rsqrt(jnp.maximum(var * fan_in, 1e-4)) * gain
    return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=groups)


def _conv_spec(k, c_in, c_out):
    return {"w": jax.ShapeDtypeStruct((k, k, c_in, c_out), jnp.float32),
            "gain": jax.ShapeDtypeStruct((c_out,), jnp.float32),
            "b": jax.ShapeDtypeStruct((c_out,), jnp.float32)}


def nfnet_f3_params() -> dict:
    params, c_in = {"stem": _conv_spec(3, 3, F3_WIDTHS[0])}, F3_WIDTHS[0]
    for stage, (depth, width) in enumerate(zip(F3_DEPTHS, F3_WIDTHS, strict=True)):
        for i in range(depth):
            mid = width // 2
            groups = mid // GROUP_WIDTH
            block = {"conv0": _conv_spec(1, c_in, mid),
                     "conv1": _conv_spec(3, mid // groups, mid),
                     "conv1b": _conv_spec(3, mid // groups, mid),
                     "conv2": _conv_spec(1, mid, width),
                     "se_in": jax.ShapeDtypeStruct((width, width // 2), jnp.float32),
                     "se_out": jax.ShapeDtypeStruct((width // 2, width), jnp.float32),
                     "skip_gain": jax.ShapeDtypeStruct((), jnp.float32)}
            if i == 0:
                block["shortcut"] = _conv_spec(1, c_in, width)
            params[f"stage{stage}_block{i}"] = block
            c_in = width
    return params


def nfnet_f3(params: dict, x: jax.Array) -> jax.Array:
    """NF bottleneck blocks: x + gain * SE(conv2(conv1b(conv1(conv0(x))))) (arXiv:2102.06171)."""
    conv = lambda p, x, **kw: _ws_conv(p["w"], p["gain"], x, **kw) + p["b"]  # noqa: E731
    x = conv(params["stem"], x, stride=2)
    for name, block in params.items():
        if name == "stem":
            continue
        groups = block["conv1"]["w"].shape[-1] // block["conv1"]["w"].shape[-2]
        out = jax.nn.gelu(x) * 0.9
        shortcut = conv(block["shortcut"], out) if "shortcut" in block else x
        h = conv(block["conv0"], out)
        h = conv(block["conv1"], jax.nn.gelu(h), groups=groups)
        h = conv(block["conv1b"], jax.nn.gelu(h), groups=groups)
        h = conv(block["conv2"], jax.nn.gelu(h))
        squeeze = jax.nn.relu(h.mean((1, 2)) @ block["se_in"]) @ block["se_out"]
        h = h * 2 * jax.nn.sigmoid(squeeze)[:, None, None]
        x = shortcut + block["skip_gain"] * 0.2 * h
    return x


TOKENS = jax.ShapeDtypeStruct((2, 5, WIDTH), jnp.float32)
IMAGES = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)


def trace_seconds(fn, params, x, repeats: int = 3) -> tuple[float, float]:
    """Best-of-``repeats`` CPU seconds of ``jax.make_jaxpr`` alone and of ``infer_unit_axes``.

    CPU time of this process, so that other processes on a shared machine count less.
    """
    def best(call):
        times = []
        for _ in range(repeats):
            start = time.process_time()
            call()
            times.append(time.process_time() - start)
        return min(times)

    # A fresh closure each time: make_jaxpr caches the traces of one function.
    return best(lambda: jax.make_jaxpr(lambda p, x: fn(p, x))(params, x)), best(
        lambda: infer_unit_axes(fn, params, x))


def test_48_layer_transformer_kernels():
    rule = infer_unit_axes(transformer, transformer_params(), TOKENS)
    for i in (0, LAYERS - 1):
        axes = {name: rule.entries[f"layer_{i}/{name}"].fan_in
                for name in ("qkv", "out", "mlp_in", "mlp_out", "scale")}
        assert axes == {"qkv": (0,), "out": (0, 1), "mlp_in": (0,), "mlp_out": (0,),
                        "scale": (0,)}


def test_nfnet_f3_shaped_kernels():
    rule = infer_unit_axes(nfnet_f3, nfnet_f3_params(), IMAGES)
    for block in ("stage0_block0", "stage2_block23"):
        assert rule.entries[f"{block}/conv1/w"].fan_in == (0, 1, 2)
        assert rule.entries[f"{block}/conv1/gain"].fan_in == (0,)
        assert rule.entries[f"{block}/se_in"].fan_in == (0,)
        assert rule.entries[f"{block}/skip_gain"].fan_in == ()


def test_inference_costs_little_more_than_the_trace():
    """The walk is a small fraction of tracing: within 2x of make_jaxpr on the 48 layers."""
    jaxpr_s, infer_s = trace_seconds(transformer, transformer_params(), TOKENS)
    assert infer_s < 2 * jaxpr_s + 0.05, (jaxpr_s, infer_s)


if __name__ == "__main__":
    for name, fn, params, x in (("transformer-48", transformer, transformer_params(), TOKENS),
                                ("nfnet-f3", nfnet_f3, nfnet_f3_params(), IMAGES)):
        jaxpr_s, infer_s = trace_seconds(fn, params, x)
        print(f"{name}: make_jaxpr {jaxpr_s:.3f} s, infer_unit_axes {infer_s:.3f} s")
