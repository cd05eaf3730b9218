"""The `ernie` command. Each sub-command is a thin layer over the module that does the work."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from catalog.lambda_runtime import ARCHES, SERVING_PYTHONS
from ernie.errors import ErnieError
from ernie.terminal import SafeConsole, clean, remote

app = typer.Typer(
    name="ernie",
    help="Benchmark ML training across clouds and accelerators, and serve the result.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = SafeConsole(stderr=True)  # errors quote hosts and clouds: no escapes


@app.callback()
def _root() -> None:
    """Benchmark ML training across clouds and accelerators, and serve the result."""


@app.command()
def report(
    run_ids: list[str] = typer.Argument(None, metavar="RUN_ID", help="Runs to report (directories under --results)."),
    all_runs: bool = typer.Option(False, "--all", help="Report every run under --results and in its database."),
    out: Path = typer.Option(None, "--out", help="Where report.md and report.html go (default: RESULTS/report)."),
    results: Path = typer.Option(Path("results"), "--results", help="Where runs are collected; holds ernie.db."),
    wide: bool = typer.Option(False, "--wide", help="Print every table of the report, not the 80-column summary."),
) -> None:
    """Write a Markdown and a self-contained HTML report: speed, cost, time-to-target, against MLPerf."""
    from ernie.report.console import report_command  # matplotlib loads only when a report is made

    report_command(results, run_ids or [], all_runs, out, wide)


@app.command()
def sweep(
    cloud: str = typer.Option(..., "--cloud", help="aws or gcp."),
    region: list[str] = typer.Option([], "--region", help="AWS region to sweep (repeatable)."),
    project: str = typer.Option(None, "--project", help="Google Cloud project to sweep."),
    zone: list[str] = typer.Option([], "--zone", help="GCP zone (repeatable; default: every TPU zone)."),
    live_stack: list[str] = typer.Option([], "--live-stack", help="A stack that still exists (repeatable) "
                                         "(default: ask the Pulumi CLI)."),
    delete: bool = typer.Option(False, "--delete", help="Delete what was found, after confirmation."),
    yes: bool = typer.Option(False, "--yes", help="With --delete: do not ask."),
) -> None:
    """Find resources ernie left behind (past their TTL or of no live stack), with their hourly cost."""
    from ernie.sweep.command import sweep as run_sweep

    raise typer.Exit(run_sweep(cloud, region, project, zone, live_stack, delete, yes))



@app.command()
def demo(
    results: Path = typer.Option(Path("results"), "--results", help="Where the suite's runs are collected."),
    out: Path = typer.Option(None, "--out", help="Where report.md and report.html go (default: RESULTS/report)."),
    wide: bool = typer.Option(False, "--wide", help="Print every table of the report, not the 80-column summary."),
) -> None:
    """The local benchmark suite (BERT torch and TF, translation, serving) through the run pipeline, then the report."""
    from ernie.demo import run_demo

    raise typer.Exit(run_demo(results, out, SafeConsole(), wide=wide))


# --- remote runs (ernie/run.py, ernie/control.py, ernie/bench.py): run, status, logs, collect, stop, bench ---
_STACK = typer.Option(None, "-s", "--stack", help="Hosts from this Pulumi stack's inventory output.")
_INVENTORY = typer.Option(None, "--inventory", help="Hosts from an inventory file (docs/inventory.md's shape).")
_LOCAL = typer.Option(False, "--local", help="This machine as the only host.")
_RESULTS = typer.Option(Path("results"), "--results", help="Where runs are kept.")
_SET = typer.Option([], "--set", help="Override a workload parameter: key=value (repeatable).")
_WAIT_SSH = typer.Option(600.0, "--wait-ssh-seconds", help="How long to wait for SSH on every host.")
_LOST_AFTER = typer.Option(300.0, "--lost-after-seconds", help="Give up on a host unreachable this long mid-run.")
_TIMEOUT = typer.Option(1440.0, "--timeout-minutes", help="Stop the workers after this long and collect.")
_RUN_ID = typer.Argument(None, help="The run (default: the latest under --results).")
_WAIT_LATER = typer.Option(30.0, "--wait-ssh-seconds", help="How long to wait for SSH on every host.")
# Paths and commands stay whole, ready to copy; what hosts say is printed without its escape sequences.
out_console = SafeConsole(soft_wrap=True)


@app.command()
def run(
    workload: str = typer.Argument(None, help="A built-in workload's name, a directory, or a .workload.toml file."),
    stack: str = _STACK, inventory: Path = _INVENTORY, local: bool = _LOCAL, sets: list[str] = _SET,
    results: Path = _RESULTS, wait_ssh: float = _WAIT_SSH, lost_after: float = _LOST_AFTER,
    timeout: float = _TIMEOUT,
    resume: str = typer.Option(None, "--resume", metavar="RUN_ID",
                               help="Restart a recorded run's workers (after a preemption) from their checkpoints."),
    push: str = typer.Option("auto", "--push", metavar="auto|direct|relay",
                             help="How the bundle reaches the hosts: direct from here to each, or once to one "
                                  "worker that relays it to the others; auto chooses (and says why)."),
) -> None:
    """Run a workload on every host: push, set up, start detached, stream progress, collect."""
    from ernie.run import options, run_command

    opts = options(results, wait_ssh, lost_after, timeout, push)
    if resume is not None:
        from ernie.resume import resume_command

        raise typer.Exit(resume_command(resume, workload, sets, stack, inventory, local, opts, out_console))
    if workload is None:
        raise ErnieError("name a WORKLOAD to run, or --resume RUN_ID to restart a recorded run")
    raise typer.Exit(run_command(workload, sets, stack, inventory, local, opts, out_console))


@app.command()
def status(run_id: str = _RUN_ID, stack: str = _STACK, inventory: Path = _INVENTORY, local: bool = _LOCAL,
           results: Path = _RESULTS, wait_ssh: float = _WAIT_LATER) -> None:
    """Each worker of a run: running, exited (with its code) or unreachable."""
    from ernie.control import load_run, status_run
    from ernie.run import options

    status_run(*load_run(run_id, stack, inventory, local, results), options(results, wait_ssh), out_console)


@app.command()
def logs(run_id: str = _RUN_ID, worker: int = typer.Option(0, "--worker", help="Which worker's stdout."),
         follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the worker ends."),
         stack: str = _STACK, inventory: Path = _INVENTORY, local: bool = _LOCAL, results: Path = _RESULTS) -> None:
    """Print a worker's stdout from its host."""
    from ernie.control import load_run, logs_run
    from ernie.run import options

    record, inv = load_run(run_id, stack, inventory, local, results)
    logs_run(record, inv, options(results), worker, follow,
             lambda text: out_console.out(clean(text), end="", highlight=False))


