"""`ernie run`: carry a run out, from SSH to manifest.json, and collect it again later (`ernie collect`).

A run: wait for SSH on every host -> push the bundle -> set up each host -> start detached on every
worker -> follow worker 0's progress -> collect every worker's output -> manifest.json. Each step is
timed into timeline.json. Everything a later command needs (`ernie status`, `logs` and `stop` in
`ernie.control`, and `ernie run --resume`, which restarts a run where its checkpoints left off) is kept
in results/RUN_ID/run.json; the run directory's format is `ernie.rundir`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ernie.errors import ErnieError
from ernie.inventory import Inventory, resolve_inventory
from ernie.remote.collect import Collected, SharedFetches, collect_host, sha256_file
from ernie.remote.connect import Connector, Session, Timeouts, close_all, closing_sessions, fan_out
from ernie.remote.push import Bundle, PushResult
from ernie.remote.relay import check_mode, push_all
from ernie.remote.runners import SETUP_TIMEOUT_S, Probe, RunSpec, probe, setup, start, stop, wait_bootstrap
from ernie.remote.stream import Follower
from ernie.rundir import (
    COMPLETE,
    FAILED,
    KNOWN_HOSTS,
    MISSING,
    STREAM_COPY,
    TIMELINE,
    RunRecord,
    Timeline,
    host_dir,
    host_entry,
    inventory_source,
    missing_entry,
    new_run_id,
    now_iso,
    read_manifest,
    write_manifest,
)
from ernie.terminal import remote
from ernie.workload import ResolvedWorkload


@dataclass
class RunOptions:
    """How patient a run is, and where it writes."""

    results_root: Path = Path("results")
    timeouts: Timeouts = field(default_factory=Timeouts)
    run_timeout_s: float = 24 * 3600.0  # past this the workers are stopped and what exists is collected
    lost_after_s: float = 300.0  # a host unreachable this long mid-run is given up on
    collect_timeout_s: float = 1800.0
    push: str = "auto"  # --push: auto (direct for one host or a fast link, else relay), direct or relay


def host_of(s: Session) -> str:
    """A session's key in a fan-out's outcomes."""
    return s.host.name


def _fail_on_errors(what: str, outcomes: dict[str, Any]) -> None:
    errors = {name: o.error for name, o in outcomes.items() if not o.ok}
    if errors:
        lines = "; ".join(f"{name}: {err}" for name, err in sorted(errors.items()))
        raise ErnieError(f"{what} failed on {len(errors)} of {len(outcomes)} host(s): {lines}")


def run_workload(resolved: ResolvedWorkload, inventory: Inventory, source: dict[str, str], opts: RunOptions,
                 console: Console, run_id: str | None = None, timeline: Timeline | None = None,
                 on_started: Callable[[str], None] | None = None) -> int:
    """Run a resolved workload on every host of the inventory; 0 only if every worker finished 0 and was collected."""
    workload = resolved.workload
    run_id = run_id or new_run_id(workload.name)
    record = RunRecord(
        run_id=run_id, workload=workload.name, spec_file=str(workload.spec_file), params=resolved.params,
        command=resolved.command, created=now_iso(), inventory_source=source, inventory=inventory.public(),
        collect_paths=list(workload.collect_paths), progress_total=resolved.progress_total,
        progress_regex=workload.progress_regex, requirements=workload.requirements,
        requirements_sha256=sha256_file(workload.directory / workload.requirements) if workload.requirements else None)
    record.save(opts.results_root)
    return execute(record, inventory, opts, console, timeline, on_started)


def execute(record: RunRecord, inventory: Inventory, opts: RunOptions, console: Console,
            timeline: Timeline | None = None, on_started: Callable[[str], None] | None = None) -> int:
    """Carry out a recorded run: wait for SSH, push, set up, start, follow, collect.

    Everything comes from the record, so a run can be carried out again from results/RUN_ID/run.json.
    """
    run_dir = opts.results_root / record.run_id
    timeline = timeline or Timeline(run_dir / TIMELINE, record.run_id)
    console.print(f"run [bold]{record.run_id}[/]: {record.workload} on {len(inventory.hosts)} worker(s) "
                  f"({inventory.runner} runner, {inventory.source})")
    connector = Connector(inventory, run_dir / KNOWN_HOSTS, opts.timeouts)
    bundling = ThreadPoolExecutor(1, thread_name_prefix="bundle")
    packed = bundling.submit(_bundle, record)  # hashed, then packed, while the hosts answer and boot
    bundling.shutdown(wait=False)
    sessions = _wait_for_ssh(connector, inventory, opts, console, timeline)
    record.host_bases = {name: s.base for name, s in sessions.items()}
    record.save(opts.results_root)
    spec = _spec(record, inventory)
    layouts = {name: record.layout(name) for name in sessions}
    with closing_sessions(sessions):
        if inventory.bootstrap is not None:
            _wait_for_bootstrap(sessions, inventory, opts, console, timeline)
        bundle = packed.result()
        with timeline.step("push"):
            pushed = push_all(list(sessions.values()), bundle, {n: lay.bundle for n, lay in layouts.items()},
                              inventory, opts.push, opts.timeouts, console.print)
            for note in pushed.notes:
                console.print(f"[yellow]push: {note}[/]", highlight=False)
            _fail_on_errors("pushing the bundle", pushed.outcomes)
        _report_push(console, {n: o.value for n, o in pushed.outcomes.items()}, bundle)
        with timeline.step("setup"):
            done = fan_out(lambda s: setup(s, layouts[s.host.name], spec), sessions.values(),
                           timeout=SETUP_TIMEOUT_S + opts.timeouts.command, name=host_of)
            _fail_on_errors("setting up", done)
        for name, o in sorted(done.items()):
            console.print(f"{name}: set up ({o.value})")
        with timeline.step("run"):
            started = fan_out(lambda s: start(s, layouts[s.host.name], spec), sessions.values(),
                              timeout=opts.timeouts.command * 2, name=host_of)
            if not all(o.ok for o in started.values()):
                stop_workers(record, inventory, sessions, console)
                _fail_on_errors("starting the workload", started)
            if on_started is not None:
                on_started(record.run_id)
            follower = Follower(connector, sessions, layouts, console, total=record.progress_total,
                                regex=record.progress_regex, stream_copy=run_dir / STREAM_COPY,
                                lost_after=opts.lost_after_s)
            followed = follower.follow(time.monotonic() + opts.run_timeout_s, f"{record.workload} worker 0")
            # The follower reconnects lost hosts: its sessions are the ones left to use and close.
            sessions.clear()
            sessions.update({n: f.session for n, f in follower.hosts.items() if f.session is not None})
            if followed.timed_out:
                console.print(f"[red]the run passed its {opts.run_timeout_s:.0f}s limit: stopping every worker[/]")
                stop_workers(record, inventory, sessions, console)
    return collect_run(record, inventory, opts, console, timeline=timeline, lost=followed.lost,
                       patience_s=opts.timeouts.connect * 2)


def _spec(record: RunRecord, inventory: Inventory) -> RunSpec:
    """What every host is told to run: the record's command, on the inventory's runner."""
    return RunSpec(run_id=record.run_id, workload=record.workload, command=record.command, runner=inventory.runner,
                   num_workers=len(inventory.hosts), coordinator_address=inventory.coordinator.private_address,
                   image=inventory.image, requirements=record.requirements,
                   requirements_sha256=record.requirements_sha256, registry_login=inventory.registry_login,
                   container=inventory.container)


def _wait_for_ssh(connector: Connector, inventory: Inventory, opts: RunOptions, console: Console,
                  timeline: Timeline) -> dict[str, Session]:
    """A session to every host, or ErnieError naming each host that did not answer in time."""
    if inventory.runner != "local":  # the local runner opens a shell on this machine: nothing to wait for
        console.print(f"waiting for SSH on {len(inventory.hosts)} host(s) (at most {opts.timeouts.wait_ssh:.0f}s)")
    with timeline.step("wait_ssh"):
        deadline = time.monotonic() + opts.timeouts.wait_ssh
        opened = fan_out(lambda h: connector.wait(h, deadline), inventory.hosts,
                         timeout=opts.timeouts.wait_ssh + opts.timeouts.connect * 3, name=lambda h: h.name)
        sessions = {name: o.value for name, o in opened.items() if o.ok}
        try:
            _fail_on_errors("connecting", opened)
        except ErnieError:
            close_all(sessions.values())
            raise
    return sessions


def _wait_for_bootstrap(sessions: dict[str, Session], inventory: Inventory, opts: RunOptions, console: Console,
                        timeline: Timeline) -> None:
    """Every host's boot script has finished (its done marker), or ErnieError with each failed host's log tail."""
    bootstrap = inventory.bootstrap
    console.print(f"waiting for the boot script on {len(sessions)} host(s) ({bootstrap.done_file}, at most "
                  f"{bootstrap.timeout_s:.0f}s)")
    with timeline.step("wait_bootstrap"):
        waited = fan_out(lambda s: wait_bootstrap(s, bootstrap), sessions.values(),
                         timeout=bootstrap.timeout_s + opts.timeouts.command * 2, name=host_of)
        _fail_on_errors("waiting for the boot script", waited)


def _bundle(record: RunRecord) -> Bundle:
    """The workload's directory plus ernie_run.json, the run's resolved parameters; its archives for fresh
    hosts are being built in the background."""
    resolved = {"run_id": record.run_id, "workload": record.workload, "params": record.params,
                "command": record.command}
    bundle = Bundle.from_directory(Path(record.spec_file).parent,
                                   extra={"ernie_run.json": json.dumps(resolved, indent=2).encode()})
    bundle.pack_ahead()
    return bundle


def _report_push(console: Console, pushed: dict[str, PushResult], bundle: Bundle) -> None:
    for name, r in sorted(pushed.items()):
        via = f" ({r.relayed_bytes:,} bytes relayed from {r.via})" if r.via else ""
        console.print(f"{name}: pushed {r.files_sent} of {len(bundle.files)} file(s), {r.bytes_sent:,} bytes "
                      f"sent for a {bundle.total_bytes:,}-byte bundle{via}" + (f", {r.files_deleted} removed"
                                                                                 if r.files_deleted else ""))


def stop_workers(record: RunRecord, inventory: Inventory, sessions: dict[str, Session], console: Console) -> None:
    """End every reachable worker's process group; report the ones that could not be reached."""
    outcomes = fan_out(lambda s: stop(s, record.layout(s.host.name), inventory.runner, record.run_id),
                       sessions.values(), timeout=60, name=host_of)
    for name, o in sorted(outcomes.items()):
        console.print(f"{name}: ", ("stopped" if o.value else "not running") if o.ok else remote(str(o.error), "red"))


