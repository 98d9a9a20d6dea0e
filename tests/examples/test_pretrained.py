"""DeepMind's weights in our networks: the logits of DeepMind's own code, and bad checkpoints.

``tests/data/deepmind_nfnets`` holds tiny NFNets and NF-ResNets run by DeepMind's Haiku
code (random weights, eval mode): loaded with :func:`pretrained.from_deepmind`, our
networks must give the same logits.
"""

import pickle

import dill
import jax
import numpy as np
import pytest
from flax import nnx

from agc_optax import path_to_str
from examples.common.errors import UserError
from examples.nf_resnet import pretrained
from helpers import deepmind_fixtures

CONV = "NFNet/~/nf_block_1/~/conv1b"


@pytest.fixture(scope="module", params=deepmind_fixtures.TINY)
def fixture(request) -> deepmind_fixtures.Fixture:
    return deepmind_fixtures.load(request.param)


@pytest.fixture(scope="module")
def nfnet_fixture() -> deepmind_fixtures.Fixture:
    return deepmind_fixtures.load("nfnet_tiny")


def test_fixture_logits_through_from_deepmind(fixture):
    model = pretrained.from_deepmind(fixture.params, fixture.spec)
    n_params = sum(v.size for v in fixture.flat_params().values())
    assert n_params == fixture.meta["params"]
    logits = deepmind_fixtures.apply(model, fixture.x)
    deepmind_fixtures.assert_logits_close(logits, fixture.logits)
    # The bound, and a tighter one: the same float32 operations in the same order
    # agree to about 1e-7 here, and a plain ReLU in squeeze-excite swapped for a GELU moves
    # the NFNet's logits by 8e-5, inside the bound but not this one.
    np.testing.assert_allclose(logits, fixture.logits, rtol=0, atol=1e-5)


def test_another_number_of_classes_gets_a_fresh_head(fixture):
    model = pretrained.from_deepmind(fixture.params, fixture.spec, num_classes=3)
    assert model.head.kernel.shape[-1] == 3
    np.testing.assert_array_equal(np.asarray(model.head.bias[...]), 0.0)
    kernel = np.asarray(model.head.kernel[...])
    assert 0.005 < kernel.std() < 0.02  # N(0, 0.01²), not the checkpoint's.
    loaded = pretrained.from_deepmind(fixture.params, fixture.spec)
    ours, theirs = (flat_params(m) for m in (model, loaded))
    assert ours.keys() == theirs.keys()
    for path in ours.keys() - {"head/kernel", "head/bias"}:
        np.testing.assert_array_equal(ours[path], theirs[path])


def flat_params(model):
    leaves = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]
    return {path_to_str(p): np.asarray(leaf) for p, leaf in leaves}


def one_line_error(params, spec, match):
    with pytest.raises(pretrained.CheckpointMismatchError, match=match) as info:
        pretrained.from_deepmind(params, spec)
    assert "\n" not in str(info.value)


def copy(params):
    return {module: dict(entries) for module, entries in params.items()}


def test_a_missing_entry_is_named(nfnet_fixture):
    params = copy(nfnet_fixture.params)
    del params[CONV]["gain"]
    one_line_error(params, nfnet_fixture.spec,
                   f"lacks {CONV}/gain \\(our blocks/1/convs/2/gain\\)")


def test_an_unused_entry_is_named(nfnet_fixture):
    params = copy(nfnet_fixture.params)
    params["NFNet/~/nf_block_9/~/conv0"] = {"w": np.zeros((1, 1, 4, 4), np.float32)}
    one_line_error(params, nfnet_fixture.spec,
                   "NFNet/~/nf_block_9/~/conv0/w fits no parameter of the network")


def test_a_misshaped_entry_is_named(nfnet_fixture):
    params = copy(nfnet_fixture.params)
    params[CONV]["w"] = params[CONV]["w"][:, :, :8]
    one_line_error(params, nfnet_fixture.spec,
                   f"{CONV}/w has shape \\(3, 3, 8, 32\\); our blocks/1/convs/2/kernel needs "
                   "\\(3, 3, 16, 32\\)")


def test_a_checkpoint_of_the_other_family_is_refused(fixture):
    other = "nf_resnet_tiny" if fixture.meta["kind"] == "nfnet" else "nfnet_tiny"
    with pytest.raises(pretrained.CheckpointMismatchError, match="classifier's bias"):
        pretrained.from_deepmind(fixture.params, deepmind_fixtures.load(other).spec)


def test_an_unknown_name_is_refused(nfnet_fixture):
    with pytest.raises(ValueError, match="Unknown network 'nfnet_f9'"):
        pretrained.from_deepmind(nfnet_fixture.params, "nfnet_f9")


def test_reads_a_plain_npz_keyed_module_param(tmp_path, nfnet_fixture):
    path = tmp_path / "tiny.npz"
    np.savez(path, **nfnet_fixture.flat_params())
    read = pretrained.read_checkpoint(path)
    assert read.keys() == nfnet_fixture.params.keys()
    np.testing.assert_array_equal(read[CONV]["w"], nfnet_fixture.params[CONV]["w"])


def test_reads_a_dill_pickle_like_deepmind_release(tmp_path, nfnet_fixture):
    path = tmp_path / "F0_haiku.npz"  # DeepMind's pickles carry the .npz suffix.
    with open(path, "wb") as file:
        dill.dump(nfnet_fixture.params, file)
    model = pretrained.from_deepmind(pretrained.read_checkpoint(path), nfnet_fixture.spec)
    deepmind_fixtures.assert_logits_close(deepmind_fixtures.apply(model, nfnet_fixture.x),
                                          nfnet_fixture.logits)


@pytest.mark.parametrize(("content", "match"), [
    (b"not a checkpoint", "neither an .npz archive nor a pickle"),
    (pickle.dumps([1, 2]), "holds a list, not DeepMind's nested dict"),
])
def test_a_file_of_another_format_is_a_user_error(tmp_path, content, match):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(UserError, match=match):
        pretrained.read_checkpoint(path)


def test_a_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        pretrained.read_checkpoint(tmp_path / "F0_haiku.npz")


def test_an_npz_key_without_a_module_is_named(tmp_path):
    path = tmp_path / "flat.npz"
    np.savez(path, w=np.zeros(3))
    with pytest.raises(pretrained.CheckpointMismatchError, match="key 'w' is not"):
        pretrained.read_checkpoint(path)