@app.command()
def collect(run_id: str = _RUN_ID, stack: str = _STACK, inventory: Path = _INVENTORY, local: bool = _LOCAL,
            results: Path = _RESULTS, wait_ssh: float = _WAIT_LATER) -> None:
    """Collect a run's output from every worker again (only what is missing or changed) and rewrite its manifest."""
    from ernie.control import load_run
    from ernie.run import collect_run, options

    record, inv = load_run(run_id, stack, inventory, local, results)
    raise typer.Exit(collect_run(record, inv, options(results, wait_ssh), out_console))


@app.command()
def stop(run_id: str = _RUN_ID, stack: str = _STACK, inventory: Path = _INVENTORY, local: bool = _LOCAL,
         results: Path = _RESULTS, wait_ssh: float = _WAIT_LATER) -> None:
    """End a run's process group on every worker."""
    from ernie.control import load_run, stop_run
    from ernie.run import options

    stop_run(*load_run(run_id, stack, inventory, local, results), options(results, wait_ssh), out_console)


@app.command()
def bench(
    workload: str = typer.Argument(..., help="A built-in workload's name, a directory, or a .workload.toml file."),
    stack: str = typer.Option(..., "-s", "--stack", help="The Pulumi stack to bring up, run on and destroy."),
    sets: list[str] = _SET, results: Path = _RESULTS,
    keep: bool = typer.Option(False, "--keep", help="Leave the stack up afterwards (prints how to destroy it)."),
    wait_ssh: float = _WAIT_SSH, lost_after: float = _LOST_AFTER, timeout: float = _TIMEOUT,
) -> None:
    """pulumi up -> run -> collect -> pulumi destroy (always, unless --keep), timed into timeline.json."""
    from ernie.bench import bench_command
    from ernie.run import options

    opts = options(results, wait_ssh, lost_after, timeout)
    raise typer.Exit(bench_command(workload, sets, stack, keep, opts, out_console))
# --- end remote runs ---


