"""The documentation works as written: its code runs, its commands exist, the site builds.

- Every ``python`` block of each page under ``docs/`` runs, the blocks of one page in order
  in one namespace (as a reader would paste them), from the repository root; README.md's run
  once, in ``tests/docs/test_readme.py``, which also checks the quick start's result. A block
  that must not run says so visibly in its fence, ```` ```python title="not run: <why>" ````;
  use it rarely.
- Every ``python -m MODULE`` command of a ``bash`` block names a module that exists, and
  every ``--flag`` it passes is one that the module's ``--help`` lists; every
  ``bash scripts/X.sh`` names a script of the repository.
- ``mkdocs build --strict`` (warnings are errors) builds the site, whose API page documents
  every public name of ``agc_optax``.
- Every figure under ``docs/`` is shown on some page, and every generated table
  (``docs/figures/*.md``) is included in one; what a page shows exists.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import agc_optax
from helpers import markdown
from tools.griffe_sphinx_roles import rewrite

REPO = Path(__file__).resolve().parents[2]
# Generated tables hold no code of their own.
GENERATED = ("docs/figures/",)
PAGES = sorted(
    path.relative_to(REPO).as_posix()
    for path in [REPO / "README.md", *(REPO / "docs").rglob("*.md")]
    if not path.relative_to(REPO).as_posix().startswith(GENERATED)
)
# Pages whose blocks another test runs (they need what this process cannot give them, or
# their results are checked there), and that test.
RUN_ELSEWHERE = {
    "README.md": "tests/docs/test_readme.py, which also checks the quick start's result",
    "docs/guides/scaling_out.md": "tests/agc_optax/test_sharding.py, on 8 simulated devices",
}
# Pages whose blocks train a model on Fashion-MNIST (seconds to a minute): marked slow like
# every training test, and requires_fashion_mnist.
TRAINS = {"docs/examples/nf_resnet.md"}


def fenced_blocks(page: str, language: str) -> list[markdown.Block]:
    """The blocks of a page (a path relative to the repository) in one language."""
    return markdown.fenced_blocks(REPO / page, language)


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(p, marks=[pytest.mark.slow, pytest.mark.requires_fashion_mnist])
        if p in TRAINS else p
        for p in PAGES
    ],
)
def test_python_blocks_run(page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = fenced_blocks(page, "python")
    if page in RUN_ELSEWHERE:
        assert blocks, f"{page} is listed in RUN_ELSEWHERE but has no python block"
        return
    monkeypatch.chdir(REPO)
    namespace: dict[str, object] = {"__name__": f"docs:{page}"}
    for block in blocks:
        if markdown.SKIP_MARK not in block.info:
            markdown.run_block(REPO / page, block, namespace)


# ``![alt](path)`` shows a figure; ``--8<-- "path"`` includes a file (pymdownx.snippets).
IMAGE = re.compile(r"!\[[^\]]*\]\((?P<target>[^)\s]+)")
SNIPPET = re.compile(r'^\s*--8<-- "(?P<target>[^"]+)"', re.M)


def shown_files() -> dict[Path, str]:
    """Every file a page shows as a figure or includes, resolved -> the first page doing so."""
    shown: dict[Path, str] = {}
    for page in PAGES:
        text = (REPO / page).read_text()
        for match in IMAGE.finditer(text):
            if "://" not in match["target"]:
                shown.setdefault(((REPO / page).parent / match["target"]).resolve(), page)
        for match in SNIPPET.finditer(text):  # ``"README.md:section"`` includes a part.
            shown.setdefault((REPO / match["target"].split(":")[0]).resolve(), page)
    return shown


def test_every_figure_and_generated_table_is_shown_on_a_page() -> None:
    shown = shown_files()
    figures = {*(REPO / "docs").rglob("*.png"), *(REPO / "docs" / "figures").glob("*.md")}
    assert len(figures) > 20
    unshown = sorted(p.relative_to(REPO).as_posix() for p in figures if p.resolve() not in shown)
    assert not unshown, f"shown on no page (add it where its experiment is discussed): {unshown}"
    missing = sorted(f"{page}: {path.relative_to(REPO.resolve())}"
                     for path, page in shown.items() if not path.is_file())
    assert not missing, f"pages show files that do not exist: {missing}"


def test_few_blocks_are_marked_not_run() -> None:
    marked = [
        f"{page}:{line}"
        for page in PAGES
        for line, info, _ in fenced_blocks(page, "python")
        if markdown.SKIP_MARK in info
    ]
    assert len(marked) <= 3, f"too many blocks marked {markdown.SKIP_MARK}...: {marked}"


def test_no_reference_outside_the_repository() -> None:
    # Spelled in pieces so that this file does not match itself.
    outside = ("../" + "shared", "/work" + "/", "REFERENCES" + ".md")
    skipped = {".venv", ".git", "site", "runs", "__pycache__"}
    for path in REPO.rglob("*"):
        if skipped & set(path.relative_to(REPO).parts) or path.suffix not in {
            ".md", ".py", ".sh", ".toml", ".yml", ".yaml", ".cfg", ".txt",
        }:
            continue
        text = path.read_text(errors="replace")
        for name in outside:
            assert name not in text, f"{path.relative_to(REPO)} refers to {name!r} (not in a clone)"


# ``python -m MODULE ...`` anywhere on a line, with the venv's interpreter or an activated one.
COMMAND = re.compile(r"(?:^|[\s;&(])(?:\.venv/bin/)?python -m (?P<rest>[^#\n]*)")


def shown_commands() -> list[tuple[str, list[str]]]:
    """``(where, argv after "python -m")`` for every command of every bash block."""
    found = []
    for page in PAGES:
        for first_line, _, code in fenced_blocks(page, "bash"):
            # A line continued with a trailing backslash is joined with the next one.
            for offset, line in enumerate(code.replace("\\\n", " ").splitlines()):
                for match in COMMAND.finditer(line):
                    argv = shlex.split(match["rest"].split(" &")[0], comments=True)
                    found.append((f"{page}:{first_line + offset}", argv))
    return found


@functools.cache
def help_text(module: str, subcommand: str | None) -> str:
    argv = [sys.executable, "-m", module, *([subcommand] if subcommand else []), "--help"]
    child = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, f"{' '.join(argv[1:])} failed:\n{child.stderr[-2000:]}"
    return child.stdout


@pytest.mark.slow
def test_shown_commands_name_real_modules_and_flags() -> None:
    commands = shown_commands()
    assert len(commands) >= 10, commands
    for where, argv in commands:
        module, args = argv[0], argv[1:]
        subcommand = args[0] if args and not args[0].startswith("-") else None
        text = help_text(module, None)
        if subcommand and re.search(rf"\b{re.escape(subcommand)}\b", text.split("\n\n")[0]):
            text += help_text(module, subcommand)  # A subcommand with flags of its own.
        for flag in {a.split("=", 1)[0] for a in args if a.startswith("--")}:
            assert re.search(rf"{re.escape(flag)}\b", text), f"{where}: {module} has no {flag}"


def test_shown_scripts_exist() -> None:
    for page in PAGES:
        for _, _, code in fenced_blocks(page, "bash"):
            for script in re.findall(r"\bbash (\S+\.sh)", code):
                assert (REPO / script).is_file(), f"{page} shows {script}, which does not exist"


@pytest.mark.slow
def test_site_builds_strictly_with_every_public_name(tmp_path: Path) -> None:
    site = tmp_path / "site"
    child = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert child.returncode == 0, child.stderr[-5000:]
    api = (site / "api" / "index.html").read_text()
    for name in agc_optax.__all__:
        assert f'id="agc_optax.{name}"' in api, f"the API page lacks agc_optax.{name}"


def test_sphinx_markup_of_docstrings_becomes_markdown() -> None:
    text = (
        "Like :func:`agc`, see :class:`~agc_optax.AGCState` and :mod:`agc_optax._paths`;\n"
        "`High-Performance Large-Scale Image\nRecognition <https://arxiv.org/abs/2102.06171>`_."
    )
    assert rewrite(text, "agc_optax", {"agc", "AGCState"}) == (
        "Like [`agc`][agc_optax.agc], see [`AGCState`][agc_optax.AGCState] and "
        "`agc_optax._paths`;\n"
        "[High-Performance Large-Scale Image Recognition](https://arxiv.org/abs/2102.06171)."
    )
