"""The run directory, results/RUN_ID/: its names, its layout, and every read and write of ernie's own files in it.

    run.json            RunRecord: the resolved run (workload, parameters, the inventory's source and public
                        copy, each host's ernie directory); no secret is ever written there
    timeline.json       Timeline: each step's start, end, duration and ok, rewritten as each step ends
    manifest.json       what collect brought home: per host its worker, state, exit code and verified files
    known_hosts         the hosts' keys as this run first saw them
    worker0.stream.log  worker 0's stdout as the live stream received it
    HOST/               one worker's output as collected: stdout.log, stderr.log, exit_code and the workload's
                        files (result.json and mlperf.log on worker 0)

The driver reads and writes these strictly here (an edited run.json is an ErnieError); the report's reader
(`ernie.results.rundir`) takes the same names from here and records what it cannot read instead.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ernie.errors import ErnieError
from ernie.inventory import Host, Inventory, resolve_inventory
from ernie.names import HOST_NAME, RUN_ID, UnsafeName, path_under
from ernie.remote.layout import Layout

if TYPE_CHECKING:  # the shapes host_entry reads; the format itself imports nothing that connects
    from ernie.remote.collect import Collected
    from ernie.remote.runners import Probe

RUN_FILE = "run.json"
MANIFEST = "manifest.json"
TIMELINE = "timeline.json"
KNOWN_HOSTS = "known_hosts"
STREAM_COPY = "worker0.stream.log"

# A worker's output directory, on its host and as collected into HOST/ (the runner writes the first three).
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"
EXIT_CODE = "exit_code"
RESULT = "result.json"  # worker 0's, written by the workload
MLPERF_LOG = "mlperf.log"

# A worker's state in manifest.json (docs/workloads.md).
COMPLETE, FAILED, MISSING = "complete", "failed", "missing"


def new_run_id(workload: str) -> str:
    """`YYYYmmdd-HHMMSS-<workload>-<4 hex>`, in UTC (`ernie.names.RUN_ID` matches it)."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{workload}-{secrets.token_hex(2)}"


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_run_dir(path: Path) -> bool:
    """A directory ernie wrote for a run: it holds a manifest or a timeline."""
    return path.is_dir() and ((path / MANIFEST).is_file() or (path / TIMELINE).is_file())


def host_dir(run_dir: Path, host: str) -> Path:
    """Where one host's output is collected; UnsafeName for a name that is not a plain host name under the run."""
    if not HOST_NAME.fullmatch(host):
        raise UnsafeName("not a plain host name")
    return path_under(run_dir, host)


class Timeline:
    """timeline.json, rewritten as each step ends so an interrupted run keeps what it did."""

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
class RunRecord:
    """run.json: the run's resolved state."""

    run_id: str
    workload: str
    spec_file: str
    params: dict[str, Any]
    command: str
    created: str
    inventory_source: dict[str, str]  # {"kind": "stack"|"file"|"local", "value": ...}: inventory_source()
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


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """manifest.json as the last collect wrote it; {} before the first."""
    path = run_dir / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def write_manifest(run_dir: Path, record: RunRecord, hosts: dict[str, dict[str, Any]]) -> None:
    """Replace manifest.json whole (written beside it, then renamed: a reader never sees half of one)."""
    manifest = {"run_id": record.run_id, "workload": record.workload, "created": record.created,
                "params": record.params, "inventory": record.inventory, "hosts": hosts}
    tmp = run_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(run_dir / MANIFEST)


def host_entry(host: Host, state: Probe, collected: Collected) -> dict[str, Any]:
    """A collected host's manifest entry: complete only when its process ended with exit code 0."""
    entry: dict[str, Any] = {"worker": host.worker, "state": "", "exit_code": state.exit_code,
                             "files": collected.files,
                             "fetched": {"files": collected.fetched_files, "bytes": collected.fetched_bytes}}
    if state.running:
        entry.update(state=MISSING, reason="still running: collect again when it has finished")
    elif state.exit_code == 0:
        entry["state"] = COMPLETE
    else:
        entry["state"] = FAILED
        if state.exit_code is None:
            entry["reason"] = "the process ended without an exit code (killed)"
    if collected.refused:  # names the host listed that ernie would not write (ernie.remote.collect)
        entry["refused"] = collected.refused
        refused = f"{len(collected.refused)} file name(s) refused as unsafe (see 'refused' in manifest.json)"
        entry["reason"] = f"{entry['reason']}; {refused}" if entry.get("reason") else refused
    return entry


def missing_entry(host: Host, run_dir: Path, previous: dict[str, Any], reason: str) -> dict[str, Any]:
    """The entry of a host that could not be collected now: it keeps what an earlier collect brought home and
    is still here unchanged (`previous`: its entry in the last manifest)."""
    return {"worker": host.worker, "state": MISSING, "exit_code": previous.get("exit_code"),
            "files": still_verified(run_dir / host.name, previous.get("files", {})), "reason": reason}


def still_verified(host_path: Path, files: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The files an earlier collect brought home that are still here, unchanged (names checked like a host's)."""
    from ernie.remote.collect import sha256_file  # the driver's one digest; the report's reader needs no SSH

    kept = {}
    for name, meta in files.items():
        try:
            path = path_under(host_path, name)
        except UnsafeName:
            continue
        if isinstance(meta, dict) and path.is_file() and sha256_file(path) == meta.get("sha256"):
            kept[name] = meta
    return kept
