"""`ernie run` and the commands that act on a run later: status, logs, collect, stop.

A run: wait for SSH on every host -> push the bundle -> set up each host -> start detached on every
worker -> follow worker 0's progress -> collect every worker's output -> manifest.json. Each step is
timed into timeline.json. Everything a later command needs (and `ernie run --resume`, which restarts
a run where its checkpoints left off) is kept in results/RUN_ID/run.json: the resolved workload, the
inventory's source and public copy, and each host's directory. No secret is ever written there.
"""

from __future__ import annotations

import json
import secrets
import shlex
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ernie.errors import ErnieError
from ernie.inventory import Host, Inventory, resolve_inventory
from ernie.names import HOST_NAME, RUN_ID, UnsafeName, path_under
from ernie.remote.collect import Collected, SharedFetches, collect_host, sha256_file
from ernie.remote.connect import Connector, RemoteError, Session, Timeouts, fan_out
from ernie.remote.layout import Layout
from ernie.remote.push import Bundle, PushResult
from ernie.remote.relay import check_mode, push_all
from ernie.remote.runners import SETUP_TIMEOUT_S, Probe, RunSpec, probe, setup, start, stop, wait_bootstrap
from ernie.remote.stream import Follower, utf8_decoder
from ernie.terminal import remote
from ernie.workload import ResolvedWorkload

RUN_FILE = "run.json"
MANIFEST = "manifest.json"
TIMELINE = "timeline.json"
KNOWN_HOSTS = "known_hosts"
STREAM_COPY = "worker0.stream.log"  # worker 0's stdout as the live stream received it


def new_run_id(workload: str) -> str:
    """`YYYYmmdd-HHMMSS-<workload>-<4 hex>`, in UTC."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{workload}-{secrets.token_hex(2)}"


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Timeline:
    """results/RUN_ID/timeline.json, rewritten as each step ends so an interrupted run keeps what it did."""

    def __init__(self, path: Path, run_id: str) -> None:
        self.path = path
        self.run_id = run_id
        self.steps: list[dict[str, Any]] = []

    @classmethod
    def load(cls, path: Path, run_id: str) -> Timeline:
        """A run's timeline so far, to be continued (`ernie collect`, `ernie run --resume`)."""
        timeline = cls(path, run_id)
        if path.is_file():
            timeline.steps = list(json.loads(path.read_text()).get("steps", []))
        return timeline

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time one step; `ok` is False when it raised (Ctrl-C included)."""
        start, ok = time.time(), False
        try:
            yield
            ok = True
        finally:
            self.add(name, start, time.time(), ok)

    def add(self, name: str, start: float, end: float, ok: bool, **details: Any) -> None:
        """Record one step (with any `details`) and rewrite the file."""
        self.steps.append({"name": name, "start": round(start, 3), "end": round(end, 3),
                           "duration_s": round(end - start, 3), "ok": ok, **details})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"run_id": self.run_id, "steps": self.steps}, indent=2) + "\n")


@dataclass
class RunOptions:
    """How patient a run is, and where it writes."""

    results_root: Path = Path("results")
    timeouts: Timeouts = field(default_factory=Timeouts)
    run_timeout_s: float = 24 * 3600.0  # past this the workers are stopped and what exists is collected
    lost_after_s: float = 300.0  # a host unreachable this long mid-run is given up on
    collect_timeout_s: float = 1800.0
    push: str = "auto"  # --push: auto (direct for one host or a fast link, else relay), direct or relay


@dataclass
class RunRecord:
    """results/RUN_ID/run.json: the run's resolved state."""

    run_id: str
    workload: str
    spec_file: str
    params: dict[str, Any]
    command: str
    created: str
    inventory_source: dict[str, str]  # {"kind": "stack"|"file"|"local", "value": ...}
    inventory: dict[str, Any]  # Inventory.public(): no secret
    collect_paths: list[str]
    progress_total: int | None
    progress_regex: str | None
    requirements: str | None
    requirements_sha256: str | None
    host_bases: dict[str, str] = field(default_factory=dict)  # host -> ernie's directory on it

    @classmethod
    def load(cls, results_root: Path, run_id: str | None) -> RunRecord:
        """A run's record; the most recent run that reached its hosts when `run_id` is None."""
        if run_id is None:
            runs = sorted(p.parent.name for p in results_root.glob(f"*/{RUN_FILE}")
                          if RUN_ID.fullmatch(p.parent.name) and _reached_hosts(p))
            if not runs:
                raise ErnieError(f"no run under {results_root}/ reached its hosts: start one with "
                                 "`ernie run WORKLOAD`, or name a RUN_ID")
            run_id = runs[-1]
        if not RUN_ID.fullmatch(run_id):
            raise ErnieError(f"RUN_ID {run_id!r} is not a run id (YYYYmmdd-HHMMSS-WORKLOAD-XXXX, a directory "
                             f"under {results_root}/)")
        path = results_root / run_id / RUN_FILE
        if not path.is_file():
            raise ErnieError(f"run {run_id}: no {path} (is --results {results_root} the right directory?)")
        try:
            record = cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise ErnieError(f"{path}: not a run record ({exc}); start a new run") from exc
        record.check(path)
        return record

    def check(self, path: Path) -> None:
        """Refuse a run.json whose names were edited: they reach paths here and run.sh on every host."""
        def fail(key: str, problem: str) -> ErnieError:
            return ErnieError(f"{path}: {key}: {problem}; restore the run's own run.json or start a new run")

        run_id = RUN_ID.fullmatch(self.run_id) if isinstance(self.run_id, str) else None
        if run_id is None:
            raise fail("run_id", f"{self.run_id!r} is not a run id (YYYYmmdd-HHMMSS-WORKLOAD-XXXX)")
        if self.run_id != path.parent.name:
            raise fail("run_id", f"{self.run_id!r} is not the name of its directory {path.parent.name!r}")
        if self.workload != run_id["workload"]:
            raise fail("workload", f"{self.workload!r} is not the workload its run id names ({run_id['workload']!r})")
        if not isinstance(self.host_bases, dict) or not all(
                HOST_NAME.fullmatch(h) and isinstance(b, str) for h, b in self.host_bases.items()):
            raise fail("host_bases", "expected {plain host name: its ernie directory}")

    def save(self, results_root: Path) -> None:
        path = results_root / self.run_id / RUN_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    def spec(self, inventory: Inventory) -> RunSpec:
        return RunSpec(run_id=self.run_id, workload=self.workload, command=self.command, runner=inventory.runner,
                       num_workers=len(inventory.hosts), coordinator_address=inventory.coordinator.private_address,
                       image=inventory.image, requirements=self.requirements,
                       requirements_sha256=self.requirements_sha256, registry_login=inventory.registry_login,
                       container=inventory.container)

    def layout(self, host: str) -> Layout:
        return Layout(base=self.host_bases[host], workload=self.workload, run_id=self.run_id)


