"""DeepMind's NFNet and NF-ResNet weights in our NNX networks.

DeepMind's checkpoints hold the Haiku parameters as a nested dict ``{module path:
{parameter name: array}}``, e.g. ``{"NFNet/~/nf_block_3/~/conv1": {"w": …, "gain": …,
"bias": …}}``. :func:`deepmind_name` maps each of our parameter paths onto that name;
:func:`from_deepmind` builds our network and fills it, checking that every entry is used
exactly once with its shape; :func:`read_checkpoint` reads DeepMind's released files
(``F0_haiku.npz`` … are dill pickles of the dict, despite their suffix) and plain ``.npz``
files keyed ``module/param``.

Unpickling runs code chosen by the file's author: read pickles only from DeepMind's own
release.

References:
  google-deepmind/deepmind-research, ``nfnets/`` (the Haiku modules and their names; the
  released checkpoints are linked from its README).
"""

import pathlib
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from agc_optax import path_to_str
from examples.common.errors import UserError
from examples.nf_resnet.nfnet import HEAD_INIT, NFNet
from examples.nf_resnet.nfnet_specs import VARIANTS, NFNetSpec

HaikuParams = Mapping[str, Mapping[str, Any]]

# Our parameter name -> Haiku's, for WS convs and for linear layers.
_CONV_PARAMS = {"kernel": "w", "gain": "gain", "bias": "bias"}
_LINEAR_PARAMS = {"kernel": "w", "bias": "b"}


class CheckpointMismatchError(UserError):
    """A checkpoint's entries do not fit the network: one missing, unused or mis-shaped."""


def haiku_names(spec: NFNetSpec) -> tuple[str, str, str]:
    """Returns ``(network, block prefix, stem conv prefix)`` of DeepMind's module names."""
    if spec.stem == "deep":
        return "NFNet", "nf_block", "stem_conv"
    return "NF_ResNet", "nf_res_block", "initial_conv"


def deepmind_name(path: str, spec: NFNetSpec) -> tuple[str, str]:
    """Returns DeepMind's ``(module path, parameter name)`` of one of our parameters.

    Args:
      path: our parameter's path, e.g. ``"blocks/3/convs/1/kernel"``.
      spec: the network's row (which of DeepMind's classes and block layouts it is).

    Returns:
      e.g. ``("NFNet/~/nf_block_3/~/conv1", "w")``.
    """
    network, block_prefix, stem_prefix = haiku_names(spec)
    *module, param = path.split("/")
    if module == []:
        raise ValueError(f"{path!r} is not a parameter of an NFNet.")
    if module[0] == "stem":
        name = f"{stem_prefix}{module[2]}" if spec.stem == "deep" else stem_prefix
        return f"{network}/~/{name}", _CONV_PARAMS[param]
    if module[0] == "final_conv":
        return f"{network}/~/final_conv", _CONV_PARAMS[param]
    if module[0] == "head":
        return f"{network}/~/linear", _LINEAR_PARAMS[param]
    index = int(module[1])
    block = f"{network}/~/{block_prefix}" + (f"_{index}" if index else "")
    if len(module) == 2:
        return block, param  # skip_gain
    if module[2] == "squeeze_excite":
        linear = {"reduce": "linear", "expand": "linear_1"}[module[3]]
        return f"{block}/~/squeeze_excite/~/{linear}", _LINEAR_PARAMS[param]
    if module[2] == "shortcut":
        return f"{block}/~/conv_shortcut", _CONV_PARAMS[param]
    convs = ["conv0", "conv1", "conv1b", "conv2"] if spec.two_convs else ["conv0", "conv1",
                                                                         "conv2"]
    return f"{block}/~/{convs[int(module[3])]}", _CONV_PARAMS[param]


def checkpoint_classes(params: HaikuParams, spec: NFNetSpec) -> int:
    """Returns the number of classes of a checkpoint's classifier.

    Raises:
      CheckpointMismatchError: it has no classifier bias of ``spec``'s kind of network.
    """
    module = f"{haiku_names(spec)[0]}/~/linear"
    try:
        return int(np.shape(params[module]["b"])[0])
    except (KeyError, IndexError, TypeError):
        raise CheckpointMismatchError(f"The checkpoint lacks {module}/b, the classifier's "
                                      "bias; it is not an NFNet of this kind.") from None


def deepmind_values(model: NFNet, params: HaikuParams, spec: NFNetSpec, *,
                    keep_head: bool = False) -> dict[str, np.ndarray]:
    """Returns DeepMind's array for each of ``model``'s parameters, every entry used once.

    Args:
      model: our network built from ``spec`` (abstract or concrete: only shapes are read).
      params: DeepMind's nested dict.
      spec: the network's row.
      keep_head: leave out the classifier (a new head) and ignore the checkpoint's.

    Returns:
      ``{our path: array}`` for every parameter (but the head's with ``keep_head``).

    Raises:
      CheckpointMismatchError: an entry is missing, unused or mis-shaped; the message names
        it.
    """
    flat = {f"{module}/{name}": value for module, entries in params.items()
            for name, value in entries.items()}
    values, used = {}, set()
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]:
        path = path_to_str(key_path)
        name = "/".join(deepmind_name(path, spec))
        used.add(name)
        if keep_head and path.startswith("head/"):
            continue
        if name not in flat:
            raise CheckpointMismatchError(f"The checkpoint lacks {name} (our {path}).")
        value = np.asarray(flat[name])
        if value.shape != leaf.shape:
            raise CheckpointMismatchError(f"The checkpoint's {name} has shape {value.shape}; "
                                          f"our {path} needs {tuple(leaf.shape)}.")
        values[path] = value.astype(leaf.dtype)
    unused = sorted(flat.keys() - used)
    if unused:
        raise CheckpointMismatchError(f"The checkpoint's {unused[0]} fits no parameter of the "
                                      f"network ({len(unused)} unused entries).")
    return values


