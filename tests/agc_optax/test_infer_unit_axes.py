"""infer_unit_axes on Flax Linen modules and plain JAX; the rule object; end to end with agc.

Every expected fan-in is written by hand from the layer's definition: the axes
of the kernel that its contraction sums over.
"""

from __future__ import annotations

import contextlib
import io
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, AxisType
from jax.sharding import PartitionSpec as P

from agc_optax import agc, infer_unit_axes, path_to_str
from helpers import markdown
from helpers.reference import reference_agc
from helpers.trees import mixed_scale_pair

REPO = pathlib.Path(__file__).resolve().parents[2]


def _linen_rule(module, *inputs, **kwargs):
    """Shapes only: neither init nor the forward pass runs (fast, and what users can do)."""
    specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in inputs]
    variables = jax.eval_shape(lambda *xs: module.init(jax.random.key(0), *xs, **kwargs), *specs)
    rule = infer_unit_axes(lambda p, *xs: module.apply({"params": p}, *xs, **kwargs),
                           variables["params"], *specs)
    return rule, variables["params"]


def _axes(rule, params):
    return {path_to_str(path): rule(path, leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def test_linen_dense_and_dense_general():
    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):  # x: (batch, 6)
            x = nn.Dense(5)(x)                                   # kernel (6, 5)
            x = nn.DenseGeneral((2, 3))(x)                       # kernel (5, 2, 3)
            return nn.DenseGeneral(4, axis=(-2, -1))(x)          # kernel (2, 3, 4)

    rule, params = _linen_rule(Model(), jnp.ones((3, 6)))
    assert _axes(rule, params) == {
        "Dense_0/kernel": (0,), "Dense_0/bias": (0,),
        "DenseGeneral_0/kernel": (0,), "DenseGeneral_0/bias": (0, 1),
        "DenseGeneral_1/kernel": (0, 1), "DenseGeneral_1/bias": (0,),
    }


def test_linen_attention_kernels_keep_heads_apart():
    """Query/key/value (in, heads, dim) sum over `in` only; the default rule would mix heads."""
    module = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)
    rule, params = _linen_rule(module, jnp.ones((2, 5, 6)))
    axes = _axes(rule, params)
    for name in ("query", "key", "value"):
        assert axes[f"{name}/kernel"] == (0,)           # (6, 2, 4)
        assert axes[f"{name}/bias"] == (0, 1)           # (2, 4): one unit
    assert axes["out/kernel"] == (0, 1)                 # (2, 4, 6)
    assert axes["out/bias"] == (0,)


@pytest.mark.parametrize(
    ("module", "in_shape", "kernel_axes"),
    [
        (nn.Conv(4, (3, 3)), (1, 6, 6, 3), (0, 1, 2)),                        # (3, 3, 3, 4)
        (nn.Conv(6, (3, 3), feature_group_count=2), (1, 6, 6, 4), (0, 1, 2)),  # (3, 3, 2, 6)
        (nn.Conv(8, (3, 3), feature_group_count=4), (1, 6, 6, 4), (0, 1, 2)),  # depthwise
        (nn.Conv(4, (5,)), (1, 9, 3), (0, 1)),                                 # (5, 3, 4)
        (nn.Conv(2, (2, 2, 2)), (1, 4, 4, 4, 3), (0, 1, 2, 3)),                # 3-D
        (nn.ConvTranspose(5, (3, 3)), (1, 4, 4, 3), (0, 1, 2)),                # (3, 3, 3, 5)
        (nn.ConvTranspose(5, (3, 3), transpose_kernel=True), (1, 4, 4, 3), (0, 1, 3)),
        (nn.ConvTranspose(5, (3, 3), strides=(2, 2)), (1, 4, 4, 3), (0, 1, 2)),
    ],
)
def test_linen_convolutions(module, in_shape, kernel_axes):
    rule, params = _linen_rule(module, jnp.ones(in_shape))
    assert _axes(rule, params) == {"kernel": kernel_axes, "bias": (0,)}


def test_linen_tied_embedding_one_unit_per_row():
    class Model(nn.Module):
        @nn.compact
        def __call__(self, ids):
            embed = nn.Embed(11, 4)
            return embed.attend(nn.Dense(4)(embed(ids)))

    rule, params = _linen_rule(Model(), jnp.zeros((2, 5), jnp.int32))
    assert _axes(rule, params)["Embed_0/embedding"] == (1,)
    evidence = rule.entries["Embed_0/embedding"].evidence
    assert "gather" in evidence and "dot_general" in evidence


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return nn.LayerNorm()(x + nn.Dense(4)(x)), None


