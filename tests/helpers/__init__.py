"""Code the tests share, imported as ``from helpers.<module> import ...``.

``tests/`` is on ``sys.path`` (``pythonpath`` in ``pyproject.toml``), so these imports work
from any folder under ``tests/`` and in the child processes that run modules of this package.
Fixtures and hooks stay in ``tests/conftest.py``; nothing here is imported from it.
"""
