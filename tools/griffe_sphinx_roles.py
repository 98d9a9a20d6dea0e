"""A Griffe extension that renders the Sphinx markup of optax-style docstrings in MkDocs.

The library's docstrings follow optax: Google-style sections with Sphinx roles
(:func:`agc`, :class:`AGCState`, :mod:`agc_optax._paths`) and reStructuredText links
(`text <https://...>`_). mkdocstrings renders Markdown, so before rendering this rewrites

- a role naming a public name of the package into a cross-reference to its API entry,
  ``[`agc`][agc_optax.agc]``, and any other role into inline code;
- a reStructuredText link into a Markdown link.

The source stays as it is; ``mkdocs.yml`` loads this file as an extension of the Python
handler.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|obj|exc):`~?\.?(?P<target>[\w.]+)`")
_RST_LINK = re.compile(r"`(?P<text>[^`<]+?)\s*<(?P<url>https?://[^>\s]+)>`_")


def _public_names(obj: griffe.Object) -> tuple[str, set[str]]:
    package = obj.package
    exports = package.exports or set()
    return package.path, {name if isinstance(name, str) else name.name for name in exports}


def rewrite(text: str, package: str, public: set[str]) -> str:
    """The docstring ``text`` with Sphinx roles and reST links turned into Markdown."""

    def role(match: re.Match[str]) -> str:
        name = match["target"].removeprefix(f"{package}.")
        if name in public:
            return f"[`{name}`][{package}.{name}]"
        return f"`{match['target']}`"

    text = _ROLE.sub(role, text)
    return _RST_LINK.sub(lambda m: f"[{' '.join(m['text'].split())}]({m['url']})", text)


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring once the package's object tree is complete."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrites ``obj``'s docstring in place (see :func:`rewrite`)."""
        if obj.docstring is not None:
            package, public = _public_names(obj)
            obj.docstring.value = rewrite(obj.docstring.value, package, public)
