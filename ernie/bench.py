"""`ernie bench -s STACK WORKLOAD`: pulumi up -> ernie run -> collect -> pulumi destroy.

Destroy runs on success, on failure and on Ctrl-C, always after collection has finished or timed out
(a second Ctrl-C skips the rest of the collection, never the destroy); `--keep` skips it and says how to
destroy later. Provisioning and teardown are steps of timeline.json like the run's own: they are part
of what a benchmark costs.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from ernie.errors import ErnieError
from ernie.inventory import Inventory, parse_inventory
from ernie.pulumi_cli import PulumiCli
from ernie.run import TIMELINE, RunOptions, RunRecord, Timeline, collect_run, new_run_id, run_workload, stop_run
from ernie.workload import find_workload, resolve

INTERRUPTED = 130  # the shell's status for a SIGINT


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ctrl-C cannot cut this short; the children started meanwhile (pulumi destroy) ignore it too."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def bench_command(workload: str, sets: list[str], stack: str, keep: bool, opts: RunOptions, console: Console,
                  pulumi: PulumiCli | None = None) -> int:
    """Provision, run, collect and destroy; the run's exit status (130 when interrupted)."""
    resolved = resolve(find_workload(workload), sets)  # a bad workload fails before anything is created
    pulumi = pulumi or PulumiCli()
    run_id = new_run_id(resolved.workload.name)
    timeline = Timeline(opts.results_root / run_id / TIMELINE, run_id)
    code, inventory = 1, None
    try:
        with timeline.step("provision"):
            pulumi.up(stack)
        inventory = parse_inventory(pulumi.inventory(stack), source=f"stack {stack}")
        code = run_workload(resolved, inventory, {"kind": "stack", "value": stack}, opts, console,
                            run_id=run_id, timeline=timeline)
    except KeyboardInterrupt:
        code = INTERRUPTED
        console.print("[yellow]interrupted: stopping the workers and collecting what they wrote, then destroying "
                      "the stack (Ctrl-C again skips the collection, not the destroy)[/]")
        if inventory is not None:
            _collect_after_interrupt(run_id, inventory, opts, console, timeline)
    finally:
        if keep:
            console.print(f"[yellow]--keep: stack {stack} is still up and billing; destroy it with "
                          f"`pulumi destroy -s {stack}`[/]")
        else:
            with _sigint_ignored(), timeline.step("destroy"):
                pulumi.destroy(stack)
    return code


def _collect_after_interrupt(run_id: str, inventory: Inventory, opts: RunOptions, console: Console,
                             timeline: Timeline) -> None:
    """Stop and collect an interrupted run if its workers had been reached; a second Ctrl-C gives up on it."""
    try:
        record = RunRecord.load(opts.results_root, run_id)
    except ErnieError:
        return  # interrupted before the run began: nothing on the hosts to collect
    if not record.host_bases:
        return
    patience = opts.timeouts.connect * 2
    try:
        stop_run(record, inventory, opts, console, patience_s=patience)
    except ErnieError as exc:
        console.print(f"[red]{exc}[/]")
    except KeyboardInterrupt:
        console.print("[red]stopping skipped[/]")
        return
    try:
        collect_run(record, inventory, opts, console, timeline=timeline, patience_s=patience)
    except KeyboardInterrupt:
        console.print("[red]collection skipped[/]")
    except ErnieError as exc:
        console.print(f"[red]collection failed: {exc}[/]")
