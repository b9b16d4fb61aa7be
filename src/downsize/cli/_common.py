"""What every command shares: the Typer apps, the consoles, the ``--config`` option, and the one
place where errors become exit codes."""

from __future__ import annotations


import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from ..errors import BudgetExceeded, ConfigError, DataError, DownsizeError, TeacherError

app = typer.Typer(
    name="downsize",
    help="Distil routine LLM calls into small local models that answer only when they provably may.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
teacher_app = typer.Typer(help="Teacher utilities (the replay teacher).", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = Annotated[
    Path,
    typer.Option("--config", "-c", help="The project's downsize.yaml.", envvar="DOWNSIZE_CONFIG"),
]
_EXIT = {ConfigError: 2, DataError: 2, TeacherError: 3, BudgetExceeded: 4}


def _errors(fn: F) -> F:
    """Turn DownsizeError into a one-line message and an exit code (2 input, 3 teacher, 4 budget, 1 other)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DownsizeError as exc:
            code = next((c for t, c in _EXIT.items() if isinstance(exc, t)), 1)
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]


def _project(config: Path) -> Any:
    from ..project import Project

    return Project.open(config)


def _fmt(x: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "–" if x is None else f"{x:{spec}}{suffix}"
log_app = typer.Typer(help="The audit log: one row per request the gateway or `predict` answered.",
                      no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the gateway (stored as sha256 only).", no_args_is_help=True)
app.add_typer(log_app, name="log")
app.add_typer(keys_app, name="keys")


def _store(config: Path) -> Any:
    """The project's store alone (no students, no teacher): for `log` and `keys`."""
    from ..config import load_config
    from ..store import Store

    return Store(load_config(config).store_url())
