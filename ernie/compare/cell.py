"""One cell of `ernie compare`, in a process of its own: `python -m ernie.compare.cell SPEC.json`.

A process per cell, so each has the main thread `ernie bench`'s destroy-always needs: its signal handlers turn
SIGINT, SIGTERM and SIGHUP into "stop the workers, collect, destroy", and the comparison forwards each signal
it gets to every live cell. A stack cell is exactly `ernie bench` on the cell's stack, its config read from
the cell's own file; an inventory cell runs on hosts made elsewhere (nothing to create or destroy) and, when
interrupted, is stopped and collected the same way.
"""

from __future__ import annotations

import json
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

from ernie.errors import ErnieError
from ernie.remote.connect import Timeouts
from ernie.run import RunOptions, run_workload
from ernie.rundir import TIMELINE, Timeline
from ernie.terminal import SafeConsole, remote


@dataclass(frozen=True)
class CellSpec:
    """What the comparison hands a cell's process (a JSON file: no secret is in it)."""

    cell: str
    workload: str
    sets: list[str]
    run_id: str
    results: str
    stack: str | None
    config_file: str | None
    inventory: str | None
    wait_ssh_s: float
    lost_after_s: float
    run_timeout_s: float

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    def options(self) -> RunOptions:
        return RunOptions(results_root=Path(self.results), timeouts=Timeouts(wait_ssh=self.wait_ssh_s),
                          lost_after_s=self.lost_after_s, run_timeout_s=self.run_timeout_s)


def run_cell(spec: CellSpec, console: SafeConsole) -> int:
    """The cell's run; its exit status (128 + the signal's number when interrupted)."""
    opts = spec.options()
    if spec.stack is not None:
        from ernie.bench import bench_command
        from ernie.pulumi_cli import PulumiCli

        return bench_command(spec.workload, spec.sets, spec.stack, False, opts, console,
                             pulumi=PulumiCli(config_file=Path(spec.config_file or "")), run_id=spec.run_id)
    return _run_on_inventory(spec, opts, console)


def _run_on_inventory(spec: CellSpec, opts: RunOptions, console: SafeConsole) -> int:
    from ernie.bench import _collect_after_interrupt, _handled
    from ernie.inventory import load_inventory_file
    from ernie.workload import find_workload, resolve

    resolved = resolve(find_workload(spec.workload), spec.sets)
    inventory = load_inventory_file(Path(spec.inventory or ""))
    timeline = Timeline(opts.results_root / spec.run_id / TIMELINE, spec.run_id)
    received: list[int] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    with _handled(interrupt):
        try:
            return run_workload(resolved, inventory, {"kind": "file", "value": spec.inventory or ""}, opts, console,
                                run_id=spec.run_id, timeline=timeline)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: stopping the workers and collecting what they wrote[/]")
            _collect_after_interrupt(spec.run_id, inventory, opts, console, timeline)
            return 128 + (received[0] if received else signal.SIGINT)


def main(argv: list[str]) -> int:
    console = SafeConsole(soft_wrap=True)
    try:
        spec = CellSpec(**json.loads(Path(argv[1]).read_text()))
        return run_cell(spec, console)
    except ErnieError as exc:
        console.print(remote(f"error: {exc}", "red"))
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