# --- comparisons (ernie/compare/): compare ---
@app.command()
def compare(
    plan: Path = typer.Argument(..., help="The plan file (compare.toml; docs/compare.md)."),
    plan_only: bool = typer.Option(False, "--plan", help="Check and estimate every cell, then stop: nothing is "
                                   "created."),
    budget: float = typer.Option(None, "--budget", metavar="USD", help="Refuse a plan whose expected total, or "
                                 "worst case (every host to its TTL), exceeds this."),
    parallel: int = typer.Option(2, "--parallel", help="Cells run at once."),
    resume: bool = typer.Option(False, "--resume", help="Skip the cells already complete."),
    results: Path = _RESULTS, wait_ssh: float = _WAIT_SSH, lost_after: float = _LOST_AFTER,
    timeout: float = _TIMEOUT,
) -> None:
    """A benchmark matrix across clouds: plan (time, cost), run each cell as its own stack, one comparison report."""
    from ernie.compare.command import compare_command
    from ernie.run import options

    opts = options(results, wait_ssh, lost_after, timeout)
    raise typer.Exit(compare_command(plan, plan_only, budget, parallel, resume, opts, out_console))
# --- end comparisons ---


# --- offline plan (ernie/check.py): check ---
@app.command()
def check(
    stack: str = typer.Option(None, "-s", "--stack", help="The stack whose Pulumi.STACK.yaml to check (gcp, aws)."),
    config: Path = typer.Option(None, "--config", help="A config file in the stack files' shape instead."),
) -> None:
    """Offline, before `pulumi up`: resources, workers, $/hour and guardrail findings (exit 1 on a finding)."""
    from ernie.check import run_check  # Pulumi and the cloud SDKs load only for this command

    raise typer.Exit(run_check(stack, config, Console(emoji=False, highlight=False)))
# --- end offline plan ---


# --- serving (ernie/serving/): layers build, serve, invoke ---
layers_app = typer.Typer(help="The serving stack's Lambda layers.", no_args_is_help=True)
app.add_typer(layers_app, name="layers")


@layers_app.command("build")
def layers_build(
    python_version: str = typer.Option(SERVING_PYTHONS[0], "--python-version",
                                       help=f"The Lambda runtime's Python: {', '.join(SERVING_PYTHONS)}."),
    arch: str = typer.Option(ARCHES[0], "--arch", help=f"The Lambda architecture: {' or '.join(ARCHES)}."),
    out: Path = typer.Option(None, "--out", help="Where the zips and their manifest.json go (default "
                             "infra/build/layers); the Pulumi program reads only the default's manifest."),
    functions: list[str] = typer.Option([], "--function", help="Only this function's layers (repeatable)."),
) -> None:
    """Build the serving layers for a Lambda runtime: each layer's size, and the total against the 250 MB limit."""
    from ernie.serving.build import build_layers

    build_layers(functions or None, python_version, arch, out, Console())


@app.command()
def serve(
    local: bool = typer.Option(False, "--local", help="Serve on this machine (the deployed one is `pulumi up`'s)."),
    function: str = typer.Option("tabular", "--function", help="Which function of workloads/serving/layers.toml."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", help="Port to listen on (0: any free one)."),
) -> None:
    """Run a serving handler behind a local HTTP server speaking API Gateway's payload format 2.0."""
    if not local:
        raise ErnieError("serve runs only --local; the deployed endpoint comes from `pulumi up -s aws` with "
                         "ernie:serving true, and `ernie invoke -s aws` calls it")
    from ernie.serving.gateway import serve_local

    serve_local(function, host, port, Console())


@app.command()
def invoke(
    path: str = typer.Argument(None, help="Route to call (default: /predict with --data, else /health)."),
    data: str = typer.Option(None, "--data", help="JSON body to POST, or @FILE."),
    stack: str = typer.Option(None, "-s", "--stack", help="The endpoint from this stack's inventory (serving_url)."),
    inventory: Path = typer.Option(None, "--inventory", help="The endpoint from an inventory file's serving_url."),
    url: str = typer.Option(None, "--url", help="This endpoint instead (e.g. `ernie serve --local`'s)."),
) -> None:
    """Call the serving endpoint; exit 0 on a 2xx answer, 1 otherwise."""
    from ernie.serving.invoke import invoke as call
    from ernie.serving.invoke import print_answer, read_data, serving_url

    body = read_data(data)
    status, answer = call(serving_url(stack, inventory, url), path or ("/predict" if body else "/health"), body)
    raise typer.Exit(print_answer(status, answer, SafeConsole()))
# --- end serving ---


def main() -> None:
    """Console entry point: a user error is one red line and exit status 2, Ctrl-C one line and 130: no traceback."""
    try:
        app()
    except ErnieError as exc:
        # The message quotes user values and what hosts said ("[...]", escapes): printed as cleaned text.
        err_console.print(Text.assemble(("error: ", "bold red"), remote(str(exc))), highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]", highlight=False)
        sys.exit(130)  # the shell's status for a SIGINT