def _reached_hosts(run_file: Path) -> bool:
    """Whether a run got as far as its hosts (a run that never did has no host directories to act on)."""
    try:
        return bool(json.loads(run_file.read_text()).get("host_bases"))
    except (OSError, ValueError, AttributeError):
        return False


def inventory_source(stack: str | None, inventory_file: Path | None, local: bool) -> dict[str, str]:
    """Where the inventory came from, recorded so later commands can find the same hosts."""
    if local:
        return {"kind": "local", "value": "local"}
    if inventory_file is not None:
        return {"kind": "file", "value": str(inventory_file.resolve())}
    return {"kind": "stack", "value": stack or ""}


def recorded_inventory(record: RunRecord, stack: str | None, inventory_file: Path | None, local: bool) -> Inventory:
    """The inventory given on the command line, else the one the run was started with."""
    if stack or inventory_file or local:
        return resolve_inventory(stack, inventory_file, local)
    src = record.inventory_source
    return resolve_inventory(src["value"] if src["kind"] == "stack" else None,
                             Path(src["value"]) if src["kind"] == "file" else None, src["kind"] == "local")


def _host_of(s: Session) -> str:
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
        command=resolved.command, created=_now_iso(), inventory_source=source, inventory=inventory.public(),
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
    spec = record.spec(inventory)
    layouts = {name: record.layout(name) for name in sessions}
    try:
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
                           timeout=SETUP_TIMEOUT_S + opts.timeouts.command, name=_host_of)
            _fail_on_errors("setting up", done)
        for name, o in sorted(done.items()):
            console.print(f"{name}: set up ({o.value})")
        with timeline.step("run"):
            started = fan_out(lambda s: start(s, layouts[s.host.name], spec), sessions.values(),
                              timeout=opts.timeouts.command * 2, name=_host_of)
            if not all(o.ok for o in started.values()):
                stop_workers(record, inventory, sessions, console)
                _fail_on_errors("starting the workload", started)
            if on_started is not None:
                on_started(record.run_id)
            follower = Follower(connector, sessions, layouts, console, total=record.progress_total,
                                regex=record.progress_regex, stream_copy=run_dir / STREAM_COPY,
                                lost_after=opts.lost_after_s)
            followed = follower.follow(time.monotonic() + opts.run_timeout_s, f"{record.workload} worker 0")
            sessions = {n: f.session for n, f in follower.hosts.items() if f.session is not None}
            if followed.timed_out:
                console.print(f"[red]the run passed its {opts.run_timeout_s:.0f}s limit: stopping every worker[/]")
                stop_workers(record, inventory, sessions, console)
    finally:
        for s in sessions.values():
            s.close()
    return collect_run(record, inventory, opts, console, timeline=timeline, lost=followed.lost,
                       patience_s=opts.timeouts.connect * 2)


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
            for s in sessions.values():
                s.close()
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
                         timeout=bootstrap.timeout_s + opts.timeouts.command * 2, name=_host_of)
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
                       sessions.values(), timeout=60, name=_host_of)
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
            return probe(s, layout), collect_host(s, layout, run_dir / s.host.name, tuple(record.collect_paths),
                                                  shared)

        try:
            outcomes = fan_out(one, sessions.values(), timeout=opts.collect_timeout_s, name=_host_of)
        finally:
            for s in sessions.values():
                s.close()
        previous = _load_manifest(run_dir).get("hosts", {})
        hosts_out: dict[str, dict[str, Any]] = {}
        for host in sorted(inventory.hosts, key=lambda h: h.worker):
            if host.name not in record.host_bases:
                continue
            outcome = outcomes.get(host.name)
            if outcome is not None and outcome.ok:
                state, collected = outcome.value
                hosts_out[host.name] = _host_entry(host, state, collected)
            else:
                reason = str(outcome.error) if outcome is not None else unreachable.get(host.name, "unreachable")
                kept = _still_verified(run_dir / host.name, previous.get(host.name, {}).get("files", {}))
                hosts_out[host.name] = {"worker": host.worker, "state": "missing",
                                        "exit_code": previous.get(host.name, {}).get("exit_code"),
                                        "files": kept, "reason": reason}
        _write_manifest(run_dir, record, hosts_out)
    _print_summary(console, record.run_id, hosts_out, run_dir)
    return 0 if all(h["state"] == "complete" for h in hosts_out.values()) else 1


