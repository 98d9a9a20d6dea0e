"""infer_unit_axes beyond the common layers: the rule stated on the data.

A parameter's fan-in are the axes summed where it, or a value computed from
parameters and constants only, meets a value derived from fn's inputs. Each
expected answer below is derived by hand from the program's mathematics: which
axes of the parameter one output feature's value sums over.
"""

from __future__ import annotations

import warnings

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, AxisType
from jax.sharding import PartitionSpec as P

from agc_optax import infer_unit_axes


def _spec(*shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype)


def _fan_in(fn, params, *args, **kwargs):
    rule = infer_unit_axes(fn, params, *args, **kwargs)
    return {path: entry.fan_in for path, entry in rule.entries.items()}


X = _spec(7, 6)                       # (tokens, features)
IDS = _spec(7, dtype=jnp.int32)       # one expert (or row) per token
TASK = _spec(dtype=jnp.int32)         # one task for the batch


# Item 1: a slice picked by a data index, then contracted with data, is a kernel. -----------


@pytest.mark.parametrize(
    "pick",
    [
        pytest.param(lambda w, x, ids, task: jnp.einsum("ti,tio->to", x, w[ids]), id="w[ids]"),
        pytest.param(lambda w, x, ids, task: x @ w[task], id="w[task]"),
        pytest.param(lambda w, x, ids, task: x @ jax.lax.dynamic_index_in_dim(
            w, task, keepdims=False), id="dynamic_index_in_dim"),
        pytest.param(lambda w, x, ids, task: jax.vmap(lambda xt, wt: xt @ wt)(x, w[ids]),
                     id="vmap over tokens"),
    ],
)
def test_expert_selected_by_data_is_a_kernel_per_expert(pick):
    """w (experts, in, out): token t's output o sums w[e_t, i, o] x[t, i] over i only."""
    params = {"w": _spec(4, 6, 3)}
    rule = infer_unit_axes(lambda p, x, ids, task: pick(p["w"], x, ids, task), params,
                           X, IDS, TASK)
    assert rule.entries["w"].fan_in == (1,)
    assert "axis 0 selected by a data index" in rule.entries["w"].evidence


def test_a_lookup_is_still_one_unit_per_row():
    """Looked up and added to activations, or fed to a Dense kernel: rows (vocab, features)."""
    params = {"emb": _spec(11, 6), "pos": _spec(7, 6), "dense": _spec(6, 3)}
    got = _fan_in(lambda p, ids: (p["emb"][ids] + p["pos"]) @ p["dense"], params, IDS)
    assert got == {"emb": (1,), "pos": (0, 1), "dense": (0,)}
    got = _fan_in(lambda p, ids: 2.0 * p["emb"][ids], {"emb": _spec(11, 6)}, IDS)
    assert got == {"emb": (1,)}


def test_lookups_returned_from_loops_and_branches():
    params = {"emb": _spec(11, 6)}
    scanned = lambda p, ids, flag: jax.lax.scan(  # noqa: E731
        lambda c, t: (c, p["emb"][t]), 0.0, ids)[1]
    looped = lambda p, ids, flag: jax.lax.fori_loop(  # noqa: E731
        0, 2, lambda i, c: p["emb"][ids[i]], jnp.zeros(6))
    branched = lambda p, ids, flag: jax.lax.cond(  # noqa: E731
        flag, lambda: p["emb"][ids], lambda: p["emb"][ids + 1])
    for fn in (scanned, looped, branched):
        assert _fan_in(fn, params, IDS, _spec(dtype=jnp.bool_)) == {"emb": (1,)}


# Item 2: vmapped ensembles. -------------------------------------------------------------------


