"""`ernie run --resume RUN_ID`: carry a run through a preemption.

A preempted worker takes its peers down with it (a collective waits on it, or fails). Resuming restarts
every worker of the recorded run (results/RUN_ID/run.json) with the same command in the same output
directories, where the workload's `checkpoints/` are (docs/workloads.md): a workload started with its
resume flag continues from its last checkpoint. What is left of the run is stopped first.

The preemption's cost goes into timeline.json as a `preempted` step: from the newest checkpoint any worker
holds (what was done after it is redone) to the moment every worker is training again. With no checkpoint,
from the start of the interrupted attempt: everything it did is lost.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from ernie.errors import ErnieError
from ernie.inventory import Inventory
from ernie.pulumi_cli import PulumiCli
from ernie.remote.connect import Session, closing_sessions, fan_out
from ernie.remote.layout import Layout
from ernie.remote.runners import Probe, probe
from ernie.run import RunOptions, connect_all, execute, stop_workers
from ernie.rundir import RUN_FILE, TIMELINE, RunRecord, Timeline, recorded_inventory

CHECKPOINTS = "checkpoints"
"""Where a workload keeps what `--resume` continues from, under $ERNIE_OUTPUT_DIR (docs/workloads.md)."""
PREEMPTED = "preempted"


@dataclass(frozen=True)
class Checkpoint:
    """The newest file under a worker's checkpoints/."""

    host: str
    path: str
    """Relative to the worker's output directory."""
    saved_at: float
    """Its modification time (epoch seconds, the host's clock)."""


def newest_checkpoint(s: Session, layout: Layout) -> Checkpoint | None:
    """The newest file under the worker's checkpoints/, or None when it has none."""
    out = shlex.quote(layout.output)
    listing = s.check(f"cd {out} 2>/dev/null && find {CHECKPOINTS} -type f -printf '%T@ %p\\n' 2>/dev/null "
                      "| sort -n | tail -n 1; true", "looking for checkpoints").strip()
    if not listing:
        return None
    saved_at, path = listing.split(" ", 1)
    return Checkpoint(s.host.name, path, float(saved_at))


def lost_since(steps: list[dict[str, Any]], checkpoint: Checkpoint | None) -> float:
    """When the work the restart redoes began: the newest checkpoint, or the interrupted attempt's start.

    The attempt started with its `run` step; where ernie itself was stopped before recording that step (it is
    recorded when it ends), when its workers were set up or restarted. A checkpoint older than the attempt (it
    made none of its own) means the whole attempt is redone.
    """
    starts = [st["start"] if st["name"] == "run" else st["end"]
              for st in steps if st.get("name") in ("setup", PREEMPTED, "run")]
    attempt = max(starts, default=time.time())
    return max(attempt, checkpoint.saved_at) if checkpoint is not None else attempt


def _prepare(record: RunRecord, inventory: Inventory, opts: RunOptions, console: Console) -> Checkpoint | None:
    """Check the run can be resumed, stop what is left of it, and find its newest checkpoint."""
    sessions, unreachable = connect_all(record, inventory, opts, opts.timeouts.wait_ssh)
    with closing_sessions(sessions):
        if unreachable:
            hosts = "; ".join(f"{name}: {why}" for name, why in sorted(unreachable.items()))
            raise ErnieError(f"run {record.run_id}: every worker must be back to resume it, and these are not: "
                             f"{hosts}. Bring them back (`pulumi up` recreates preempted hosts) and resume again")
        probes = fan_out(lambda s: probe(s, record.layout(s.host.name)), sessions.values(),
                         timeout=opts.timeouts.command, name=lambda s: s.host.name)
        states: dict[str, Probe] = {}
        for name, outcome in sorted(probes.items()):
            if not outcome.ok:
                raise ErnieError(f"run {record.run_id}: could not read {name}'s state: {outcome.error}")
            states[name] = outcome.value
        if all(not p.running and p.exit_code == 0 for p in states.values()):
            raise ErnieError(f"run {record.run_id} finished on every worker: nothing to resume "
                             f"(`ernie collect {record.run_id}` brings its output home)")
        if all(p.running for p in states.values()):
            raise ErnieError(f"run {record.run_id} is still running on every worker: nothing to resume "
                             f"(`ernie status {record.run_id}`; `ernie stop {record.run_id}` first to restart it)")
        running = {name: sessions[name] for name, p in states.items() if p.running}
        if running:
            console.print(f"stopping what is left of run {record.run_id} on {', '.join(sorted(running))}: "
                          "its peers are gone")
            stop_workers(record, inventory, running, console)
        found = fan_out(lambda s: newest_checkpoint(s, record.layout(s.host.name)), sessions.values(),
                        timeout=opts.timeouts.command, name=lambda s: s.host.name)
    failed = {name: o.error for name, o in found.items() if not o.ok}
    if failed:
        raise ErnieError(f"run {record.run_id}: could not look for checkpoints on {failed}")
    checkpoints = [o.value for o in found.values() if o.value is not None]
    return max(checkpoints, key=lambda c: c.saved_at) if checkpoints else None


def resume_run(record: RunRecord, inventory: Inventory, opts: RunOptions, console: Console) -> int:
    """Restart every worker of a recorded run from its checkpoints; follow, collect; 0 when every worker finishes."""
    timeline = Timeline.load(opts.results_root / record.run_id / TIMELINE, record.run_id)
    checkpoint = _prepare(record, inventory, opts, console)
    lost_from = lost_since(timeline.steps, checkpoint)
    console.print(f"resuming run {record.run_id} " + (
        f"from {checkpoint.host}'s {checkpoint.path} (saved {time.time() - checkpoint.saved_at:.0f}s ago)"
        if checkpoint else "from the start: no worker holds a checkpoint"))

    started: list[float] = []

    def restarted(run_id: str) -> None:
        started.append(time.time())
        timeline.add(PREEMPTED, lost_from, started[0], True,
                     checkpoint=f"{checkpoint.host}:{checkpoint.path}" if checkpoint else None)

    try:
        return execute(record, inventory, opts, console, timeline=timeline, on_started=restarted)
    except KeyboardInterrupt:
        if not started:
            raise
        console.print(f"[yellow]interrupted: the workers go on. Watch them with `ernie status {record.run_id}`, "
                      f"bring their output home with `ernie collect {record.run_id}`[/]")
        return 130


def resume_command(run_id: str, workload: str | None, sets: list[str], stack: str | None,
                   inventory_file: Path | None, local: bool, opts: RunOptions, console: Console,
                   pulumi: PulumiCli | None = None) -> int:
    """`ernie run --resume RUN_ID`: the run's own workload and parameters; the hosts it was started on, or those
    given (a recreated stack's new addresses)."""
    if workload is not None:
        raise ErnieError(f"--resume {run_id} restarts a recorded run with its own workload: drop {workload!r}")
    if sets:
        raise ErnieError(f"--set {sets[0]}: a resumed run keeps the parameters its checkpoints were made with "
                         f"({opts.results_root / run_id / RUN_FILE}); start a new run to change them")
    record = RunRecord.load(opts.results_root, run_id)
    source = record.inventory_source
    if stack or (not inventory_file and not local and source["kind"] == "stack"):
        # The hosts a preemption or the TTL took are not in the stack's stale state: refresh, then up (a
        # preempted TPU node replaced) before the inventory is read again.
        stack = stack or source["value"]
        console.print(f"bringing stack {stack}'s hosts back: pulumi refresh, then up")
        (pulumi or PulumiCli()).bring_up(stack)
    return resume_run(record, recorded_inventory(record, stack, inventory_file, local), opts, console)
