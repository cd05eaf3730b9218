"""Run a plan's cells, up to `--parallel` at once, each as its own Pulumi stack, destroyed whatever happens.

Each cell runs in its own process (ernie/compare/cell.py: `ernie bench` on the cell's stack), in its own process
group so the terminal's Ctrl-C reaches this process only; every SIGINT, SIGTERM or SIGHUP that arrives here is
passed on once to every live cell, which stops its workers, collects and destroys (a second one skips the
collection, never the destroy, as in `ernie bench`), and no new cell starts. A failed cell is reported and the
others go on. Should a cell's process end without its stack destroyed (killed, crashed), the stack is destroyed
from here. results/compare/PLAN/state.json records each cell's stack, run and estimate, so `--resume` skips the
cells already complete (and reruns a cell whose configuration changed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.markup import escape

from ernie.bench import _handled
from ernie.compare.cell import CellSpec
from ernie.compare.estimate import Estimate, PlanEstimate
from ernie.compare.plan import Cell, ComparePlan
from ernie.errors import ErnieError
from ernie.pulumi_cli import PulumiCli
from ernie.results import read_run, summarize
from ernie.run import RunOptions
from ernie.rundir import TIMELINE, new_run_id
from ernie.terminal import remote

COMPARE_DIR = "compare"
STATE = "state.json"


def compare_dir(results_root: Path, plan: ComparePlan) -> Path:
    """Where a plan's state, cell configs, logs and report live: results/compare/PLAN/ (never a run directory)."""
    return results_root / COMPARE_DIR / plan.name


@dataclass
class CellState:
    """One cell's latest attempt, as state.json records it."""

    stack: str | None
    run_id: str
    fingerprint: str
    log: str
    estimate: dict[str, Any]
    status: str = "pending"  # pending, running, complete, failed, incomplete, not started
    exit_code: int | None = None


