"""The examples' commands work from any directory of the environment ``scripts/setup.sh`` made.

dm-haiku, a test dependency, installs a folder ``examples`` into site-packages; without the
path file that ``scripts/setup.sh`` writes, ``python -m examples.nf_resnet.main`` run outside
the repository root found haiku's folder and failed with "No module named
'examples.nf_resnet'".
"""

import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["examples.nf_resnet.main", "examples.vit.main"])
def test_help_runs_outside_the_repository_root(tmp_path, module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--clipping" in result.stdout


def test_the_examples_found_are_this_repositorys():
    script = "import examples, pathlib; print(pathlib.Path(examples.__file__).parent)"
    found = subprocess.run([sys.executable, "-c", script], cwd="/", capture_output=True,
                           text=True, timeout=60).stdout.strip()
    assert pathlib.Path(found).parent.resolve() == REPO.resolve(), (
        f"`import examples` outside the repository found {found}; run scripts/setup.sh, "
        "which puts the repository on the environment's path.")