def connect_all(record: RunRecord, inventory: Inventory, opts: RunOptions,
                 patience_s: float) -> tuple[dict[str, Session], dict[str, str]]:
    """Sessions to every host of a recorded run (with its known_hosts), and why any could not be opened."""
    unknown = set(record.host_bases) - {h.name for h in inventory.hosts}
    if unknown:
        raise ErnieError(f"run {record.run_id}: host(s) {sorted(unknown)} are not in {inventory.source}; "
                         "pass the inventory the run was started with")
    connector = Connector(inventory, opts.results_root / record.run_id / KNOWN_HOSTS, opts.timeouts)
    deadline = time.monotonic() + patience_s
    hosts = [h for h in inventory.hosts if h.name in record.host_bases]
    opened = fan_out(lambda h: connector.wait(h, deadline), hosts, timeout=patience_s + opts.timeouts.connect * 3,
                     name=lambda h: h.name)
    sessions = {n: o.value for n, o in opened.items() if o.ok}
    return sessions, {n: str(o.error) for n, o in opened.items() if not o.ok}


def collect_run(record: RunRecord, inventory: Inventory, opts: RunOptions, console: Console,
                timeline: Timeline | None = None, lost: dict[str, str] | None = None,
                patience_s: float | None = None) -> int:
    """Collect every worker into results/RUN_ID/HOST/ and write manifest.json; 0 only if all are complete.

    Hosts get `patience_s` (default: the options' wait_ssh) to answer. A host that cannot be reached
    keeps whatever an earlier collect brought home (still verified).
    """
    run_dir = opts.results_root / record.run_id
    timeline = timeline or Timeline.load(run_dir / TIMELINE, record.run_id)  # a later collect adds to it
    with timeline.step("collect"):
        sessions, unreachable = connect_all(record, inventory, opts, patience_s or opts.timeouts.wait_ssh)
        unreachable.update({n: why for n, why in (lost or {}).items() if n not in sessions})

        shared = SharedFetches()  # a large output several workers hold alike crosses the link once

        def one(s: Session) -> tuple[Probe, Collected]:
            layout = record.layout(s.host.name)
            return probe(s, layout), collect_host(s, layout, host_dir(run_dir, s.host.name),
                                                  tuple(record.collect_paths), shared)

        with closing_sessions(sessions):
            outcomes = fan_out(one, sessions.values(), timeout=opts.collect_timeout_s, name=host_of)
        previous = read_manifest(run_dir).get("hosts", {})
        hosts_out: dict[str, dict[str, Any]] = {}
        for host in sorted(inventory.hosts, key=lambda h: h.worker):
            if host.name not in record.host_bases:
                continue
            outcome = outcomes.get(host.name)
            if outcome is not None and outcome.ok:
                hosts_out[host.name] = host_entry(host, *outcome.value)
            else:
                reason = str(outcome.error) if outcome is not None else unreachable.get(host.name, "unreachable")
                hosts_out[host.name] = missing_entry(host, run_dir, previous.get(host.name, {}), reason)
        write_manifest(run_dir, record, hosts_out)
    _print_summary(console, record.run_id, hosts_out, run_dir)
    return 0 if all(h["state"] == COMPLETE for h in hosts_out.values()) else 1


