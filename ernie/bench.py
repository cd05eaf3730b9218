"""`ernie bench -s STACK WORKLOAD`: pulumi refresh + up -> ernie run -> collect -> pulumi destroy.

Destroy runs on success, on failure and on Ctrl-C, SIGTERM or SIGHUP (a closed terminal), always after
collection has finished or timed out (a second signal skips the rest of the collection, never the
destroy); `--keep` skips it and says how to destroy later. A destroy that fails says how to finish it by
hand and makes the exit status non-zero, without hiding the error that came before it. Provisioning
and teardown are steps of timeline.json like the run's own: they are part of what a benchmark costs.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from rich.console import Console

from ernie.errors import ErnieError
from ernie.inventory import Inventory, parse_inventory
from ernie.pulumi_cli import PulumiCli
from ernie.control import stop_run
from ernie.run import RunOptions, collect_run, run_workload
from ernie.rundir import TIMELINE, RunRecord, Timeline, new_run_id
from ernie.terminal import remote
from ernie.workload import find_workload, resolve

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _handled(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """`handler` for every stop signal while the block runs, the previous handlers afterwards."""
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


def bench_command(workload: str, sets: list[str], stack: str, keep: bool, opts: RunOptions, console: Console,
                  pulumi: PulumiCli | None = None, run_id: str | None = None) -> int:
    """Provision, run, collect and destroy; the run's exit status (128 + the signal's number when interrupted).
    `run_id`: the run's id when the caller chose it (`ernie compare` records it before the cell starts)."""
    resolved = resolve(find_workload(workload), sets)  # a bad workload fails before anything is created
    pulumi = pulumi or PulumiCli()
    run_id = run_id or new_run_id(resolved.workload.name)
    timeline = Timeline(opts.results_root / run_id / TIMELINE, run_id)
    code, inventory, destroyed = 1, None, True
    received: list[int] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    with _handled(interrupt):
        try:
            with timeline.step("provision"):
                # A refresh first: hosts a TTL teardown or a preemption took are made again, not taken as there.
                replaced = pulumi.bring_up(stack)
            if replaced:
                console.print(remote(f"replaced {len(replaced)} resource(s) that could not come back: "
                                     f"{', '.join(replaced)}", "yellow"))
            inventory = parse_inventory(pulumi.inventory(stack), source=f"stack {stack}")
            code = run_workload(resolved, inventory, {"kind": "stack", "value": stack}, opts, console,
                                run_id=run_id, timeline=timeline)
        except KeyboardInterrupt:
            code = 128 + (received[0] if received else signal.SIGINT)
            console.print(f"[yellow]interrupted ({signal.Signals(code - 128).name}): stopping the workers and "
                          "collecting what they wrote, then destroying the stack (a second signal skips the "
                          "collection, not the destroy)[/]")
            if inventory is not None:
                _collect_after_interrupt(run_id, inventory, opts, console, timeline)
        finally:
            if keep:
                console.print(f"[yellow]--keep: stack {stack} is still up and billing; destroy it with "
                              f"`pulumi destroy -s {stack}`[/]")
            else:
                destroyed = _destroy(pulumi, stack, timeline, console)
    return code if destroyed else (code or 1)


def _destroy(pulumi: PulumiCli, stack: str, timeline: Timeline, console: Console) -> bool:
    """`pulumi destroy`, which no signal cuts short; False, having said how to finish by hand, when it failed."""

    def wait(signum: int, frame: FrameType | None) -> None:
        console.print(f"[yellow]{signal.Signals(signum).name}: destroying stack {stack}; waiting for it to finish[/]")

    try:
        # A Python handler, not SIG_IGN: pulumi (in its own process group) must not inherit an ignored SIGINT.
        with _handled(wait), timeline.step("destroy"):
            pulumi.destroy(stack)
    except ErnieError as exc:
        console.print(remote(str(exc), "red"))
        console.print(f"[bold red]stack {stack} may still be up: run `pulumi destroy -s {stack}`[/]")
        return False
    return True


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
        console.print(remote(str(exc), "red"))
    except KeyboardInterrupt:
        console.print("[red]stopping skipped[/]")
        return
    try:
        collect_run(record, inventory, opts, console, timeline=timeline, patience_s=patience)
    except KeyboardInterrupt:
        console.print("[red]collection skipped[/]")
    except ErnieError as exc:
        console.print(remote(f"collection failed: {exc}", "red"))
