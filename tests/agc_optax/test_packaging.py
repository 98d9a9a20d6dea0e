"""What a user who pins agc-optax relies on: dependencies, version, licence, release files."""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile

import pytest
import yaml

import agc_optax

REPO = pathlib.Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def requirement_names(requirements):
    return {re.match(r"[A-Za-z0-9_.-]+", r)[0] for r in requirements}


def top_level_imports(path):
    """Modules imported at import time: module level, outside `if TYPE_CHECKING:`."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_library_imports_only_its_declared_dependencies_at_import_time():
    third_party = set()
    for path in (REPO / "agc_optax").glob("*.py"):
        third_party |= top_level_imports(path) - set(sys.stdlib_module_names) - {"agc_optax"}
    assert third_party == {"jax", "numpy", "optax"}
    assert requirement_names(PROJECT["dependencies"]) == third_party
    assert requirement_names(PROJECT["optional-dependencies"]["flax"]) == {"flax"}
    assert "agc-optax[flax]" in PROJECT["optional-dependencies"]["examples"]


def test_dependencies_are_floors_that_the_min_versions_job_can_pin():
    for requirement in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["flax"]:
        assert re.fullmatch(r"[a-z]+>=[0-9.]+", requirement), requirement
    assert "test_min_versions.sh" in (REPO / ".ci" / "run").read_text()


# What scripts/test_min_versions.sh installs (at the floors) for the library's tests, and what
# comes with it (ml_dtypes with jax, packaging with pytest).
MIN_VERSIONS_PACKAGES = {"agc_optax", "jax", "optax", "numpy", "flax", "pytest", "hypothesis",
                         "ml_dtypes", "packaging"}


def imports_with_helpers(path):
    """``top_level_imports`` of a test file and of the ``helpers`` modules it imports."""
    names, seen, todo = set(), set(), [path]
    while todo:
        module = todo.pop()
        seen.add(module)
        tree = ast.parse(module.read_text())
        names |= top_level_imports(module)
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers"):
                parts = node.module.split(".")[1:] or [alias.name for alias in node.names]
                helper = REPO / "tests" / "helpers" / f"{parts[0]}.py"
                if helper.is_file() and helper not in seen:
                    todo.append(helper)
    return names - {"helpers"}


def test_min_versions_job_runs_library_tests_that_exist_and_need_only_its_packages():
    script = (REPO / "scripts" / "test_min_versions.sh").read_text()
    listed = re.search(r"^library_tests=\((.*?)^\)", script, re.S | re.M)
    assert listed, "scripts/test_min_versions.sh lost its library_tests=( ... ) list"
    paths = [line.strip() for line in listed[1].splitlines() if line.strip()]
    assert len(paths) >= 10, paths
    for path in [*paths, "tests/conftest.py"]:
        assert (REPO / path).is_file(), f"scripts/test_min_versions.sh lists {path}: not a file"
        extra = imports_with_helpers(REPO / path) - set(sys.stdlib_module_names)
        assert extra <= MIN_VERSIONS_PACKAGES, (
            f"{path} imports {sorted(extra - MIN_VERSIONS_PACKAGES)}, which the minimum-versions "
            "job does not install: import it only inside the code that needs it, or take the "
            "test out of library_tests")


def test_version_is_written_once():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert SETUPTOOLS["dynamic"]["version"] == {"attr": "agc_optax.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", agc_optax.__version__)
    releases = re.findall(r"^## (\S+)", (REPO / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert releases[:2] == ["Unreleased", agc_optax.__version__]
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert str(citation["version"]) == agc_optax.__version__


def test_citation_names_the_library_and_prefers_the_paper():
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["type"] == "software"
    assert citation["license"] == PROJECT["license"] == "Apache-2.0"
    paper = citation["preferred-citation"]
    assert paper["title"] == "High-Performance Large-Scale Image Recognition Without Normalization"
    assert [a["family-names"] for a in paper["authors"]] == ["Brock", "De", "Smith", "Simonyan"]
    assert paper["year"] == 2021 and paper["url"] == "https://arxiv.org/abs/2102.06171"


def test_license_is_the_full_apache_text():
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) > 190
    assert PROJECT["license-files"] == ["LICENSE"]


@pytest.mark.slow
def test_sdist_and_wheel_ship_the_licence_and_pass_twine_check(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, text=True)
    version = agc_optax.__version__
    wheel = tmp_path / f"agc_optax-{version}-py3-none-any.whl"
    sdist = tmp_path / f"agc_optax-{version}.tar.gz"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"agc_optax-{version}.dist-info/METADATA").decode()
    assert f"agc_optax-{version}.dist-info/licenses/LICENSE" in names
    assert {"agc_optax/__init__.py", "agc_optax/py.typed"} <= names
    assert not any(n.startswith(("tests/", "examples/")) for n in names)
    assert "License-Expression: Apache-2.0" in metadata
    requires = re.findall(r"^Requires-Dist: (.*)$", metadata, re.MULTILINE)
    assert [r for r in requires if "extra ==" not in r] == PROJECT["dependencies"]
    assert any(r.startswith("flax>=") and 'extra == "flax"' in r for r in requires)
    with tarfile.open(sdist) as archive:
        assert f"agc_optax-{version}/LICENSE" in archive.getnames()
    check = subprocess.run([sys.executable, "-m", "twine", "check", "--strict",
                            str(wheel), str(sdist)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