def _print_summary(console: Console, run_id: str, hosts: dict[str, dict[str, Any]], run_dir: Path) -> None:
    table = Table(title=f"run {run_id}", title_justify="left")
    for column in ("host", "worker", "state", "exit code", "files", "note"):
        table.add_column(column)
    style = {COMPLETE: "green", FAILED: "red", MISSING: "yellow"}
    for name, h in hosts.items():
        table.add_row(name, str(h["worker"]), f"[{style[h['state']]}]{h['state']}[/]",
                      "-" if h["exit_code"] is None else str(h["exit_code"]), str(len(h["files"])),
                      h.get("reason", ""))
    console.print(table)
    console.print(f"results: {run_dir}/ (manifest.json, timeline.json)")


def options(results: Path, wait_ssh_s: float = 600.0, lost_after_s: float = 300.0,
            timeout_minutes: float = 24 * 60.0, push: str = "auto") -> RunOptions:
    """RunOptions from the command line's values, validated."""
    check_mode(push)
    for flag, value in (("--wait-ssh-seconds", wait_ssh_s), ("--lost-after-seconds", lost_after_s),
                        ("--timeout-minutes", timeout_minutes)):
        if value <= 0:
            raise ErnieError(f"{flag}: {value} must be > 0")
    return RunOptions(results_root=results, timeouts=Timeouts(wait_ssh=wait_ssh_s), lost_after_s=lost_after_s,
                      run_timeout_s=timeout_minutes * 60, push=push)


def run_command(workload: str, sets: list[str], stack: str | None, inventory_file: Path | None, local: bool,
                opts: RunOptions, console: Console) -> int:
    """`ernie run`: resolve everything (errors before anything is touched), then run."""
    from ernie.workload import find_workload, resolve

    resolved = resolve(find_workload(workload), sets)
    inventory = resolve_inventory(stack, inventory_file, local)
    started: list[str] = []
    try:
        return run_workload(resolved, inventory, inventory_source(stack, inventory_file, local), opts, console,
                            on_started=started.append)
    except KeyboardInterrupt:
        if not started:
            raise
        run_id = started[0]
        console.print(f"[yellow]interrupted: the workers go on. Watch them with `ernie status {run_id}` or "
                      f"`ernie logs {run_id} --follow`, bring their output home with `ernie collect {run_id}`, "
                      f"end them with `ernie stop {run_id}`[/]")
        return 130

