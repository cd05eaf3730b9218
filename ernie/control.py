"""The commands that act on a recorded run while or after it runs: `ernie status`, `ernie logs`, `ernie stop`.

Each loads the run from results/RUN_ID/run.json (`ernie.rundir`), reaches its hosts with the run's own
known_hosts, and acts on each worker's detached process group. `ernie collect` is `ernie.run.collect_run`,
the same collect a run ends with.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ernie.errors import ErnieError
from ernie.inventory import Inventory
from ernie.remote.connect import Connector, RemoteError, closing_sessions, fan_out
from ernie.remote.runners import probe
from ernie.remote.stream import utf8_decoder
from ernie.run import RunOptions, connect_all, host_of, stop_workers
from ernie.rundir import KNOWN_HOSTS, STDOUT_LOG, RunRecord, recorded_inventory
from ernie.terminal import remote


def load_run(run_id: str | None, stack: str | None, inventory_file: Path | None, local: bool,
             results: Path) -> tuple[RunRecord, Inventory]:
    """A recorded run (the latest if `run_id` is None) and its inventory (the one given, else the run's own)."""
    record = RunRecord.load(results, run_id)
    return record, recorded_inventory(record, stack, inventory_file, local)


def status_run(record: RunRecord, inventory: Inventory, opts: RunOptions, console: Console) -> None:
    """Print each worker's state: running, exited (code) or unreachable."""
    sessions, unreachable = connect_all(record, inventory, opts, opts.timeouts.wait_ssh)
    with closing_sessions(sessions):
        probes = fan_out(lambda s: probe(s, record.layout(s.host.name)), sessions.values(),
                         timeout=opts.timeouts.command, name=host_of)
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
    with closing_sessions(sessions):
        stop_workers(record, inventory, sessions, console)
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
                    raw = s.pipe_in(f"tail -c +{offset + 1} {shlex.quote(layout.output)}/{STDOUT_LOG} | head -c "
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
