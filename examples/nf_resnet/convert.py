"""Converts DeepMind's NFNet or NF-ResNet weights into a run directory of this example.

Run it from the repository root::

    python -m examples.nf_resnet.convert --checkpoint F0_haiku.npz --model nfnet_f0 --workdir f0

The work directory then holds a ``config.json`` and a step-0 checkpoint, as a training run
does: ``python -m examples.nf_resnet.evaluate --workdir f0`` evaluates it on
the configured dataset, and ``python -m examples.nf_resnet.main --init-from
f0 …`` fine-tunes from it (with a new classifier when the dataset has
another number of classes than the checkpoint). The checkpoint is DeepMind's released file
(a dill pickle: convert only files from DeepMind's release, since unpickling runs code) or
a plain ``.npz`` keyed ``module/param``.
"""

import argparse
import logging
import pathlib
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from examples.common import checkpointing, errors, input_pipeline, launch
from examples.common import workdir as workdir_lib
from examples.nf_resnet import image_data, nfnet_specs, pretrained, train
from examples.nf_resnet.configs import DATASET_CHOICES, TrainConfig

PROG = "python -m examples.nf_resnet.convert"


def parse_flags(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command's flags."""
    parser = argparse.ArgumentParser(prog=PROG, description="Convert DeepMind's NFNet or "
                                     "NF-ResNet weights into a run directory that evaluate "
                                     "reads and --init-from starts from.")
    parser.add_argument("--checkpoint", type=pathlib.Path, required=True,
                        help="DeepMind's file (e.g. F0_haiku.npz, a dill pickle) or an .npz "
                        "keyed module/param")
    parser.add_argument("--model", required=True, choices=list(nfnet_specs.VARIANTS),
                        help="the network the checkpoint holds")
    parser.add_argument("--workdir", type=pathlib.Path, required=True,
                        help="the directory to write (config.json and a step-0 checkpoint)")
    parser.add_argument("--dataset", default=TrainConfig.dataset, choices=DATASET_CHOICES,
                        help="the dataset evaluate and fine-tuning use, e.g. image_folder "
                        "with --data-dir (default: %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="where the dataset's files are (default: the usual places)")
    parser.add_argument("--test-examples", type=int, default=None,
                        help="evaluate on only the first this many test examples")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a run already in --workdir")
    return parser.parse_args(argv)


def convert(checkpoint: str | pathlib.Path, config: TrainConfig, workdir: str | pathlib.Path,
            *, overwrite: bool = False) -> int:
    """Writes ``config.json`` and a step-0 checkpoint holding DeepMind's weights.

    Args:
      checkpoint: DeepMind's file or a plain ``.npz``.
      config: the run's configuration (its ``model``, ``dataset``, ``data_dir``, …).
      workdir: the directory to write.
      overwrite: replace a run already there.

    Returns:
      The number of parameters written.

    Raises:
      UserError: an unreadable file, a checkpoint that does not fit ``config.model``
        (naming the entry), a dataset without three channels, or a work directory that
        holds another run.
    """
    workdir = pathlib.Path(workdir).absolute()
    params = pretrained.read_checkpoint(checkpoint)
    data = image_data.load_dataset(config)
    if data.in_features != 3:
        raise errors.UserError(f"--dataset {config.dataset} has {data.in_features} "
                               "channel(s); DeepMind's networks take RGB images.")
    model = pretrained.from_deepmind(params, config.model, num_classes=data.num_classes,
                                     seed=config.seed)
    spec = nfnet_specs.VARIANTS[config.model]
    if data.num_classes != pretrained.checkpoint_classes(params, spec):
        logging.info("--dataset %s has %d classes: the classifier is new (fine-tune it with "
                     "--init-from).", config.dataset, data.num_classes)
    steps_per_epoch = input_pipeline.steps_per_epoch(data.num_train_examples, config.batch_size)
    tx, _ = train.create_optimizer(config, config.steps or config.epochs * steps_per_epoch,
                                    steps_per_epoch)
    state_params = nnx.state(model, nnx.Param)
    ema_params = state_params if config.ema_decay > 0 else nnx.State({})
    state = train.TrainState(jnp.zeros((), jnp.int32), state_params,
                             nnx.state(model, nnx.BatchStat), tx.init(state_params), ema_params)
    workdir_lib.prepare(workdir, config, resume=False, overwrite=overwrite)
    workdir_lib.write_config(workdir, config)
    checkpointer = checkpointing.Checkpointer(workdir / workdir_lib.CHECKPOINTS)
    try:
        checkpointer.save(0, state, {"converted_from": str(checkpoint)})
    finally:
        checkpointer.close()
    return sum(leaf.size for leaf in jax.tree.leaves(state_params))


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the flags, converts; returns the exit status (2 after a user error)."""
    args = parse_flags(argv)
    launch.setup_logging()
    config = TrainConfig(model=args.model, dataset=args.dataset, data_dir=args.data_dir,
                         test_examples=args.test_examples)

    def run() -> int:
        count = convert(args.checkpoint, config, args.workdir, overwrite=args.overwrite)
        print(f"{args.workdir.absolute()}: {args.model} from {args.checkpoint} ({count:,} "
              f"parameters). Evaluate: python -m examples.nf_resnet.evaluate --workdir "
              f"{args.workdir}")
        return 0

    return errors.exit_on_user_error(run)


if __name__ == "__main__":
    sys.exit(main())
