"""A trained run, restored from its work directory: its test accuracy, its model for prediction.

The run's ``config.json`` rebuilds the model and the data exactly as trained; the newest
checkpoint (or a chosen step) gives the parameters. :func:`load` returns a
:class:`TrainedModel` that maps uint8 images to logits; :func:`main` is the command line
of each family's ``evaluate`` module.
"""

import argparse
import dataclasses
import importlib
import importlib.util
import logging
import pathlib
import pkgutil
import re
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import jax
import numpy as np
from flax import nnx

from agc_optax import path_to_str
from examples.common import checkpointing, errors, input_pipeline, launch
from examples.common import workdir as workdir_lib


def _examples_with_fields(names: set[str]) -> list[str]:
    """The examples (``examples.<name>.configs.TrainConfig``) whose config has all ``names``."""
    import examples

    found = []
    for info in pkgutil.iter_modules(examples.__path__):
        configs = f"examples.{info.name}.configs"
        if info.ispkg and importlib.util.find_spec(configs) is not None:
            config_class = importlib.import_module(configs).TrainConfig
            if names <= {f.name for f in dataclasses.fields(config_class)}:
                found.append(info.name)
    return found


def _check_made_by(example: str, config_class: type, workdir: pathlib.Path,
                   stored: dict[str, Any]) -> None:
    """Refuses a run of another example in one line naming that example.

    Raises:
      UserError: the stored configuration has fields that ``config_class`` lacks.
    """
    unknown = sorted(set(stored) - {f.name for f in dataclasses.fields(config_class)})
    if not unknown:
        return
    makers = [name for name in _examples_with_fields(set(stored)) if name != example]
    made_by = (f"the {makers[0]} example (evaluate it with python -m examples.{makers[0]}"
               ".evaluate)" if makers else "no example of this version")
    raise errors.UserError(f"--workdir {workdir} holds a run of {made_by}, not of the "
                           f"{example} example: its {workdir_lib.CONFIG} has "
                           f"{', '.join(unknown[:3])}, which {example}'s config lacks.")


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A run's model with the parameters of one checkpoint, in evaluation mode.

    Attributes:
      config: the run's configuration (as trained, up to overrides passed to :func:`load`).
      step: the checkpoint's step.
      train: the example's ``train`` module (its ``evaluate``).
      setup: the data, the restored state and the jitted steps (the example's
        ``train.Setup``); ``setup.data`` holds the test images.
      model: the ``nnx.Module`` in evaluation mode (no dropout; BatchNorm's running
        averages); it takes images normalised as in training (use :meth:`predict`).
    """

    config: Any
    step: int
    train: ModuleType
    setup: Any
    model: nnx.Module

    def predict(self, images: np.ndarray) -> jax.Array:
        """Returns the logits of uint8 images ``(N, H, W, C)``, normalised as in training."""
        static = self.setup.static
        return self.model(input_pipeline.normalize(images, static.mean, static.std))

    def evaluate(self) -> dict[str, float]:
        """Returns ``test_loss`` and ``test_accuracy`` over the configured test images."""
        setup = self.setup
        return self.train.evaluate(setup.eval_fn, setup.state, setup.data, setup.mesh.batch)


def load(train: ModuleType, config_class: type, workdir: str | pathlib.Path,
         step: int | None = None, **overrides: Any) -> TrainedModel:
    """Restores a run's model from its work directory.

    Args:
      train: the example's ``train`` module (``set_up``, ``evaluate``).
      config_class: the family's config dataclass.
      workdir: the run's ``--workdir``.
      step: the checkpoint to restore (``None``: the newest).
      **overrides: config fields to change, e.g. ``test_examples=None`` to evaluate on the
        whole test set or ``data_dir`` to read the data elsewhere.

    Returns:
      The trained model.

    Raises:
      UserError: ``workdir`` holds no run configuration or no such checkpoint.
    """
    workdir = pathlib.Path(workdir).absolute()
    stored = workdir_lib.stored_config(workdir)
    if stored is None:
        raise errors.UserError(f"--workdir {workdir} holds no {workdir_lib.CONFIG}: pass the "
                               "--workdir of a training run.")
    _check_made_by(example_name(train), config_class, workdir, stored)
    config = dataclasses.replace(config_class(**stored), **overrides)
    checkpointer = checkpointing.Checkpointer(workdir / workdir_lib.CHECKPOINTS, read_only=True)
    try:
        saved = checkpointer.all_steps()
        step = saved[-1] if step is None and saved else step
        if step not in saved:
            raise errors.UserError(f"{checkpointer.directory} holds no checkpoint of step "
                                   f"{step} (saved steps: {saved}); pass --step of one.")
        setup = train.set_up(config)
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), setup.state)
        state, _ = checkpointer.restore(step, abstract)
    finally:
        checkpointer.close()
    setup = setup._replace(state=state)
    model = nnx.view(setup.static.model(state.params, state.batch_stats), deterministic=True,
                     use_running_average=True, raise_if_not_found=False)
    return TrainedModel(config, step, train, setup, model)


def example_name(train: ModuleType) -> str:
    """``"nf_resnet"`` for ``examples.nf_resnet.train``: the example a train module belongs to."""
    return train.__name__.split(".")[-2]


def describe_params(model: nnx.Module, regex: re.Pattern[str]) -> list[str]:
    """One line per parameter whose path matches ``regex``: its values or its norm.

    Args:
      model: the restored model.
      regex: searched for in each ``nnx.Param``'s path string (``blocks/0/skip_gain``),
        as ``agc(exclude=...)`` reads it.

    Returns:
      ``path shape: values`` for parameters of at most 4 elements, ``path shape: norm N``
      for larger ones, in path order.

    Raises:
      UserError: ``regex`` matches no parameter.
    """
    leaves = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]
    named = [(path_to_str(path), np.asarray(leaf)) for path, leaf in leaves]
    lines = []
    for name, value in named:
        if not regex.search(name):
            continue
        shown = (" ".join(f"{v:.4g}" for v in value.ravel()) if value.size <= 4
                 else f"norm {np.linalg.norm(value.astype(np.float64)):.4g}")
        lines.append(f"{name} {value.shape}: {shown}")
    if not lines:
        raise errors.UserError(f"--params {regex.pattern!r} matches no parameter; paths look "
                               f"like {named[0][0]!r} and {named[-1][0]!r}.")
    return lines


def _regex(pattern: str) -> re.Pattern[str]:
    """``--params``'s type: the compiled pattern, or argparse's one-line error."""
    try:
        return re.compile(pattern)
    except re.error as error:
        raise argparse.ArgumentTypeError(f"{pattern!r} is not a regular expression "
                                         f"({error})") from None


def parse_flags(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    """The flags of an ``evaluate`` command line."""
    parser = argparse.ArgumentParser(prog=prog, description="Evaluate a trained run's "
                                     "checkpoint on the test set.")
    parser.add_argument("--workdir", type=pathlib.Path, required=True,
                        help="the --workdir of a training run")
    parser.add_argument("--step", type=int, default=None,
                        help="the checkpoint's step (default: the newest)")
    parser.add_argument("--all-test-examples", action="store_true",
                        help="evaluate on the whole test set, not the run's --test-examples")
    parser.add_argument("--data-dir", default=None,
                        help="read the dataset from here (default: as the run did)")
    parser.add_argument("--params", metavar="REGEX", type=_regex, default=None,
                        help="also print the parameters whose path matches REGEX (values of "
                        "those with at most 4 elements, else their norm), e.g. skip_gain")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None, *, prog: str, train: ModuleType,
         config_class: type) -> int:
    """Restores a run's checkpoint and prints its test accuracy; returns the exit status.

    Args:
      argv: the arguments (``None``: ``sys.argv``).
      prog: the program's name in the usage line.
      train: the example's ``train`` module.
      config_class: the family's config dataclass.

    Returns:
      0, or 2 after a user error (printed as one line).
    """
    args = parse_flags(argv, prog)
    launch.setup_logging()
    logging.getLogger("absl").setLevel(logging.ERROR)  # Orbax's notes on read-only mode.
    overrides = {"test_examples": None} if args.all_test_examples else {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir

    def run() -> int:
        trained = load(train, config_class, args.workdir, args.step, **overrides)
        result = trained.evaluate()
        print(f"{args.workdir.absolute()} step {trained.step}: test_accuracy="
              f"{result['test_accuracy']:.4f} test_loss={result['test_loss']:.4f} on "
              f"{trained.setup.data.num_eval_examples} test images")
        if args.params is not None:
            print("\n".join(describe_params(trained.model, args.params)))
        return 0

    return errors.exit_on_user_error(run)
