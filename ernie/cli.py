"""The `ernie` command. Each sub-command is a thin layer over the module that does the work."""

from __future__ import annotations

import sys
from pathlib import Path

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


@app.command()
def report(
    run_ids: list[str] = typer.Argument(None, metavar="[RUN_ID]...", help="Runs to report (directories under --results)."),
    all_runs: bool = typer.Option(False, "--all", help="Report every run under --results and in its database."),
    out: Path = typer.Option(None, "--out", help="Where report.md and report.html go [default: RESULTS/report]."),
    results: Path = typer.Option(Path("results"), "--results", help="Where runs are collected; holds ernie.db."),
) -> None:
    """Write a Markdown and a self-contained HTML report: speed, cost, time-to-target, against MLPerf."""
    from ernie.report.console import report_command  # matplotlib loads only when a report is made

    report_command(results, run_ids or [], all_runs, out)


# --- offline plan (ernie/check.py): check ---
@app.command()
def check(
    stack: str = typer.Option(None, "-s", "--stack", help="The stack whose Pulumi.STACK.yaml to check (gcp, aws)."),
    config: Path = typer.Option(None, "--config", help="A config file in the stack files' shape instead."),
) -> None:
    """Offline, before `pulumi up`: resources, workers, $/hour and guardrail findings (exit 1 on a finding)."""
    from ernie.check import run_check  # Pulumi and the cloud SDKs load only for this command

    raise typer.Exit(run_check(stack, config, Console()))
# --- end offline plan ---


@app.command()
def sweep(
    cloud: str = typer.Option(..., "--cloud", help="aws or gcp."),
    region: list[str] = typer.Option([], "--region", help="AWS region to sweep (repeatable)."),
    project: str = typer.Option(None, "--project", help="Google Cloud project to sweep."),
    zone: list[str] = typer.Option([], "--zone", help="GCP zone (repeatable) [default: every TPU zone]."),
    live_stack: list[str] = typer.Option([], "--live-stack", help="A stack that still exists (repeatable) "
                                         "[default: ask the Pulumi CLI]."),
    delete: bool = typer.Option(False, "--delete", help="Delete what was found, after confirmation."),
    yes: bool = typer.Option(False, "--yes", help="With --delete: do not ask."),
) -> None:
    """Find resources ernie left behind (past their TTL or of no live stack), with their hourly cost."""
    from ernie.sweep.command import sweep as run_sweep

    raise typer.Exit(run_sweep(cloud, region, project, zone, live_stack, delete, yes))


def main() -> None:
    """Console entry point: a user error is one red line and exit status 2, never a traceback."""
    try:
        app()
    except ErnieError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