def test_linen_scanned_blocks_have_a_layer_axis():
    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x):
            blocks = nn.scan(_Block, variable_axes={"params": 0}, split_rngs={"params": True},
                             length=3)
            return blocks()(x, None)[0]

    rule, params = _linen_rule(Stack(), jnp.ones((2, 4)))
    assert params["Scan_Block_0"]["Dense_0"]["kernel"].shape == (3, 4, 4)
    assert _axes(rule, params) == {
        "Scan_Block_0/Dense_0/kernel": (1,), "Scan_Block_0/Dense_0/bias": (1,),
        "Scan_Block_0/LayerNorm_0/scale": (1,), "Scan_Block_0/LayerNorm_0/bias": (1,),
    }
    assert "axis 0 scanned over" in rule.entries["Scan_Block_0/Dense_0/kernel"].evidence


def test_linen_rnn_shares_its_cell_across_steps():
    """nn.RNN scans with the params broadcast: no layer axis, every Dense kernel (in, hidden)."""
    rule, params = _linen_rule(nn.RNN(nn.LSTMCell(4)), jnp.ones((2, 7, 3)))
    axes = _axes(rule, params)
    assert len(axes) == 12                                   # 8 kernels, 4 biases
    assert set(axes.values()) == {(0,)}
    assert all("scanned" not in entry.evidence for entry in rule.entries.values())
    kernels = [e.evidence for p, e in rule.entries.items() if p.endswith("kernel")]
    assert len(kernels) == 8 and all("scan/" in e and "dot_general" in e for e in kernels)


def test_linen_remat():
    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.remat(nn.Dense)(3)(x)
            return nn.remat(nn.Conv)(2, (3,))(x[..., None])

    rule, params = _linen_rule(Model(), jnp.ones((2, 5)))
    axes = _axes(rule, params)
    assert axes["CheckpointDense_0/kernel"] == (0,)
    assert axes["CheckpointConv_0/kernel"] == (0, 1)


# Plain JAX ------------------------------------------------------------------------------


X = jax.ShapeDtypeStruct((2, 5, 6), jnp.float32)


@pytest.mark.parametrize(
    ("subscripts", "w_shape", "axes"),
    [
        ("bti,io->bto", (6, 3), (0,)),
        ("bti,oi->bto", (3, 6), (1,)),               # PyTorch layout
        ("bti,ihk->bthk", (6, 2, 4), (0,)),          # query kernel
        ("bti,hki->bthk", (2, 4, 6), (2,)),
        ("bti,tio->bto", (5, 6, 3), (1,)),           # t is a batch axis of the kernel
    ],
)
def test_plain_einsum_layouts(subscripts, w_shape, axes):
    params = {"w": jnp.ones(w_shape)}
    rule = infer_unit_axes(lambda p, x: jnp.einsum(subscripts, x, p["w"]), params, X)
    assert rule("w", params["w"]) == axes


def test_plain_attention_output_projection_and_reshapes():
    params = {"qkv": jnp.ones((6, 2 * 4)), "out": jnp.ones((2, 4, 6)),
              "merged": jnp.ones((2, 4, 6)), "merged_t": jnp.ones((2, 3, 6))}

    def fn(p, x):
        q = (x @ p["qkv"]).reshape(2, 5, 2, 4)                 # (in, heads·dim), split after
        y = jnp.einsum("bthk,hko->bto", q, p["out"])
        z = q.reshape(2, 5, 8) @ p["merged"].reshape(8, 6)     # (heads, dim, out) merged
        return (y + z) @ p["merged_t"].reshape(6, 6).T         # (out, in) after the merge

    rule = infer_unit_axes(fn, params, X)
    assert _axes(rule, params) == {"qkv": (0,), "out": (0, 1), "merged": (0, 1),
                                   "merged_t": (2,)}


def _standardise(w, gain):
    mean = jnp.mean(w, axis=(0, 1, 2), keepdims=True)
    var = jnp.var(w, axis=(0, 1, 2), keepdims=True)
    return gain * (w - mean) * jax.lax.rsqrt(var * np.prod(w.shape[:-1]) + 1e-4)


def test_plain_weight_standardised_conv():
    params = {"w": jnp.ones((3, 3, 2, 4)), "gain": jnp.ones((4,)), "bias": jnp.zeros((4,))}

    def fn(p, x):
        w = _standardise(p["w"], p["gain"])
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + p["bias"]

    rule = infer_unit_axes(fn, params, jax.ShapeDtypeStruct((1, 5, 5, 2), jnp.float32))
    assert _axes(rule, params) == {"w": (0, 1, 2), "gain": (0,), "bias": (0,)}


