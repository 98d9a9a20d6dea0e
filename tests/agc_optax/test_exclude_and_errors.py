"""Leaf exclusion, path strings, and every error a user can hit."""

from __future__ import annotations

import dataclasses
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import agc_optax
from agc_optax import agc, path_to_str
from helpers.flax_compat import as_pure

PARAMS = {"body": {"layers": [{"kernel": jnp.ones((4, 3))}, {"kernel": jnp.ones((3, 3))}]},
          "head": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}
GRADS = jax.tree.map(lambda p: jnp.full(p.shape, 10.0), PARAMS)


def leaf_paths(tree):
    return [path_to_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def clipped_paths(exclude):
    transform = agc(0.01, exclude=exclude)
    updates, _ = transform.update(GRADS, transform.init(PARAMS), PARAMS)
    return sorted(path for path, g, u in zip(leaf_paths(GRADS), jax.tree.leaves(GRADS),
                                             jax.tree.leaves(updates), strict=True)
                  if not np.array_equal(g, u))


def test_path_strings_for_dicts_lists_dataclasses_and_nnx():
    assert leaf_paths(PARAMS) == ["body/layers/0/kernel", "body/layers/1/kernel",
                                  "head/bias", "head/kernel"]

    @jax.tree_util.register_dataclass
    @dataclasses.dataclass
    class Head:
        kernel: jax.Array

    assert leaf_paths({"head": Head(jnp.ones(2))}) == ["head/kernel"]
    assert leaf_paths((jnp.ones(1), [jnp.ones(1)])) == ["0", "1/0"]
    model = nnx.Sequential(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    variables = nnx.state(model, nnx.Param)
    assert leaf_paths(variables) == ["layers/0/bias", "layers/0/kernel"]
    assert leaf_paths(as_pure(variables)) == leaf_paths(variables)


@pytest.mark.parametrize(
    ("exclude", "expected"),
    [
        (None, ["body/layers/0/kernel", "body/layers/1/kernel", "head/bias", "head/kernel"]),
        ("head", ["body/layers/0/kernel", "body/layers/1/kernel"]),
        (r"^head/kernel$", ["body/layers/0/kernel", "body/layers/1/kernel", "head/bias"]),
        (["head", r"layers/1/"], ["body/layers/0/kernel"]),
        (re.compile(r"layers/\d+/kernel"), ["head/bias", "head/kernel"]),
        (lambda path, leaf: leaf.ndim < 2, ["body/layers/0/kernel", "body/layers/1/kernel",
                                             "head/kernel"]),
        ({"body": {"layers": [{"kernel": False}, {"kernel": True}]},
          "head": {"kernel": True, "bias": False}}, ["body/layers/0/kernel", "head/bias"]),
    ],
)
def test_exclude_forms(exclude, expected):
    assert clipped_paths(exclude) == expected


def test_excluded_leaves_are_returned_unchanged_even_when_huge():
    transform = agc(0.01, exclude="head")
    updates, _ = transform.update(GRADS, transform.init(PARAMS), PARAMS)
    assert updates["head"]["kernel"] is GRADS["head"]["kernel"]


def test_pattern_matching_nothing_lists_the_paths():
    with pytest.raises(agc_optax.ExcludeError, match=r"'hed' matches no leaf.*'head/kernel'"):
        agc(0.01, exclude="hed").init(PARAMS)
    with pytest.raises(agc_optax.ExcludeError, match="matches no leaf"):
        agc(0.01, exclude=["head", "classifier"]).init(PARAMS)


def test_exclude_errors_have_their_own_type_and_stay_value_errors():
    """Callers tell an ``exclude`` mistake by its type, never by the message's text."""
    assert issubclass(agc_optax.ExcludeError, ValueError)
    with pytest.raises(agc_optax.ExcludeError, match="excludes every leaf"):
        agc(0.01, exclude=".").init(PARAMS)
    with pytest.raises(agc_optax.ExcludeError, match="no entry for leaves"):
        agc(0.01, exclude={"head": {"kernel": True}}).init(PARAMS)


def test_invalid_regex_is_reported():
    with pytest.raises(ValueError, match="not a valid regular expression"):
        agc(0.01, exclude="head(").init(PARAMS)


def test_mask_missing_a_leaf_is_reported():
    with pytest.raises(ValueError, match=r"no entry for leaves.*'head/bias'"):
        agc(0.01, exclude={"body": {"layers": [{"kernel": False}, {"kernel": False}]},
                           "head": {"kernel": True}}).init(PARAMS)


def test_non_bool_exclusion_is_reported():
    with pytest.raises(TypeError, match=r"exclude\(path, leaf\) for leaf '.*' must be a bool, "
                                        r"got str 'yes'"):
        agc(0.01, exclude=lambda path, leaf: "yes").init(PARAMS)
    with pytest.raises(TypeError, match="exclude mask entry for leaf 'head/bias' must be a bool"):
        agc(0.01, exclude={"body": {"layers": [{"kernel": False}, {"kernel": False}]},
                           "head": {"kernel": True, "bias": 1.0}}).init(PARAMS)


def test_concrete_jax_bools_from_an_exclude_callable_are_accepted():
    """Issue 25 item 7: a concrete jnp.bool_ is a bool, not a traced value."""
    assert clipped_paths(lambda path, leaf: jnp.bool_(path.startswith("head/"))) == [
        "body/layers/0/kernel", "body/layers/1/kernel"
    ]


def test_a_traced_exclusion_says_it_is_traced():
    transform = agc(0.01, exclude=lambda path, leaf: jnp.sum(leaf) > 0)
    with pytest.raises(TypeError, match=r"for leaf '.*' is a traced value.*decided when the "
                                        r"update is traced"):
        jax.jit(transform.update)(GRADS, optax.EmptyState(), PARAMS)


def test_none_in_a_mask_or_unit_axes_pytree_is_named_as_none():
    """Issue 25 item 7: a None entry is there, just not a bool or axes."""
    mask = {"body": {"layers": [{"kernel": False}, {"kernel": False}]},
            "head": {"kernel": True, "bias": None}}
    with pytest.raises(ValueError, match=r"exclude mask holds None for leaves \['head/bias'\]"):
        agc(0.01, exclude=mask).init(PARAMS)
    axes = {"body": {"layers": [{"kernel": (0,)}, {"kernel": (0,)}]},
            "head": {"kernel": (0,), "bias": None}}
    with pytest.raises(ValueError, match=r"unit_axes pytree holds None for leaves "
                                         r"\['head/bias'\]"):
        agc(0.01, unit_axes=axes).init(PARAMS)


@pytest.mark.parametrize("axes", [range(1), np.arange(1), [0]], ids=["range", "np.arange", "list"])
def test_unit_axes_rules_may_return_ranges_and_integer_arrays(axes):
    """Issue 25 item 7: these are axes, not hyperparameters from inject_hyperparams."""
    transform = agc(0.01, unit_axes=lambda path, leaf: axes if leaf.ndim == 2 else (0,))
    updates, _ = transform.update(GRADS, transform.init(PARAMS), PARAMS)
    np.testing.assert_allclose(np.linalg.norm(updates["head"]["kernel"], axis=0),
                               0.01 * np.sqrt(3), rtol=1e-6)


def test_axes_of_the_wrong_kind_say_what_they_got():
    with pytest.raises(TypeError, match=r"axes must be an int or a tuple of ints, got float\.$"):
        agc(0.01, unit_axes=lambda path, leaf: 0.5).init(PARAMS)
    with pytest.raises(TypeError, match=r"got ArrayImpl\. If this came through "
                                        r"optax.inject_hyperparams"):
        agc(0.01, unit_axes=lambda path, leaf: jnp.asarray(0)).init(PARAMS)


BAD_CLIPPING = [0.0, -0.1, float("nan"), float("inf")]
BAD_EPS = [-1e-3, float("nan"), float("inf")]
# Issue 25 item 4: NumPy scalars and concrete arrays are checked like Python floats.
AS_NUMBERS = {
    "python": float, "np.float64": np.float64, "np.float32": np.float32,
    "np.array": np.asarray, "jnp.array": jnp.asarray, "shape (1,)": lambda v: jnp.asarray([v]),
}


@pytest.mark.parametrize("kind", AS_NUMBERS)
@pytest.mark.parametrize("clipping", BAD_CLIPPING)
def test_bad_clipping(clipping, kind):
    with pytest.raises(ValueError, match="agc: clipping must be"):
        agc(AS_NUMBERS[kind](clipping))


@pytest.mark.parametrize("kind", AS_NUMBERS)
@pytest.mark.parametrize("eps", BAD_EPS)
def test_bad_eps(eps, kind):
    with pytest.raises(ValueError, match="agc: eps must be"):
        agc(0.01, AS_NUMBERS[kind](eps))


@pytest.mark.parametrize("kind", AS_NUMBERS)
def test_good_hyperparameters_of_every_kind_clip_alike(kind):
    """optax takes shape-(1,) arrays; so does agc, with the same result as a float."""
    make = AS_NUMBERS[kind]
    want, _ = agc(0.01, 1e-3).update(GRADS, None, PARAMS)
    got, _ = agc(make(0.01), make(1e-3)).update(GRADS, None, PARAMS)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_a_traced_nan_clipping_makes_the_update_nan():
    """The documented rule: a NaN λ never disables clipping silently (optax does the same)."""
    update = jax.jit(lambda c: agc(c).update(GRADS, None, PARAMS)[0])
    for leaf in jax.tree.leaves(update(float("nan"))):
        assert np.isnan(np.asarray(leaf)).all()


def test_missing_params_says_how_to_pass_them():
    transform = agc(0.01)
    with pytest.raises(ValueError, match=r"update\(grads, opt_state, params\)"):
        transform.update(GRADS, transform.init(PARAMS))
    chained = optax.chain(agc(0.01), optax.sgd(0.1))
    with pytest.raises(ValueError, match="needs the current parameters"):
        chained.update(GRADS, chained.init(PARAMS))


def test_axes_out_of_range_names_the_leaf():
    with pytest.raises(ValueError, match=r"out of range for leaf 'head/bias' of rank 1"):
        agc(0.01, unit_axes=lambda path, x: (0, 1)).init(PARAMS)
    with pytest.raises(ValueError, match="repeats an axis"):
        agc(0.01, unit_axes=lambda path, x: (0, -x.ndim)).init(PARAMS)
    with pytest.raises(TypeError, match="must be an int or a tuple of ints"):
        agc(0.01, unit_axes=lambda path, x: "all").init(PARAMS)


def test_unknown_layout_string():
    with pytest.raises(ValueError, match="output_first"):
        agc(0.01, unit_axes="channels_last").init(PARAMS)


def test_unit_axes_tree_missing_a_leaf():
    with pytest.raises(ValueError, match=r"no entry for leaves.*'head/bias'"):
        agc(0.01, unit_axes={"head": {"kernel": (0,)}}).init(PARAMS)


def test_structure_mismatch_names_the_leaves():
    grads = {"body": GRADS["body"], "head": {"kernel": GRADS["head"]["kernel"]}}
    with pytest.raises(ValueError, match=r"only in the params: \['head/bias'\]"):
        agc(0.01).update(grads, None, PARAMS)


def test_shape_mismatch_names_the_leaf():
    grads = jax.tree.map(lambda x: x, GRADS)
    grads["head"]["kernel"] = jnp.ones((2, 3))
    with pytest.raises(ValueError, match=r"'head/kernel' has gradient shape \(2, 3\)"):
        agc(0.01).update(grads, None, PARAMS)


def test_integer_leaf_names_the_leaf_and_the_fix():
    params = {"w": jnp.ones((2, 2)), "step": jnp.zeros((), jnp.int32)}
    grads = {"w": jnp.ones((2, 2)), "step": jnp.zeros((), jnp.int32)}
    with pytest.raises(TypeError, match=r"leaf 'step' has dtype int32.*exclude='step'"):
        agc(0.01).update(grads, None, params)
    updates, _ = agc(0.01, exclude="step").update(grads, None, params)
    assert updates["step"].dtype == jnp.int32


def test_track_stats_needs_a_state_error_free_path():
    """With statistics on, the state from init is what update takes."""
    transform = agc(0.01, track_stats=True)
    state = transform.init(PARAMS)
    _, new_state = transform.update(GRADS, state, PARAMS)
    assert set(new_state.leaf_clip_fraction) == set(state.leaf_clip_fraction)


@pytest.mark.parametrize("bad", ["0.01", True, None, jnp.ones(2), jnp.asarray("x" == "x")])
def test_clipping_of_the_wrong_type_is_a_type_error(bad):
    with pytest.raises(TypeError, match="clipping"):
        agc(bad)
    with pytest.raises(TypeError, match="eps"):
        agc(0.01, bad)


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_track_stats_must_be_a_bool(bad):
    with pytest.raises(TypeError, match="track_stats must be True or False"):
        agc(0.01, track_stats=bad)


@pytest.mark.parametrize(
    "exclude",
    [".", ["head", "body"], lambda path, leaf: True,
     {"body": {"layers": [{"kernel": True}, {"kernel": True}]},
      "head": {"kernel": True, "bias": True}}],
    ids=["pattern", "patterns", "callable", "mask"],
)
def test_exclude_that_leaves_nothing_to_clip(exclude):
    with pytest.raises(ValueError, match=r"excludes every leaf.*'\^head/'"):
        agc(0.01, exclude=exclude).init(PARAMS)


@pytest.mark.parametrize("axes", [(0, 1, 2), 0, [0, 1]])
def test_one_tuple_as_unit_axes_suggests_axis(axes):
    with pytest.raises(TypeError, match=re.escape(f"pass axis={axes!r}")):
        agc(0.01, unit_axes=axes).init(PARAMS)


def test_axis_out_of_range_speaks_of_axis():
    with pytest.raises(ValueError, match=r"axis=5, out of range for leaf '.*' of rank 2.*"
                                         r"pass unit_axes="):
        agc(0.01, axis=5).init(PARAMS)


def test_axis_with_unit_axes_is_refused():
    with pytest.raises(ValueError, match=r"either unit_axes .* or optax's axis="):
        agc(0.01, 1e-3, 0, unit_axes={"w": (0,)})
    with pytest.raises(ValueError, match="not both"):
        agc(0.01, axis=(0,), unit_axes="output_first")


@pytest.mark.parametrize("argument", ["exclude", "unit_axes"])
def test_array_valued_structural_arguments_get_the_static_args_hint(argument):
    with pytest.raises(TypeError, match=rf"{argument} is an array.*static_args"):
        agc(0.01, **{argument: jnp.asarray([0])}).init(PARAMS)


def test_duplicate_path_strings_are_refused():
    params = {"a/b": jnp.ones(2), "a": {"b": jnp.ones(2)}}
    with pytest.raises(ValueError, match=r"share the path string 'a/b'"):
        agc(0.01).init(params)
    with pytest.raises(ValueError, match=r"share the path string 'a/b'"):
        agc(0.01).update(params, None, params)


def test_shape_mismatch_of_an_excluded_leaf_is_an_error():
    grads = jax.tree.map(lambda x: x, GRADS)
    grads["head"]["kernel"] = jnp.ones((2, 3))
    with pytest.raises(ValueError, match=r"'head/kernel' has gradient shape \(2, 3\)"):
        agc(0.01, exclude="^head/kernel$").update(grads, None, PARAMS)


class QKV(NamedTuple):
    query: jax.Array
    key: jax.Array
    value: jax.Array


def test_a_field_named_value_keeps_its_name_in_exclude_and_statistics():
    """Issue 25 item 5: only nnx's Variable wrapper drops its `.value` key."""
    params = {"attn": QKV(jnp.ones((4, 2)), jnp.ones((4, 2)), jnp.ones((4, 2)))}
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 10.0), params)
    transform = agc(0.01, exclude="^attn/value$", track_stats=True)
    updates, state = transform.update(grads, transform.init(params), params)
    assert set(state.leaf_clip_fraction) == {"attn/query", "attn/key"}
    np.testing.assert_array_equal(updates["attn"].value, grads["attn"].value)
    assert not np.array_equal(updates["attn"].query, grads["attn"].query)
    axes = {"attn": QKV((0,), (0,), (0, 1))}
    updates, _ = agc(0.01, unit_axes=axes).update(grads, None, params)
    np.testing.assert_allclose(np.linalg.norm(updates["attn"].value), 0.01 * np.sqrt(8),
                               rtol=1e-6)


def test_nnx_variables_named_value_and_holding_value_fields():
    """An nnx module attribute called `value` keeps it; the Variable's own `.value` goes."""

    class Attention(nnx.Module):
        def __init__(self, rngs):
            self.value = nnx.Linear(2, 3, rngs=rngs)

    state = nnx.state(Attention(nnx.Rngs(0)), nnx.Param)
    transform = agc(0.01, exclude="^value/bias$", track_stats=True)
    assert set(transform.init(state).leaf_clip_fraction) == {"value/kernel"}
    assert set(transform.init(as_pure(state)).leaf_clip_fraction) == {"value/kernel"}
