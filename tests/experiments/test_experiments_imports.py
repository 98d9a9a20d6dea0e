"""The experiments package is layered: no import cycle, and only public pieces of examples.

The rule (also in the docstring of :mod:`experiments`): each experiments module imports
only modules of :data:`LAYERS` above it; from ``examples`` it imports only
:data:`PUBLIC_EXAMPLES` (a family's ``configs``, the config fields' metadata, the names
and records of a run's files), never the trainer or its helpers; ``examples`` imports
nothing from ``experiments``.
"""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys

import pytest

from tests.helpers.experiment_fixtures import REPO

# Each module may import the ones before it, never one after it.
LAYERS = ("paths", "runs", "spec", "fingerprint", "figures", "report", "runner", "plot",
          "nf_resnet", "vit", "catalog", "cli", "__main__")
# A public module, or a name imported from one.
PUBLIC_EXAMPLES = re.compile(r"examples\.(common\.config|common\.runs|\w+\.configs)(\.\w+)?")


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module a file imports, anywhere in it (``from a import b`` gives ``a`` and ``a.b``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def experiments_modules() -> list[str]:
    return sorted(p.stem for p in (REPO / "experiments").glob("*.py") if p.stem != "__init__")


def test_every_module_has_its_layer():
    assert sorted(LAYERS) == experiments_modules()


@pytest.mark.parametrize("module", LAYERS)
def test_a_module_imports_only_the_layers_above_it(module):
    path = REPO / "experiments" / f"{module}.py"
    own = {name.split(".")[1] for name in imported_modules(path)
           if name.startswith("experiments.") and name.split(".")[1] in LAYERS}
    below = own - set(LAYERS[:LAYERS.index(module)])
    assert not below, f"experiments.{module} imports {sorted(below)}, at or below its layer"


def test_experiments_import_only_public_pieces_of_examples():
    for path in sorted((REPO / "experiments").glob("*.py")):
        # Packages (``from examples.common import config``) hold nothing of their own.
        from_examples = {name for name in imported_modules(path)
                         if name.split(".")[0] == "examples"
                         and not (REPO / name.replace(".", "/")).is_dir()}
        internal = {name for name in from_examples if not PUBLIC_EXAMPLES.fullmatch(name)}
        assert not internal, f"{path.name} imports {sorted(internal)} from examples"


def test_examples_import_nothing_from_experiments():
    for path in sorted((REPO / "examples").rglob("*.py")):
        assert not {name for name in imported_modules(path)
                    if name.split(".")[0] == "experiments"}, path.relative_to(REPO)


@pytest.mark.slow
def test_each_module_imports_first_in_a_fresh_interpreter():
    # Whatever module a user imports first (an import order a cycle would break).
    code = "; ".join(f"import experiments.{m}" for m in LAYERS if m != "__main__")
    for module in LAYERS[:-1]:
        first = f"import experiments.{module}; {code}"
        child = subprocess.run([sys.executable, "-c", first], cwd=REPO, capture_output=True,
                               text=True, timeout=300, check=False)
        assert child.returncode == 0, f"experiments.{module} first:\n{child.stderr[-2000:]}"