def test_vmapped_conv_ensemble_keeps_members_apart():
    """kernel (members, H, W, in, out): member m's output sums its own H, W, in."""
    params = {"w": _spec(5, 3, 3, 3, 6)}

    def fn(p, x):
        conv = lambda w, x: jax.lax.conv_general_dilated(  # noqa: E731
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.vmap(conv)(p["w"], x)

    assert _fan_in(fn, params, _spec(5, 2, 8, 8, 3)) == {"w": (1, 2, 3)}


def test_nnx_vmapped_conv_ensemble():
    @nnx.split_rngs(splits=5)
    @nnx.vmap(in_axes=0, out_axes=0)
    def create(rngs):
        return nnx.Conv(3, 6, (3, 3), rngs=rngs)

    model = create(nnx.Rngs(0))
    forward = nnx.vmap(lambda m, x: m(x), in_axes=(0, 0))
    rule = infer_unit_axes(lambda m, x: forward(m, x), model, _spec(5, 2, 8, 8, 3))
    assert model.kernel.shape == (5, 3, 3, 3, 6)
    assert rule.entries["kernel"].fan_in == (1, 2, 3)
    # A member's bias looks like a position embedding added to activations: one unit
    # for all members (the docs list it among the patterns that need an override).
    assert rule.entries["bias"].fan_in == (0, 1)


def test_vmapped_embeddings_with_shared_ids():
    """table (members, vocab, features): one unit per member and row."""
    params = {"emb": _spec(5, 100, 8)}
    ids = _spec(2, 7, dtype=jnp.int32)
    got = _fan_in(lambda p, ids: jax.vmap(lambda t: t[ids])(p["emb"]), params, ids)
    assert got == {"emb": (2,)}
    got = _fan_in(lambda p, ids: p["emb"][:, ids], params, ids)          # the same, by hand
    assert got == {"emb": (2,)}
    got = _fan_in(lambda p, ids: jax.vmap(lambda t: t[ids])(p["emb"]), params, IDS)
    assert got == {"emb": (2,)}
    # A table stored (features, vocab): a looked-up column is a row of features.
    rule = infer_unit_axes(lambda p, ids: p["emb"][:, ids], {"emb": _spec(8, 100)}, IDS)
    assert rule.entries["emb"].fan_in == (0,)
    assert rule.entries["emb"].evidence == "gather lookup sums (0,) (one unit per row)"


def test_linen_vmapped_embed():
    embeds = nn.vmap(nn.Embed, in_axes=None, out_axes=0, variable_axes={"params": 0},
                     split_rngs={"params": True}, axis_size=5)(100, 8)
    ids = _spec(2, 7, dtype=jnp.int32)
    params = jax.eval_shape(embeds.init, jax.random.key(0), ids)["params"]
    rule = infer_unit_axes(lambda p, ids: embeds.apply({"params": p}, ids), params, ids)
    assert params["embedding"].shape == (5, 100, 8)
    assert rule.entries["embedding"].fan_in == (2,)


# Item 3 and issue 25 item 6: contractions among parameters and constants. --------------------


def test_kernel_expanded_in_a_constant_basis():
    """W[h, w, i, o] = sum_b c[i, o, b] B[b, h, w]; the conv sums W over h, w, i, so c over i, b."""
    basis = np.random.default_rng(0).normal(size=(5, 3, 3)).astype(np.float32)

    def fn(p, x):
        w = jnp.einsum("iob,bhw->hwio", p["c"], basis)
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    assert _fan_in(fn, {"c": _spec(2, 4, 5)}, _spec(1, 6, 6, 2)) == {"c": (0, 2)}


def test_product_with_a_constant_matrix():
    """y[o] = sum_i x[i] sum_k c[i, k] B[k, o]: every output sums c over i, never over k."""
    basis = np.ones((2, 3), np.float32)
    assert _fan_in(lambda p, x: x @ (p["c"] @ basis), {"c": _spec(6, 2)}, X) == {"c": (0,)}


def test_two_spellings_of_a_low_rank_layer_agree():
    params = {"a": _spec(6, 2), "b": _spec(2, 3)}
    merged = _fan_in(lambda p, x: x @ (p["a"] @ p["b"]), params, X)
    chained = _fan_in(lambda p, x: (x @ p["a"]) @ p["b"], params, X)
    assert merged == chained == {"a": (0,), "b": (0,)}
    lora = _fan_in(lambda p, x: x @ (p["w"] + p["a"] @ p["b"]), {**params, "w": _spec(6, 3)}, X)
    assert lora == {"a": (0,), "b": (0,), "w": (0,)}


def test_a_weight_penalty_in_fn_is_not_a_contraction_with_data():
    params = {"w": _spec(6, 3)}
    got = _fan_in(lambda p, x: (x @ p["w"]).sum() + jnp.vdot(p["w"], p["w"]), params, X)
    assert got == {"w": (0,)}


# Item 4: contractions spelled as an elementwise product and a sum. ---------------------------


def test_broadcast_product_then_sum_is_a_contraction():
    """y[t, o] = sum_i x[t, i] w[i, o]: w (in, out) sums over in, whatever the spelling."""
    params = {"w": _spec(6, 3), "v": _spec(6), "scale": _spec(6), "u": _spec(6, 3)}

    def fn(p, x):
        y = (x[:, :, None] * p["w"][None]).sum(1)                        # (7, 3)
        z = jnp.sum(x * p["v"], axis=-1, keepdims=True)                   # a dot, (7, 1)
        return y + z + (x * p["scale"]) @ p["u"]                          # a norm-like scale

    rule = infer_unit_axes(fn, params, X)
    assert {p: e.fan_in for p, e in rule.entries.items()} == {
        "w": (0,), "v": (0,), "scale": (0,), "u": (0,)}
    assert "reduce_sum sums (0,)" in rule.entries["v"].evidence
    assert rule.entries["scale"].evidence == "no contraction (mul with activations)"


def test_contractions_added_over_slices_sum_the_sliced_axis():
    """y = sum_h a[:, h] @ wo[h]: each output sums wo (heads, dim, out) over heads and dim."""
    def heads(p, a):                                         # a (batch, heads, dim)
        return sum(a[:, h] @ p["wo"][h] for h in range(3)) + p["b"]

    def taps(p, x):                                          # causal conv, w (taps, in, out)
        xp = jnp.pad(x, ((2, 0), (0, 0)))
        return sum(xp[k:k + 7] @ p["w"][k] for k in range(3))

    got = _fan_in(heads, {"wo": _spec(3, 4, 6), "b": _spec(6)}, _spec(2, 3, 4))
    assert got == {"wo": (0, 1), "b": (0,)}
    rule = infer_unit_axes(taps, {"w": _spec(3, 6, 4)}, X)
    assert rule.entries["w"].fan_in == (0, 1)
    assert rule.entries["w"].evidence == "dot_general sums (0, 1) (added over slices)"


def test_stacked_layers_in_a_python_loop_stay_layers():
    """Each layer's output feeds the next: w[i] is a layer, (layers, in, out) sums over in."""
    def residual(p, x):
        for i in range(3):
            x = x + jax.nn.gelu(x @ p["w"][i]) @ p["v"][i]
        return x

    def plain(p, x):
        for i in range(3):
            x = x + x @ p["w"][i]
        return x

    params = {"w": _spec(3, 6, 6), "v": _spec(3, 6, 6)}
    assert _fan_in(residual, params, X) == {"w": (1,), "v": (1,)}
    assert _fan_in(plain, {"w": _spec(3, 6, 6)}, X) == {"w": (1,)}


# Item 6: backward passes inside the forward pass. --------------------------------------------


def _energy(p, x):                     # x (atoms, 6) -> a scalar
    return jnp.sum(jnp.tanh(x @ p["w1"]) @ p["w2"])


ENERGY_PARAMS = {"w1": _spec(6, 8), "w2": _spec(8, 1)}


@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(lambda p, x: -jax.grad(_energy, argnums=1)(p, x), id="force"),
        pytest.param(lambda p, x: -jax.grad(jax.jit(_energy), argnums=1)(p, x), id="jit force"),
        pytest.param(lambda p, x: jnp.trace(jax.jacfwd(jax.grad(
            lambda xi: _energy(p, xi[None])))(x[0])), id="laplacian"),
        pytest.param(lambda p, x: jax.jvp(lambda x: _energy(p, x), (x,), (x,))[1], id="jvp"),
    ],
)
def test_derivatives_with_respect_to_the_input(fn):
    """The transposed matmuls of grad are the backward pass, not uses: w1 (in, hidden)."""
    assert _fan_in(fn, ENERGY_PARAMS, X) == {"w1": (0,), "w2": (0,)}