def load_state(out: Path) -> dict[str, CellState]:
    path = out / STATE
    if not path.is_file():
        return {}
    try:
        cells = json.loads(path.read_text())["cells"]
        return {name: CellState(**c) for name, c in cells.items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise ErnieError(f"{path}: not a comparison state ({exc}); remove it to start the plan afresh") from None


def save_state(out: Path, plan: ComparePlan, cells: dict[str, CellState]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    document = {"plan": plan.name, "plan_file": str(plan.path), "shared": plan.shared,
                "cells": {name: asdict(c) for name, c in cells.items()}}
    tmp = out / f".{STATE}.tmp"
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    tmp.replace(out / STATE)


def run_status(results_root: Path, run_id: str) -> str:
    """complete, failed or incomplete, as the results index would say; `missing` when the run has no directory."""
    path = results_root / run_id
    return summarize(read_run(path)).status if path.is_dir() else "missing"


class Cells:
    """The cells' processes, and the signals passed on to them."""

    def __init__(self, plan: ComparePlan, opts: RunOptions, out: Path, state: dict[str, CellState],
                 console: Console) -> None:
        self.plan, self.opts, self.out, self.state, self.console = plan, opts, out, state, console
        self.procs: dict[str, subprocess.Popen] = {}
        self.received: list[int] = []
        self.lock = threading.Lock()

    def forward(self, signum: int, frame: FrameType | None) -> None:
        """A signal handler: pass the signal once to every live cell; start no new cell."""
        self.received.append(signum)
        for proc in list(self.procs.values()):
            proc.send_signal(signum)

    def run(self, cell: Cell) -> None:
        st = self.state[cell.name]
        spec = CellSpec(
            cell=cell.name, workload=cell.workload_spec(), sets=cell.sets(), run_id=st.run_id,
            results=str(self.opts.results_root), stack=st.stack,
            config_file=str(self._config_file(cell)) if st.stack else None,
            inventory=str(cell.inventory) if cell.inventory else None, wait_ssh_s=self.opts.timeouts.wait_ssh,
            lost_after_s=self.opts.lost_after_s, run_timeout_s=self.opts.run_timeout_s)
        spec_file = spec.write(self.out / f"{cell.name}.cell.json")
        with self.lock, open(st.log, "ab") as log:
            if self.received:
                st.status = "not started"
                return
            # Its own process group: the terminal's Ctrl-C reaches this process, which passes it on once.
            proc = subprocess.Popen([sys.executable, "-m", "ernie.compare.cell", str(spec_file)], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, process_group=0)
            self.procs[cell.name] = proc
            st.status = "running"
            self._save()
        if self.received:  # a signal that came while the process was starting
            proc.send_signal(self.received[0])
        self.console.print(f"cell [bold]{cell.name}[/]: started run {st.run_id}"
                           f"{f' on stack {st.stack}' if st.stack else ''} (log {st.log})")
        st.exit_code = proc.wait()
        with self.lock:
            self.procs.pop(cell.name, None)
        if st.stack and not _destroyed(self.opts.results_root, st.run_id):
            self._destroy(cell, st)
        st.status = run_status(self.opts.results_root, st.run_id)
        if st.status == "missing":
            st.status = "failed"
        colour = "green" if st.status == "complete" else "red"
        self.console.print(f"cell [bold]{cell.name}[/]: [{colour}]{st.status}[/] (exit {st.exit_code}); "
                           f"run {st.run_id}, log {st.log}")
        with self.lock:
            self._save()

    def _config_file(self, cell: Cell) -> Path:
        name = f"Pulumi.{cell.stack(self.plan.name)}.yaml"
        return cell.write_stack_file(self.out / name, settings_from=PulumiCli().project_dir / name)

    def _destroy(self, cell: Cell, st: CellState) -> None:
        """The stack of a cell whose process ended before destroying it (killed, crashed)."""
        self.console.print(f"[yellow]cell {cell.name}: its process ended without destroying stack {st.stack}; "
                           "destroying it now[/]")
        try:
            PulumiCli(config_file=self._config_file(cell)).destroy(st.stack or "")
        except ErnieError as exc:
            self.console.print(remote(str(exc), "red"))
            self.console.print(f"[bold red]stack {st.stack} may still be up: run `pulumi destroy -s {st.stack} "
                               f"--config-file {self._config_file(cell)}`[/]")

    def _save(self) -> None:
        save_state(self.out, self.plan, self.state)


def _destroyed(results_root: Path, run_id: str) -> bool:
    """Whether the run's timeline records a destroy that succeeded."""
    try:
        steps = json.loads((results_root / run_id / TIMELINE).read_text())["steps"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return any(s.get("name") == "destroy" and s.get("ok") is True for s in steps)


def complete_cells(plan: ComparePlan, results_root: Path) -> dict[str, CellState]:
    """The cells `--resume` skips: their last run is complete and their configuration unchanged since."""
    before = load_state(compare_dir(results_root, plan))
    return {cell.name: prior for cell in plan.cells if (prior := before.get(cell.name)) is not None
            and prior.fingerprint == cell.fingerprint() and run_status(results_root, prior.run_id) == "complete"}


def run_plan(plan: ComparePlan, planned: PlanEstimate, parallel: int, resume: bool, opts: RunOptions,
             console: Console) -> int:
    """Run the plan's cells (those not already complete, with --resume), then write the comparison report.
    0 when every cell is complete; 128 + the signal's number when interrupted; 1 otherwise."""
    out = compare_dir(opts.results_root, plan)
    done = complete_cells(plan, opts.results_root) if resume else {}
    estimates: dict[str, Estimate] = {e.cell: e for e in planned.estimates}
    state: dict[str, CellState] = {}
    todo: list[Cell] = []
    for cell in plan.cells:
        if cell.name in done:
            console.print(f"cell [bold]{cell.name}[/]: complete in run {done[cell.name].run_id}; skipped (--resume)")
            state[cell.name] = done[cell.name]
            continue
        state[cell.name] = CellState(
            stack=cell.stack(plan.name), run_id=new_run_id(cell.resolved().workload.name),
            fingerprint=cell.fingerprint(), log=str(out / f"{cell.name}.log"),
            estimate=estimates[cell.name].to_json())
        todo.append(cell)
    save_state(out, plan, state)
    if todo:
        pulumi = PulumiCli()
        stacks = [state[c.name].stack for c in todo if state[c.name].stack]
        if stacks:
            existing = pulumi.stacks()
            for stack in stacks:
                if stack not in existing:
                    pulumi.init_stack(stack)
        cells = Cells(plan, opts, out, state, console)
        console.print(f"running {len(todo)} cell(s), {min(parallel, len(todo))} at a time")
        with _handled(cells.forward), ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="cell") as pool:
            futures = [pool.submit(cells.run, cell) for cell in todo]
            errors = [f.exception() for f in futures]  # waits for every cell: each ends destroyed
        for cell, exc in zip(todo, errors):
            if exc is not None:
                state[cell.name].status = "failed"
                console.print(remote(f"cell {cell.name}: {exc}", "red"))
        save_state(out, plan, state)
        if cells.received:
            from signal import Signals

            console.print(f"[yellow]interrupted ({Signals(cells.received[0]).name}): every started cell was "
                          "collected and destroyed; `ernie compare PLAN --resume` runs the rest[/]")
    from ernie.compare.report import write_comparison

    files = write_comparison(plan, state, opts.results_root, out)
    console.print(f"comparison report: {escape(str(files[0]))}")
    if todo and cells.received:
        return 128 + cells.received[0]
    return 0 if all(s.status == "complete" for s in state.values()) else 1
