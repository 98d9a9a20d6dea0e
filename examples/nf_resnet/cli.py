"""The command line of ``python -m examples.nf_resnet.train``: a preset plus overrides.

Every flag but ``--preset``, ``--workdir`` and ``--resume`` overrides one field of the
preset's :class:`~examples.nf_resnet.configs.TrainConfig`, and the resulting config is
recorded in ``summary.json``.
"""

import argparse
import dataclasses
import pathlib
from collections.abc import Sequence

from examples.nf_resnet import configs, datasets, models

# Flag name -> TrainConfig field, for the flags that override the preset.
_OVERRIDES = {
    "dataset": "dataset", "data_dir": "data_dir", "model": "model",
    "batch_size": "batch_size", "microbatch_size": "microbatch_size", "lr": "lr",
    "epochs": "epochs", "steps": "steps",
    "clipping": "clipping", "agc_eps": "agc_eps", "agc_exclude": "agc_exclude",
    "clip_global_norm": "clip_global_norm", "seed": "seed",
    "dtype": "dtype", "weight_decay": "weight_decay", "train_examples": "train_examples",
    "test_examples": "test_examples", "warmup_epochs": "warmup_epochs",
    "log_every_steps": "log_every_steps",
}


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser (the flags are a contract other tools rely on)."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.nf_resnet.train",
        description="Train a Flax NNX NF-ResNet with adaptive gradient clipping (AGC).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--preset", choices=configs.PRESETS, default="smoke",
                        help="defaults for every other flag (examples/nf_resnet/configs/)")
    parser.add_argument("--workdir", type=pathlib.Path, default=None,
                        help="output directory (default: runs/<preset>)")
    parser.add_argument("--dataset", choices=sorted(datasets.SOURCES))
    parser.add_argument("--data-dir", help="directory searched first for the dataset files")
    parser.add_argument("--model", choices=sorted(models.VARIANTS))
    parser.add_argument("--batch-size", type=int, help="global batch size")
    parser.add_argument("--microbatch-size", type=int,
                        help="sum gradients over microbatches of this size (gradient "
                             "accumulation; AGC still clips the whole batch's gradient)")
    parser.add_argument("--lr", type=float, help="base learning rate (peak = lr·batch/256)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int)
    length.add_argument("--steps", type=int, help="overrides the preset's epochs")
    parser.add_argument("--clipping", type=float, help="AGC's λ; 0 turns AGC off")
    parser.add_argument("--agc-eps", type=float,
                        help="AGC's ε: units with ‖W‖ < ε are compared with λ·ε")
    parser.add_argument("--agc-exclude",
                        help="regex of the parameter paths AGC leaves alone (e.g. '^head/')")
    parser.add_argument("--clip-global-norm", type=float,
                        help="clip the global gradient norm to this (the classic baseline); 0: off")
    parser.add_argument("--warmup-epochs", type=float,
                        help="linear warm-up length in epochs (0: none), then cosine decay")
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16"),
                        help="compute dtype; auto is bfloat16 on GPU/TPU, float32 on CPU")
    parser.add_argument("--train-examples", type=int,
                        help="train on the first N training examples only")
    parser.add_argument("--test-examples", type=int,
                        help="evaluate on the first N test examples only")
    parser.add_argument("--log-every-steps", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in --workdir")
    return parser


def parse(argv: Sequence[str] | None = None) -> tuple[configs.TrainConfig, pathlib.Path, bool]:
    """Parses the command line.

    Args:
      argv: the arguments (without the program name); ``None`` reads ``sys.argv``.

    Returns:
      ``(config, workdir, resume)``.
    """
    args = build_parser().parse_args(argv)
    config = configs.get_config(args.preset)
    overrides = {field: getattr(args, flag) for flag, field in _OVERRIDES.items()
                 if getattr(args, flag) is not None}
    if args.epochs is not None:
        overrides["steps"] = None
    config = dataclasses.replace(config, **overrides)
    workdir = args.workdir or pathlib.Path("runs") / args.preset
    return config, workdir, args.resume
