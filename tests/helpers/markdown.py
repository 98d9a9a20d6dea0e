"""The fenced code blocks of a Markdown page, and running its ``python`` blocks as written."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import NamedTuple

# A block that must not run says so visibly in its fence: ```python title="not run: <why>".
SKIP_MARK = 'title="not run'
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<code>.*?)^(?P=indent)```[ \t]*$",
    re.S | re.M,
)


class Block(NamedTuple):
    """One fenced block: the page's line number of its first code line, its info, its code."""

    first_line: int
    info: str
    code: str


def fenced_blocks(page: Path, language: str) -> list[Block]:
    """The page's blocks in ``language``, in order, their code dedented.

    Args:
      page: a Markdown file.
      language: the first word of the fence's info string, e.g. ``python`` or ``bash``.

    Returns:
      The blocks, as :class:`Block`.
    """
    text = page.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        info = match["info"].strip()
        if info.split(" ", 1)[0] != language:
            continue
        first_line = text.count("\n", 0, match.start("code")) + 1
        blocks.append(Block(first_line, info, textwrap.dedent(match["code"])))
    return blocks


def run_block(page: Path, block: Block, namespace: dict[str, object]) -> None:
    """Runs a ``python`` block in ``namespace``; tracebacks point at the page's own lines.

    Args:
      page: the Markdown file the block is from.
      block: the block, from :func:`fenced_blocks`.
      namespace: the globals, shared by the blocks of one page as a reader pastes them.
    """
    # Leading blank lines make the compiled code's line numbers the page's.
    exec(compile("\n" * (block.first_line - 1) + block.code, str(page), "exec"), namespace)
