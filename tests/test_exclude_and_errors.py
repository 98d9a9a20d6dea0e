"""Leaf exclusion, path strings, and every error a user can hit."""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax_compat import as_pure

from agc_optax import agc, path_to_str

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
    with pytest.raises(ValueError, match=r"'hed' matches no leaf.*'head/kernel'"):
        agc(0.01, exclude="hed").init(PARAMS)
    with pytest.raises(ValueError, match="matches no leaf"):
        agc(0.01, exclude=["head", "classifier"]).init(PARAMS)


def test_invalid_regex_is_reported():
    with pytest.raises(ValueError, match="not a valid regular expression"):
        agc(0.01, exclude="head(").init(PARAMS)


def test_mask_missing_a_leaf_is_reported():
    with pytest.raises(ValueError, match=r"no entry for leaves.*'head/bias'"):
        agc(0.01, exclude={"body": {"layers": [{"kernel": False}, {"kernel": False}]},
                           "head": {"kernel": True}}).init(PARAMS)


def test_non_bool_exclusion_is_reported():
    with pytest.raises(TypeError, match="must be a Python bool"):
        agc(0.01, exclude=lambda path, leaf: jnp.asarray(True)).init(PARAMS)


@pytest.mark.parametrize("clipping", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_clipping(clipping):
    with pytest.raises(ValueError, match="clipping"):
        agc(clipping)


@pytest.mark.parametrize("eps", [-1e-3, float("nan")])
def test_bad_eps(eps):
    with pytest.raises(ValueError, match="eps"):
        agc(0.01, eps)


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