def materialize(model: NFNet, values: dict[str, np.ndarray], seed: int) -> NFNet:
    """Turns an abstract network (``nnx.eval_shape``) into a concrete one.

    Parameters take ``values`` (by path); a parameter absent from them (a new head) and
    the random streams are drawn from ``seed``. Nothing is drawn only to be overwritten:
    building an NFNet eagerly compiles one initialiser per parameter shape, minutes on a
    busy CPU.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    key = jax.random.key(seed)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    head = nnx.Linear(model.head.in_features, model.head.out_features,
                      kernel_init=HEAD_INIT, rngs=nnx.Rngs(seed))
    fresh = {"head/kernel": head.kernel[...], "head/bias": head.bias[...]}
    concrete = [values[path] if path in values else fresh[path]
                for path in (path_to_str(p) for p, _ in leaves)]
    streams = [jax.random.fold_in(key, i) if jax.dtypes.issubdtype(s.dtype, jax.dtypes.prng_key)
               else jnp.zeros(s.shape, s.dtype) for i, s in enumerate(jax.tree.leaves(rest))]
    return nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, concrete),
                     jax.tree.unflatten(jax.tree.structure(rest), streams))


def from_deepmind(haiku_params: HaikuParams, name: str | NFNetSpec, *,
                  num_classes: int | None = None, seed: int = 0) -> NFNet:
    """Builds our network holding DeepMind's parameters, in evaluation mode.

    ``model(images)`` on NHWC float32 images, normalised as DeepMind's input pipeline does
    (``(pixel − mean) / std`` with ImageNet's per-channel mean and standard deviation),
    gives DeepMind's logits.

    Args:
      haiku_params: DeepMind's nested dict ``{module path: {parameter name: array}}``.
      name: a key of :data:`~examples.nf_resnet.nfnet_specs.VARIANTS` (``"nfnet_f0"``,
        ``"nf_resnet_50"``) or a spec row.
      num_classes: outputs of the classifier (``None``: the checkpoint's). Another number
        gives a freshly initialised head, for fine-tuning.
      seed: seeds the fresh head and the random streams.

    Returns:
      The network, with dropout and stochastic depth off.

    Raises:
      CheckpointMismatchError: an entry is missing, unused or mis-shaped (named).
      ValueError: ``name`` is not a variant.
    """
    if isinstance(name, str):
        if name not in VARIANTS:
            raise ValueError(f"Unknown network {name!r}; choose from {list(VARIANTS)}.")
        name = VARIANTS[name]
    saved_classes = checkpoint_classes(haiku_params, name)
    num_classes = saved_classes if num_classes is None else num_classes
    model = nnx.eval_shape(lambda: NFNet(name, num_classes, rngs=nnx.Rngs(seed)))
    values = deepmind_values(model, haiku_params, name, keep_head=num_classes != saved_classes)
    return nnx.view(materialize(model, values, seed), deterministic=True)


def nest(flat: Mapping[str, Any], source: str) -> dict[str, dict[str, np.ndarray]]:
    """Turns ``{"module/param": array}`` into DeepMind's ``{module: {param: array}}``.

    Raises:
      CheckpointMismatchError: a key has no ``/``.
    """
    nested: dict[str, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        module, slash, param = key.rpartition("/")
        if not slash:
            raise CheckpointMismatchError(f"{source}: key {key!r} is not 'module/param'.")
        nested.setdefault(module, {})[param] = np.asarray(value)
    return nested


def read_checkpoint(path: str | pathlib.Path) -> dict[str, dict[str, np.ndarray]]:
    """Reads DeepMind's parameters from a released file or a plain ``.npz``.

    A zip archive (``np.savez``) is read as arrays keyed ``module/param``; anything else as
    a dill pickle of the nested dict, which is how DeepMind released ``F0_haiku.npz`` …
    ``F6_haiku.npz``. Unpickling runs code the file's author chose: read pickles only from
    DeepMind's release.

    Args:
      path: the file.

    Returns:
      ``{module path: {parameter name: array}}``.

    Raises:
      UserError: the file is missing, or is neither format; dill is not installed.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"--checkpoint {path}: no such file.")
    if zipfile.is_zipfile(path):
        with np.load(path, allow_pickle=False) as archive:
            return nest({key: archive[key] for key in archive.files}, str(path))
    try:
        import dill  # Only the pickled checkpoints need it.
    except ImportError:
        raise UserError(f"{path} is a pickle (DeepMind's format); reading it needs dill: pip "
                        "install 'agc-optax[examples]'.") from None
    try:
        with open(path, "rb") as file:
            loaded = dill.load(file)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError) as error:
        raise UserError(f"{path} is neither an .npz archive nor a pickle ({error}).") from None
    if not (isinstance(loaded, Mapping)
            and all(isinstance(v, Mapping) for v in loaded.values())):
        raise UserError(f"{path} holds a {type(loaded).__name__}, not DeepMind's nested dict "
                        "{module path: {parameter name: array}}.")
    return {module: {k: np.asarray(v) for k, v in entries.items()}
            for module, entries in loaded.items()}
