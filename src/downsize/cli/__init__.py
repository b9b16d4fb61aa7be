"""The ``downsize`` command line: one function per command, each a thin wrapper over the Python API.

Parse arguments → open the project → call one library function → render → exit code. Errors are
mapped to exit codes in :mod:`._common` and only there. Commands import what they call inside
the function, so ``downsize --help`` stays fast (no fastapi, uvicorn or models loaded).
"""

from __future__ import annotations

from . import discover, loop, ops, review, versions  # noqa: F401  (registers the commands)
from ._common import app

__all__ = ["app", "main"]


def main() -> None:
    app()