def _host_entry(host: Host, state: Probe, collected: Collected) -> dict[str, Any]:
    entry: dict[str, Any] = {"worker": host.worker, "state": "", "exit_code": state.exit_code,
                             "files": collected.files,
                             "fetched": {"files": collected.fetched_files, "bytes": collected.fetched_bytes}}
    if state.running:
        entry.update(state="missing", reason="still running: collect again when it has finished")
    elif state.exit_code == 0:
        entry["state"] = "complete"
    else:
        entry["state"] = "failed"
        if state.exit_code is None:
            entry["reason"] = "the process ended without an exit code (killed)"
    if collected.refused:  # names the host listed that ernie would not write (ernie.remote.collect)
        entry["refused"] = collected.refused
        refused = f"{len(collected.refused)} file name(s) refused as unsafe (see 'refused' in manifest.json)"
        entry["reason"] = f"{entry['reason']}; {refused}" if entry.get("reason") else refused
    return entry


def _still_verified(host_dir: Path, files: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The files an earlier collect brought home that are still here, unchanged (names checked like a host's)."""
    kept = {}
    for name, meta in files.items():
        try:
            path = path_under(host_dir, name)
        except UnsafeName:
            continue
        if isinstance(meta, dict) and path.is_file() and sha256_file(path) == meta.get("sha256"):
            kept[name] = meta
    return kept


def _load_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_manifest(run_dir: Path, record: RunRecord, hosts: dict[str, dict[str, Any]]) -> None:
    manifest = {"run_id": record.run_id, "workload": record.workload, "created": record.created,
                "params": record.params, "inventory": record.inventory, "hosts": hosts}
    tmp = run_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(run_dir / MANIFEST)


def _print_summary(console: Console, run_id: str, hosts: dict[str, dict[str, Any]], run_dir: Path) -> None:
    table = Table(title=f"run {run_id}", title_justify="left")
    for column in ("host", "worker", "state", "exit code", "files", "note"):
        table.add_column(column)
    style = {"complete": "green", "failed": "red", "missing": "yellow"}
    for name, h in hosts.items():
        table.add_row(name, str(h["worker"]), f"[{style[h['state']]}]{h['state']}[/]",
                      "-" if h["exit_code"] is None else str(h["exit_code"]), str(len(h["files"])),
                      h.get("reason", ""))
    console.print(table)
    console.print(f"results: {run_dir}/ (manifest.json, timeline.json)")


def status_run(record: RunRecord, inventory: Inventory, opts: RunOptions, console: Console) -> None:
    """Print each worker's state: running, exited (code) or unreachable."""
    sessions, unreachable = connect_all(record, inventory, opts, opts.timeouts.wait_ssh)
    try:
        probes = fan_out(lambda s: probe(s, record.layout(s.host.name)), sessions.values(),
                         timeout=opts.timeouts.command, name=_host_of)
    finally:
        for s in sessions.values():
            s.close()
    table = Table(title=f"run {record.run_id} ({record.workload})", title_justify="left")
    for column in ("host", "state", "exit code", "stdout bytes"):
        table.add_column(column)
    for name in record.host_bases:
        o = probes.get(name)
        if o is None or not o.ok:
            table.add_row(name, "[yellow]unreachable[/]", "-", remote(str(unreachable.get(name) or (o and o.error))))
            continue
        p = o.value
        state = "running" if p.running else ("exited" if p.exit_code is not None else "ended (killed)")
        table.add_row(name, state, "-" if p.exit_code is None else str(p.exit_code), f"{p.stdout_bytes:,}")
    console.print(table)


def stop_run(record: RunRecord, inventory: Inventory, opts: RunOptions, console: Console,
             patience_s: float | None = None) -> None:
    """End every worker's process group; hosts get `patience_s` (default: the options' wait_ssh) to answer."""
    sessions, unreachable = connect_all(record, inventory, opts, patience_s or opts.timeouts.wait_ssh)
    try:
        stop_workers(record, inventory, sessions, console)
    finally:
        for s in sessions.values():
            s.close()
    for name, why in sorted(unreachable.items()):
        console.print(remote(f"{name}: not stopped: {why}", "red"))
    if unreachable:
        raise ErnieError(f"could not reach {len(unreachable)} host(s) to stop them; "
                         f"run `ernie stop {record.run_id}` again")


def logs_run(record: RunRecord, inventory: Inventory, opts: RunOptions, worker: int, follow: bool,
             write: Callable[[str], None]) -> None:
    """Print a worker's stdout (from the host); with `follow`, keep printing until it ends."""
    host = next((h for h in inventory.hosts if h.worker == worker), None)
    if host is None or host.name not in record.host_bases:
        raise ErnieError(f"--worker {worker}: run {record.run_id} has workers 0..{len(record.host_bases) - 1}")
    connector = Connector(inventory, opts.results_root / record.run_id / KNOWN_HOSTS, opts.timeouts)
    layout = record.layout(host.name)
    s, offset, decoder = None, 0, utf8_decoder()
    try:
        while True:
            try:
                s = s or connector.open(host)
                state = probe(s, layout)
                if state.stdout_bytes > offset:
                    raw = s.pipe_in(f"tail -c +{offset + 1} {shlex.quote(layout.output)}/stdout.log | head -c "
                                    f"{state.stdout_bytes - offset}", b"")
                    write(decoder.decode(raw))
                    offset += len(raw)
                if not follow or not state.running:
                    write(decoder.decode(b"", final=True))
                    return
            except RemoteError:
                if not follow:
                    raise
                if s is not None:
                    s.close()
                s = None  # reconnect on the next round and go on from `offset`
            time.sleep(1.0)
    except RemoteError as exc:
        raise ErnieError(str(exc)) from exc
    finally:
        if s is not None:
            s.close()


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


def load_run(run_id: str | None, stack: str | None, inventory_file: Path | None, local: bool,
             results: Path) -> tuple[RunRecord, Inventory]:
    """A recorded run (the latest if `run_id` is None) and its inventory (the one given, else the run's own)."""
    record = RunRecord.load(results, run_id)
    return record, recorded_inventory(record, stack, inventory_file, local)
