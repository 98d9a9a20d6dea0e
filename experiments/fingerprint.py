"""Whether a stored run is a trial of its grid: its configuration compared with the trial's.

A trial's configuration is its experiment's preset with the experiment's and the trial's
overrides applied (:func:`trial_config`). A stored run stands for the trial when the
configuration its ``summary.json`` records matches that one field by field
(:func:`differences`), leaving out what does not decide the result:

- fields :mod:`examples.common.config` marks ``execution_only`` (the microbatch split, CPU
  devices, logging interval…), except the ``batch_statistics`` ones for a model with batch
  statistics (its family's ``configs.has_batch_statistics``, if it has one);
- fields that another field makes unused (``epochs`` once ``steps`` is set in both).

A field the run did not record (added to the configuration later) must have its default:
a new field's default keeps the old behaviour. A recorded field that the configuration no
longer has is a difference.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from examples.common import config as config_lib
from experiments.spec import Experiment, Trial


def family_configs(trainer: str) -> ModuleType:
    """The presets package of a trainer module: ``examples.<family>.configs``."""
    return importlib.import_module(trainer.rsplit(".", 1)[0] + ".configs")


def trial_config(experiment: Experiment, trial: Trial) -> Any:
    """The configuration ``trial`` runs with today: its preset plus every override.

    Raises:
      ValueError: an override names no field of the family's configuration.
    """
    preset = family_configs(experiment.trainer).get_config(experiment.preset)
    overrides = experiment.trial_overrides(trial)
    unknown = sorted(overrides.keys() - {f.name for f in dataclasses.fields(preset)})
    if unknown:
        raise ValueError(
            f"{experiment.name}/{trial.name} overrides {unknown}, which "
            f"{type(preset).__module__}.{type(preset).__name__} has no field for; fix the "
            "experiment's overrides (field names, not flags).")
    return dataclasses.replace(preset, **overrides)


def unused_fields(config: Any, *values: Mapping[str, Any]) -> set[str]:
    """The fields that another field, set in every one of ``values``, makes irrelevant.

    Args:
      config: a config class or instance (its fields' metadata).
      *values: configurations as dicts (e.g. a stored run's and today's).

    Returns:
      The names of the fields marked ``unused_when_set`` whose setter is not ``None`` in
      every one of ``values``.
    """
    return {f.name for f in dataclasses.fields(config)
            if (setter := f.metadata.get("unused_when_set"))
            and all(v.get(setter) is not None for v in values)}


def ignored_fields(config: Any, stored: Mapping[str, Any], now: Mapping[str, Any],
                   batch_statistics: bool) -> set[str]:
    """The fields that do not decide the result of either configuration.

    Args:
      config: the configuration (its fields' metadata).
      stored: the stored run's configuration.
      now: the trial's configuration, as a dict.
      batch_statistics: whether the model has batch statistics.

    Returns:
      The execution-only fields (less the batch-statistics ones for such a model) and the
      fields another field set in both makes unused.
    """
    execution_only = set(config_lib.execution_only_fields(config))
    if batch_statistics:
        execution_only -= set(config_lib.batch_statistics_fields(config))
    return execution_only | unused_fields(config, stored, now)


def differences(stored: Mapping[str, Any], config: Any,
                batch_statistics: bool = False) -> list[str]:
    """``field: stored -> now`` for every field that decides the result and differs.

    Args:
      stored: the configuration a run recorded (its ``summary.json``'s ``config``).
      config: the trial's configuration (a dataclass).
      batch_statistics: whether the model has batch statistics.

    Returns:
      One readable difference per field; ``[]`` when the stored run stands for the trial.
    """
    now = json.loads(json.dumps(dataclasses.asdict(config)))  # Tuples become lists.
    defaults = json.loads(json.dumps(
        {f.name: f.default for f in dataclasses.fields(config)
         if f.default is not dataclasses.MISSING}))
    ignored = ignored_fields(config, stored, now, batch_statistics)
    found = []
    for name in sorted((stored.keys() | now.keys()) - ignored):
        if name not in now:
            found.append(f"{name}: {stored[name]!r} -> (no longer a setting)")
        elif name not in stored:
            if now[name] != defaults.get(name):
                found.append(f"{name}: (not recorded; default {defaults.get(name)!r}) -> "
                             f"{now[name]!r}")
        elif stored[name] != now[name]:
            found.append(f"{name}: {stored[name]!r} -> {now[name]!r}")
    return found


def stored_run_differences(experiment: Experiment, trial: Trial,
                           stored: Mapping[str, Any]) -> list[str]:
    """:func:`differences` between a stored run's configuration and ``trial``'s.

    Args:
      experiment: the grid.
      trial: the trial the run is stored as.
      stored: the configuration the run recorded; empty when it recorded none.

    Returns:
      The differences (a run that recorded no configuration cannot match).
    """
    if not stored:
        return ["(the run recorded no configuration)"]
    config = trial_config(experiment, trial)
    has_batch_statistics = getattr(family_configs(experiment.trainer),
                                   "has_batch_statistics", None)
    batch_statistics = bool(has_batch_statistics and has_batch_statistics(config.model))
    return differences(stored, config, batch_statistics)
