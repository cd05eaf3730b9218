"""Read one collected run directory (docs/workloads.md, "What ernie writes") into plain facts, for reports.

The directory's names and layout are `ernie.rundir`'s; this reader differs from the driver's in what it does
with a file it cannot read: the driver refuses it, a report records it and goes on.

Nothing here derives a figure: it reads `manifest.json`, `timeline.json`, worker 0's `result.json` and the
`:::MLLOG` lines, and records every file it expected but could not read, so a report can say what is missing
and still show the rest. Host and file names from the manifest are checked before they become paths
(`ernie.names`): one that would lead out of the run directory is recorded as a problem, never read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The line parser of the latest training ruleset; the line format is the same in every round.
from mlperf_logging.compliance_checker.mlp_parser.ruleset_610 import TOKEN, string_to_logline

from ernie.names import UnsafeName, path_under
from ernie.rundir import COMPLETE, FAILED, MANIFEST, MISSING, MLPERF_LOG, RESULT, STDOUT_LOG, TIMELINE, host_dir


@dataclass(frozen=True)
class MllogEvent:
    """One `:::MLLOG` line: its key, time in ms since the epoch, value and metadata."""

    key: str
    time_ms: float
    value: Any
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Worker:
    """One host's part of a run as the manifest records it."""

    name: str
    worker: int
    state: str  # complete | failed | missing (docs/workloads.md)
    exit_code: int | None
    directory: Path
    reason: str | None = None  # why the collector gave it this state, when it said


@dataclass
class RunFiles:
    """Everything read from a run directory, and what could not be read."""

    run_id: str
    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] | None = None  # None: timeline.json missing or unreadable
    result: dict[str, Any] | None = None
    events: list[MllogEvent] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def inventory(self) -> dict[str, Any]:
        return self.manifest.get("inventory") or {}


def read_run(path: Path) -> RunFiles:
    """Read the run directory `path`; never raises for a missing or unreadable file, records it instead."""
    run = RunFiles(run_id=path.name, path=path)
    manifest = _read_json(path / MANIFEST, run.problems)
    if manifest is not None:
        run.manifest = manifest
    timeline = _read_json(path / TIMELINE, run.problems)
    if timeline is not None:
        run.steps = [s for s in timeline.get("steps", []) if isinstance(s, dict)]
    run.workers = _workers(run)
    for w in run.workers:
        _check_worker(run, w)
    first = next((w for w in run.workers if w.worker == 0), None)
    if first is None:
        run.problems.append("worker 0 is not in the run: no result.json and no MLPerf log to read")
        return run
    run.result = _read_json(first.directory / RESULT, run.problems, owner=f"worker 0 ({first.name})")
    run.events = _read_mllog(first, run.problems)
    return run


def _workers(run: RunFiles) -> list[Worker]:
    """The workers the manifest names; without a manifest, every host directory found beside it."""
    hosts = run.manifest.get("hosts")
    if isinstance(hosts, dict) and hosts:
        workers = []
        for name, h in hosts.items():
            if not isinstance(h, dict) or not isinstance(h.get("worker"), int):
                run.problems.append(f"manifest.json: host {name!r} has no integer 'worker'; it is not read")
                continue
            try:
                directory = host_dir(run.path, name)
            except UnsafeName as exc:
                run.problems.append(f"manifest.json: host {name!r} is not a directory of the run ({exc}); "
                                    "it is not read")
                continue
            workers.append(Worker(name=name, worker=h["worker"], state=str(h.get("state", MISSING)),
                                  exit_code=h.get("exit_code"), directory=directory, reason=h.get("reason")))
        return sorted(workers, key=lambda w: w.worker)
    found = sorted(p for p in run.path.iterdir() if p.is_dir() and not p.is_symlink())
    if not found:
        return []
    # Without a manifest nobody verified these files: the run cannot count as complete, but its logs still read.
    run.problems.append(f"manifest.json names no hosts; read {len(found)} host director(ies) as found")
    return [Worker(p.name, i, MISSING, None, p) for i, p in enumerate(found)]


def _check_worker(run: RunFiles, w: Worker) -> None:
    """Record a worker that failed, could not be collected, or lost a file the manifest lists."""
    where = f"worker {w.worker} ({w.name})"
    why = f": {w.reason}" if w.reason else ""
    if w.state == MISSING:
        run.problems.append(f"{where} was not collected (state '{MISSING}'){why}")
    elif w.state == FAILED:
        run.problems.append(f"{where} failed with exit code {w.exit_code}{why}")
    elif w.state != COMPLETE:
        run.problems.append(f"{where} has unknown state {w.state!r}")
    host = (run.manifest.get("hosts") or {}).get(w.name) or {}
    for rel in host.get("files") or {}:
        try:
            if not path_under(w.directory, rel).is_file():
                run.problems.append(f"{where}: {rel} is listed in manifest.json but not in {w.directory}")
        except UnsafeName as exc:
            run.problems.append(f"{where}: manifest.json lists {rel!r}, not a file of {w.directory} ({exc})")
    refused = host.get("refused") or {}
    if refused:
        run.problems.append(f"{where}: {len(refused)} file name(s) the host listed were refused as unsafe (see "
                            f"'refused' in manifest.json): {', '.join(repr(n) for n in list(refused)[:5])}")


def _read_mllog(w: Worker, problems: list[str]) -> list[MllogEvent]:
    """Worker 0's `:::MLLOG` lines, from mlperf.log or, failing that, its stdout.log."""
    for name in (MLPERF_LOG, STDOUT_LOG):
        path = w.directory / name
        if path.is_file():
            events, bad = [], 0
            for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
                at = line.find(TOKEN)  # stdout may prefix the line (a timestamp, a rank)
                if at < 0:
                    continue
                try:
                    ll = string_to_logline(n, line[at:].strip())
                except (ValueError, KeyError, TypeError):
                    bad += 1
                    continue
                events.append(MllogEvent(ll.key, ll.timestamp, ll.value["value"], ll.value["metadata"] or {}))
            if bad:
                problems.append(f"worker 0 ({w.name}): {bad} unreadable :::MLLOG line(s) in {name}")
            if events:
                return events
    problems.append(f"worker 0 ({w.name}): no :::MLLOG lines in {MLPERF_LOG} or {STDOUT_LOG}")
    return []


def _read_json(path: Path, problems: list[str], owner: str | None = None) -> dict[str, Any] | None:
    where = f"{owner}: " if owner else ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{where}{path.name} is missing")
        return None
    except (OSError, ValueError) as exc:
        problems.append(f"{where}{path.name} is unreadable ({exc})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{where}{path.name} is not a JSON object")
        return None
    return data