def test_plain_jit_checkpoint_and_custom_derivatives():
    @jax.custom_vjp
    def scaled(w):
        return 2 * w

    scaled.defvjp(lambda w: (2 * w, None), lambda _, g: (2 * g,))

    @jax.custom_jvp
    def soft(w):
        return jnp.tanh(w)

    soft.defjvp(lambda primals, tangents: (soft(primals[0]), tangents[0]))

    @jax.jit
    def project(w, x):
        return jnp.einsum("bti,oi->bto", x, w)

    params = {"a": jnp.ones((3, 6)), "b": jnp.ones((6, 3)), "c": jnp.ones((3, 6))}

    def fn(p, x):
        y = jax.checkpoint(lambda x: x @ scaled(p["b"]))(x)
        return project(p["a"], x) + y + project(soft(p["c"]), x)

    rule = infer_unit_axes(fn, params, X)
    assert _axes(rule, params) == {"a": (1,), "b": (0,), "c": (1,)}
    assert "jit" in rule.entries["a"].evidence


def test_plain_scan_fori_loop_while_and_cond():
    params = {"scanned": jnp.ones((3, 6, 6)), "scanned_bias": jnp.ones((3, 6)),
              "looped": jnp.ones((4, 6, 6)), "summed": jnp.ones((2, 6, 6)),
              "while_w": jnp.ones((6, 6)), "either": jnp.ones((6, 6))}

    def fn(p, x, flag):
        def layer(h, wb):
            w, b = wb
            return jnp.tanh(h @ w + b), None

        h = jax.lax.scan(layer, x, (p["scanned"], p["scanned_bias"]))[0]
        h = jax.lax.fori_loop(0, 4, lambda i, h: h @ p["looped"][i], h)
        # The carry starts as a constant and becomes a parameter in the loop.
        w_sum = jax.lax.fori_loop(0, 2, lambda i, acc: acc + p["summed"][i], jnp.zeros((6, 6)))
        h = jax.lax.while_loop(lambda c: c[1] < flag, lambda c: (c[0] @ p["while_w"], c[1] + 1),
                               (h @ w_sum, 0))[0]
        return jax.lax.cond(flag > 0, lambda h: h @ p["either"], lambda h: h, h)

    rule = infer_unit_axes(fn, params, X, jax.ShapeDtypeStruct((), jnp.int32))
    assert _axes(rule, params) == {"scanned": (1,), "scanned_bias": (1,), "looped": (1,),
                                   "summed": (1,), "while_w": (0,), "either": (0,)}
    assert "axis 0 indexed" in rule.entries["looped"].evidence
    assert "while" in rule.entries["while_w"].evidence


def test_plain_python_loop_over_stacked_layers_and_position_embedding():
    params = {"w": jnp.ones((3, 6, 6)), "pos": jnp.ones((5, 6))}

    def fn(p, x):
        h = x + p["pos"]
        for i in range(3):
            h = h @ p["w"][i]
        return h

    rule = infer_unit_axes(fn, params, X)
    assert _axes(rule, params) == {"w": (1,), "pos": (0, 1)}


def test_plain_shard_map_with_a_gathered_kernel():
    """FSDP style: the kernel is sharded over its rows and all-gathered before its use.

    An abstract mesh of 4 devices is enough to trace it on one.
    """
    mesh = AbstractMesh((4,), ("fsdp",), axis_types=(AxisType.Auto,))

    def body(w, x):
        return jnp.einsum("bti,oi->bto", x, jax.lax.all_gather(w, "fsdp", axis=0, tiled=True))

    def fn(p, x):
        return jax.shard_map(body, mesh=mesh, in_specs=(P("fsdp"), P()), out_specs=P(),
                             check_vma=False)(p["w"], x)

    params = {"w": jnp.ones((8, 6))}                  # (out, in), 2 rows per device
    rule = infer_unit_axes(fn, params, X)
    assert rule("w", params["w"]) == (1,)
    assert rule.entries["w"].evidence == "shard_map/dot_general sums (1,)"


def test_disagreeing_contractions_raise_and_can_be_overridden():
    params = {"tied": jnp.ones((6, 6)), "other": jnp.ones((6, 2))}

    def fn(p, x):
        return (x @ p["tied"]) @ p["tied"].T @ p["other"]

    with pytest.raises(ValueError, match=r"'tied'.*\(0,\).*\(1,\).*overrides=\{'tied'"):
        infer_unit_axes(fn, params, X)
    rule = infer_unit_axes(fn, params, X, overrides={"tied": 0})
    assert _axes(rule, params) == {"tied": (0,), "other": (0,)}
    assert rule.entries["tied"].evidence == "override"
    with pytest.raises(ValueError, match="'nope'"):
        infer_unit_axes(fn, params, X, overrides={"nope": 0})


