"""Command-line flags generated from a config dataclass: one flag per field, none by hand.

Every field of the family's ``TrainConfig`` becomes ``--field-name`` with the field's
documentation (the ``Attributes:`` section of the class docstrings) as its help and the
selected preset's value as its default, so ``--preset cpu --help`` shows the values the
``cpu`` preset really uses. ``X | None`` fields take ``none``; booleans take
``--flag``/``--no-flag``; a field's ``metadata["choices"]`` restricts its values.
"""

import argparse
import dataclasses
import inspect
import pathlib
import re
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from examples.common import errors, workdir


class Options(typing.NamedTuple):
    """The flags that are not config fields."""

    preset: str
    workdir: pathlib.Path
    resume: bool
    overwrite: bool


def field_docs(cls: type) -> dict[str, str]:
    """Returns each field's text from the ``Attributes:`` sections of ``cls`` and its bases.

    A subclass's text wins over its base's.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
        section = re.search(r"^Attributes:\n((?:[ \t]+.*\n?|\n)*)", doc, re.M)
        if not section:
            continue
        name = None
        for line in section.group(1).splitlines():
            entry = re.match(r"^ {2}(\w+): ?(.*)$", line)
            if entry:
                name = entry.group(1)
                docs[name] = entry.group(2).strip()
            elif name and line.strip():
                docs[name] += " " + line.strip()
    return docs


class ShortErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are two lines, not the usage of every flag."""

    def error(self, message: str) -> typing.NoReturn:
        """Prints ``prog: error: message`` and where the flags are listed; exits with 2."""
        self.exit(2, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")


def _parse_optional(base: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else base(text)
    parse.__name__ = base.__name__  # argparse names the type in its error messages.
    return parse


def _argument(field: dataclasses.Field, annotation: Any, default: Any,
              help_text: str) -> dict[str, Any]:
    """The ``add_argument`` keywords of one field."""
    help_text = help_text.replace("``", "").replace("%", "%%")  # Plain text for a terminal.
    kwargs: dict[str, Any] = {"default": default, "help": help_text,
                              "dest": field.name}
    args = typing.get_args(annotation)
    optional = (typing.get_origin(annotation) in (typing.Union, types.UnionType)
                and type(None) in args)
    base = next(a for a in args if a is not type(None)) if optional else annotation
    if base is bool:
        return {**kwargs, "action": argparse.BooleanOptionalAction}
    kwargs["type"] = _parse_optional(base) if optional else base
    if "choices" in field.metadata:
        kwargs["choices"] = field.metadata["choices"]
    else:
        kwargs["metavar"] = base.__name__.upper() + ("|none" if optional else "")
    return kwargs


def build_parser(config: Any, *, prog: str, description: str,
                 presets: Sequence[str]) -> argparse.ArgumentParser:
    """Returns a parser whose defaults are ``config``'s values.

    Args:
      config: a preset's config (a dataclass instance): its fields become the flags.
      prog: the program's name in the usage line.
      description: what the program does.
      presets: the names ``--preset`` accepts.

    Returns:
      The parser; :func:`parse` turns its result into a config.
    """
    parser = ShortErrorParser(prog=prog, description=description,
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", choices=presets, default=presets[0],
                        help="the preset giving every other flag its default (the defaults "
                             "shown are this preset's: --preset NAME --help shows NAME's)")
    parser.add_argument("--workdir", type=pathlib.Path, default=argparse.SUPPRESS,
                        help="output directory (default: runs/<preset>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --workdir from its newest checkpoint (its "
                             "settings must match, except "
                             + ", ".join(map(errors.flag, workdir.EXECUTION_ONLY)) + ")")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the run already in --workdir (its checkpoints, metrics, "
                             "summary and config) before starting")
    docs = field_docs(type(config))
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        parser.add_argument(f"--{field.name.replace('_', '-')}", **_argument(
            field, hints[field.name], getattr(config, field.name), docs.get(field.name, "")))
    return parser


def parse(argv: Sequence[str] | None, *, prog: str, description: str,
          presets: Sequence[str], get_config: Callable[[str], Any]) -> tuple[Any, Options]:
    """Parses a command line: a preset, then any of its fields overridden by flags.

    Args:
      argv: the arguments (without the program name); ``None`` reads ``sys.argv``.
      prog: the program's name in the usage line.
      description: what the program does.
      presets: the preset names; the first is the default.
      get_config: returns a preset's config.

    Returns:
      ``(config, options)``.
    """
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--preset", choices=presets, default=presets[0])
    known, _ = first.parse_known_args(argv)
    preset_config = get_config(known.preset)
    parser = build_parser(preset_config, prog=prog, description=description, presets=presets)
    parser.set_defaults(preset=known.preset)
    args = vars(parser.parse_args(argv))
    preset = args.pop("preset")
    workdir = args.pop("workdir", pathlib.Path("runs") / preset)
    options = Options(preset, workdir, args.pop("resume"), args.pop("overwrite"))
    return dataclasses.replace(preset_config, **args), options