# Item 5: spectral normalisation. --------------------------------------------------------------


def _normalize(v):
    return v / jnp.linalg.norm(v)


def test_hand_written_power_iteration():
    """sigma(W) only rescales W; y = x @ (W / sigma) sums W (in, out) over in."""
    def fn(p, x):
        w, u = p["w"], jnp.ones((3,))
        for _ in range(2):
            v = _normalize(w @ u)
            u = _normalize(w.T @ v)
        return x @ (w / (v @ w @ u))

    assert _fan_in(fn, {"w": _spec(6, 3)}, X) == {"w": (0,)}


def test_nnx_spectral_norm():
    model = nnx.SpectralNorm(nnx.Linear(6, 3, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    rule = infer_unit_axes(lambda m, x: m(x, update_stats=True), model, X)
    assert rule.entries["layer_instance/kernel"].fan_in == (0,)


def test_linen_spectral_norm_with_its_statistics_closed_over():
    module = nn.SpectralNorm(nn.Dense(3))
    variables = module.init(jax.random.key(0), jnp.ones((7, 6)), update_stats=False)

    def fn(p, x):
        return module.apply({"params": p, "batch_stats": variables["batch_stats"]}, x,
                            update_stats=True, mutable=["batch_stats"])[0]

    rule = infer_unit_axes(fn, variables["params"], X)
    assert rule.entries["layer_instance/kernel"].fan_in == (0,)

    def passed(p, x, stats):                          # u is then an input: a second contraction
        return module.apply({"params": p, "batch_stats": stats}, x, update_stats=True,
                            mutable=["batch_stats"])[0]

    with pytest.raises(ValueError, match=r"'layer_instance/kernel'.*power iteration"):
        infer_unit_axes(passed, variables["params"], X, variables["batch_stats"])


def test_equinox_spectral_norm_closes_over_its_state_or_is_told_to():
    """Linear weight (out, in) sums over in; state passed as data makes u a second input."""
    model, state = eqx.nn.make_with_state(eqx.nn.SpectralNorm)(
        eqx.nn.Linear(6, 3, key=jax.random.key(0)), "weight", key=jax.random.key(1))
    params, static = eqx.partition(model, eqx.is_array)
    leaves, treedef = jax.tree.flatten(state)
    fresh = lambda: jax.tree.unflatten(treedef, leaves)  # noqa: E731  (eqx refuses reuse)
    rule = infer_unit_axes(lambda p, x: eqx.combine(p, static)(x, fresh())[0], params, _spec(6))
    assert rule.entries["layer/weight"].fan_in == (1,)
    with pytest.raises(ValueError, match=r"'layer/weight'.*power iteration.*closes over"):
        infer_unit_axes(lambda p, x, s: eqx.combine(p, static)(x, s)[0], params, _spec(6),
                        fresh())


# Item 7 and the warnings. ---------------------------------------------------------------------


def test_untiled_all_gather_then_reshape_in_shard_map():
    mesh = AbstractMesh((4,), ("fsdp",), axis_types=(AxisType.Auto,))

    def body(w, x):                    # w: 2 of the 8 (out, in) rows per device
        gathered = jax.lax.all_gather(w, "fsdp", axis=0, tiled=False)     # (4, 2, 6)
        return x @ gathered.reshape(8, 6).T

    def fn(p, x):
        return jax.shard_map(body, mesh=mesh, in_specs=(P("fsdp"), P()), out_specs=P(),
                             check_vma=False)(p["w"], x)

    assert _fan_in(fn, {"w": _spec(8, 6)}, X) == {"w": (1,)}


def test_picking_single_elements_cannot_be_inferred_and_says_so():
    params = {"w": _spec(7, 6)}
    idx = _spec(7, 2, dtype=jnp.int32)
    with pytest.warns(UserWarning, match=r"cannot infer the fan-in of \['w'\].*overrides"):
        rule = infer_unit_axes(lambda p, i: jnp.take_along_axis(p["w"], i, axis=1), params, idx)
    entry = rule.entries["w"]
    assert entry.fallback and entry.evidence.startswith("FALLBACK default rule: ")
    assert "cannot infer, override" in entry.evidence
    assert "FALLBACK" in str(rule).splitlines()[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rule = infer_unit_axes(lambda p, i: jnp.take_along_axis(p["w"], i, axis=1), params, idx,
                               overrides={"w": (1,)})
    assert rule.entries["w"].fan_in == (1,) and not rule.entries["w"].fallback


def test_data_closed_over_is_warned_about():
    x = jnp.ones((7, 6))
    with pytest.warns(UserWarning, match=r"reads no argument but params.*infer_unit_axes\(fn"):
        infer_unit_axes(lambda p: x @ p["w"], {"w": _spec(6, 3)})
    with pytest.warns(UserWarning, match=r"reads no argument but params"):
        infer_unit_axes(lambda p, unused: x @ p["w"], {"w": _spec(6, 3)}, X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        infer_unit_axes(lambda p, x: x @ p["w"], {"w": _spec(6, 3)}, X)


def test_fallback_entries_are_marked():
    params = {"w": _spec(6, 3), "b": _spec(3), "spare": _spec(2, 2)}
    with pytest.warns(UserWarning, match=r"cannot infer the fan-in of \['w'\];"):
        rule = infer_unit_axes(lambda p, x: x @ jax.lax.top_k(p["w"], 2)[0] + p["b"][:2],
                               params, X)
    assert rule.entries["w"].fallback
    assert rule.entries["w"].evidence == "FALLBACK default rule: not followed through top_k"
    assert rule.entries["spare"].fallback and "never read" in rule.entries["spare"].evidence
    assert not rule.entries["b"].fallback


def test_documented_patterns_that_need_an_override():
    """docs/guides/units.md lists these: each gives the stated (wrong) answer without one."""
    table = {"table": _spec(11, 6), "wo": _spec(3, 4, 6)}

    def one_hot(p, ids):                              # a contraction over the vocabulary
        return jax.nn.one_hot(ids, 11) @ p["table"]

    def running_sum(p, a):                            # heads added into the activations
        out = a[:, 0] @ jnp.eye(4, 6)
        for h in range(3):
            out = out + a[:, h] @ p["wo"][h]
        return out

    assert _fan_in(one_hot, table, IDS)["table"] == (0,)
    assert _fan_in(running_sum, table, _spec(2, 3, 4))["wo"] == (1,)
    assert _fan_in(one_hot, table, IDS, overrides={"table": (1,)})["table"] == (1,)