def test_unused_parameter_keeps_the_default_rule():
    params = {"used": jnp.ones((6, 3)), "spare": jnp.ones((4, 2, 3))}
    rule = infer_unit_axes(lambda p, x: x @ p["used"], params, X)
    assert rule.unused == ["spare"]
    assert rule("spare", params["spare"]) == (0, 1)
    assert "never read" in rule.entries["spare"].evidence


def test_params_that_are_not_arrays_are_named():
    with pytest.raises(TypeError, match=r"'act' is a str, not an array.*eqx.partition"):
        infer_unit_axes(lambda p, x: x @ p["w"], {"w": jnp.ones((6, 3)), "act": "relu"}, X)


def test_rule_accepts_key_paths_and_rejects_schedule_calls():
    params = {"enc": {"q": jnp.ones((6, 2, 3))}, "b": jnp.ones((2, 3))}
    rule = infer_unit_axes(lambda p, x: jnp.einsum("bti,ihk->bthk", x, p["enc"]["q"]) + p["b"],
                           params, X)
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        assert rule(path, leaf) == rule(path_to_str(path), leaf)
    assert rule(("enc", "q"), params["enc"]["q"]) == (0,)  # any key sequence
    assert rule.with_fallback()("not/a/param", jnp.ones((4, 3))) == (0,)  # default, asked for
    with pytest.raises(TypeError, match="static_args"):
        rule(0)
    with pytest.raises(ValueError, match="different model"):
        rule("enc/q", jnp.ones((6, 6)))


def test_table_lists_every_parameter():
    params = {"w": jnp.ones((6, 3)), "b": jnp.ones((3,))}
    text = str(infer_unit_axes(lambda p, x: x @ p["w"] + p["b"], params, X))
    lines = text.splitlines()
    assert lines[0].split() == ["path", "shape", "fan-in", "units", "evidence"]
    assert lines[1].split()[:6] == ["b", "(3,)", "(0,)", "1", "no", "contraction"]
    assert lines[2].split()[:6] == ["w", "(6,", "3)", "(0,)", "3", "dot_general"]
    assert text in repr(infer_unit_axes(lambda p, x: x @ p["w"] + p["b"], params, X))


def test_evidence_of_a_shared_weight_stays_short():
    params = {"w": jnp.ones((6, 6))}

    def fn(p, x):
        for wrap in (jax.jit, jax.checkpoint, lambda f: f, jax.jit):
            x = wrap(lambda x: x @ p["w"])(x)
        return x

    evidence = infer_unit_axes(fn, params, X).entries["w"].evidence
    first, second, rest = evidence.split("; ")
    assert first == "jit/dot_general sums (0,)"
    assert second.endswith("/dot_general sums (0,)")   # remat's name varies with the version
    assert rest == "and 1 more"


def test_agc_with_inferred_axes_matches_the_float64_reference():
    """Attention kernels (6, 2, 4) clip per (head, dim) column, under jit."""
    module = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)
    rule, params = _linen_rule(module, jnp.ones((2, 5, 6)))
    expected = {"kernel": {"query": (0,), "out": (0, 1)}, "bias": {"query": (0, 1), "out": (0,)}}
    leaves = {}
    for i, (path, leaf) in enumerate(jax.tree_util.tree_flatten_with_path(params)[0]):
        name, kind = path_to_str(path).split("/")
        axes = expected[kind]["out" if name == "out" else "query"]
        leaves[path_to_str(path)] = (*mixed_scale_pair(leaf.shape, axes, seed=i), axes)
    p_tree = jax.tree.unflatten(jax.tree.structure(params),
                                [v[0] for v in leaves.values()])
    g_tree = jax.tree.unflatten(jax.tree.structure(params),
                                [v[1] for v in leaves.values()])
    tx = agc(0.02, unit_axes=rule)
    got = jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])(g_tree, p_tree)
    for path, leaf in jax.tree_util.tree_flatten_with_path(got)[0]:
        param, grad, axes = leaves[path_to_str(path)]
        want, clipped = reference_agc(grad, param, axes, 0.02)
        assert 0 < clipped.mean() < 1 or clipped.size == 1
        np.testing.assert_allclose(np.asarray(leaf), want, rtol=2e-6, atol=1e-12)
    assert isinstance(tx, optax.GradientTransformation)


def test_the_units_tables_shown_are_real_output():
    """Every ``text`` block of the units guide is what its python blocks print.

    README.md's table is checked by ``tests/docs/test_readme.py``, which runs README's code once.
    """
    page = REPO / "docs" / "guides" / "units.md"
    out = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(out):
        for block in markdown.fenced_blocks(page, "python"):
            if markdown.SKIP_MARK not in block.info:
                markdown.run_block(page, block, namespace)
    shown = [block.code.strip() for block in markdown.fenced_blocks(page, "text")]
    assert len(shown) == 4
    for text in shown:
        assert text in out.getvalue()
