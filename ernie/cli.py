"""The `ernie` command. Each sub-command is a thin layer over the module that does the work."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from ernie.errors import ErnieError

app = typer.Typer(
    name="ernie",
    help="Benchmark ML training across clouds and accelerators, and serve the result.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Benchmark ML training across clouds and accelerators, and serve the result."""


def main() -> None:
    """Console entry point: a user error is one red line and exit status 2, never a traceback."""
    try:
        app()
    except ErnieError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
