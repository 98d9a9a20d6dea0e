"""An evaluate command given a run of the other example ends in one line naming it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from examples.common import workdir as workdir_lib
from examples.nf_resnet import configs as nf_resnet_configs
from examples.nf_resnet import evaluate as nf_resnet_evaluate
from examples.vit import configs as vit_configs
from examples.vit import evaluate as vit_evaluate


def run_of(tmp_path, config):
    (tmp_path / workdir_lib.CONFIG).write_text(json.dumps(dataclasses.asdict(config)))
    return tmp_path


@pytest.mark.parametrize(("evaluate", "config", "maker", "fields"), [
    (nf_resnet_evaluate, vit_configs.get_config("smoke"), "vit", "agc_placement"),
    (vit_evaluate, nf_resnet_configs.get_config("smoke"), "nf_resnet", "activation"),
])
def test_evaluate_names_the_example_that_made_the_run(tmp_path, capsys, evaluate, config,
                                                       maker, fields):
    workdir = run_of(tmp_path, config)
    assert evaluate.main(["--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"holds a run of the {maker} example (evaluate it with python -m examples.{maker}" \
           ".evaluate)" in err
    assert fields in err
