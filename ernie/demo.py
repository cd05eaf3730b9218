"""`ernie demo` (`make demo`): the local benchmark suite, through the same pipeline as a cloud run.

Each training workload goes through `ernie run --local`'s code (push the bundle, set up, start detached,
stream its progress, collect into results/RUN_ID/ with a manifest and a timeline): BERT on PyTorch and on
TensorFlow at the tiny preset on real text (the standard library's docstrings, prepared by the workload),
and the synthetic translation recipe. Then the serving handler answers requests from the built Lambda
layers. A piece that fails, or that is not available, is reported as such and the suite goes on; the
report (`ernie report` on the suite's runs) and its MLPerf comparison close it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ernie.errors import ErnieError
from ernie.inventory import local_inventory
from ernie.report import report_runs
from ernie.report.console import print_summary
from ernie.results import read_run, summarize
from ernie.results.rundir import is_run_dir
from ernie.run import RunOptions, inventory_source, new_run_id, run_workload
from ernie.workload import find_workload, resolve


@dataclass(frozen=True)
class DemoWorkload:
    """One training workload of the suite: a built-in workload (or a path) and its `--set` overrides."""

    workload: str
    sets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """How one piece of the suite ended."""

    name: str
    state: str  # complete | failed | incomplete | unavailable
    seconds: float
    note: str = ""
    run_id: str | None = None


#: BERT at the tiny preset on real text (the standard library's docstrings, which the workload prepares), 20
#: steps with an evaluation every 10: about a minute each on two idle cores; translation's synthetic recipe
#: (a tiny Transformer on generated sentence pairs), 4 of its 20 epochs.
_BERT = ("preset=tiny", "text=stdlib", "max_steps=20", "eval_every=10")
SUITE: tuple[DemoWorkload, ...] = (
    DemoWorkload("bert-torch", _BERT),
    DemoWorkload("bert-tf", _BERT),
    DemoWorkload("translation", ("recipe=synthetic", "max_epoch=4")),
)
#: Past this a workload's workers are stopped and what exists is collected: the suite must end.
RUN_TIMEOUT_S = 240.0

ServingCheck = Callable[[Console], str]


def run_demo(results: Path, out: Path | None, console: Console, suite: Sequence[DemoWorkload] = SUITE,
             serving: ServingCheck | None = None) -> int:
    """Run the suite, print each piece's outcome and the MLPerf comparison, write the report.

    Returns 0 when every piece completed, 1 otherwise (the report is written either way).
    """
    serving = serving if serving is not None else serving_check
    pieces = len(suite) + 1
    outcomes = []
    for i, item in enumerate(suite, start=1):
        console.rule(Text(f"[{i}/{pieces}] {item.workload}", style="bold"))  # a path is text, never markup
        outcomes.append(_train(item, results, console))
    console.rule(Text(f"[{pieces}/{pieces}] serving", style="bold"))
    outcomes.append(_serve(serving, console))

    console.rule(Text("results", style="bold"))
    console.print(outcome_table(outcomes))
    run_ids = [o.run_id for o in outcomes if o.run_id]
    if run_ids:
        files, runs = report_runs(results, run_ids, False, out)
        print_summary(console, files, runs)
    else:
        console.print("[red]No workload produced a run to report.[/]")
    return 0 if all(o.state == "complete" for o in outcomes) else 1


def _train(item: DemoWorkload, results: Path, console: Console) -> Outcome:
    """One workload through `ernie run --local`'s pipeline; its run directory is judged like any other."""
    start = time.monotonic()
    try:
        resolved = resolve(find_workload(item.workload), list(item.sets))
    except ErnieError as exc:
        console.print(f"{item.workload}: not available: {exc}", style="yellow", highlight=False, markup=False)
        return Outcome(item.workload, "unavailable", time.monotonic() - start, str(exc))
    name = resolved.workload.name
    run_id = new_run_id(name)
    opts = RunOptions(results_root=results, run_timeout_s=RUN_TIMEOUT_S)
    notes = []
    try:
        run_workload(resolved, local_inventory(), inventory_source(None, None, True), opts, console, run_id=run_id)
    except ErnieError as exc:
        notes.append(str(exc))
        console.print(f"{name}: {exc}", style="red", highlight=False, markup=False)
    except Exception as exc:  # noqa: BLE001 - one broken workload must not end the suite; it is reported
        notes.append(f"{type(exc).__name__}: {exc}")
        console.print_exception()
    seconds = time.monotonic() - start
    run_dir = results / run_id
    if not is_run_dir(run_dir):
        return Outcome(name, "failed", seconds, "; ".join(notes) or "the run left no manifest or timeline")
    summary = summarize(read_run(run_dir))
    if summary.wall_s.get("training", 0.0) >= RUN_TIMEOUT_S:
        notes.append(f"stopped at the demo's limit of {RUN_TIMEOUT_S:.0f} s per workload")
    return Outcome(name, summary.status, seconds, "; ".join(notes + summary.problems), run_id)


def _serve(check: ServingCheck, console: Console) -> Outcome:
    start = time.monotonic()
    try:
        note = check(console)
    except ErnieError as exc:
        console.print(f"serving: {exc}", style="red", highlight=False, markup=False)
        return Outcome("serving", "failed", time.monotonic() - start, str(exc))
    except Exception as exc:  # noqa: BLE001 - reported, and the suite still ends with its report
        console.print_exception()
        return Outcome("serving", "failed", time.monotonic() - start, f"{type(exc).__name__}: {exc}")
    return Outcome("serving", "complete", time.monotonic() - start, note)


def serving_check(console: Console) -> str:
    """The serving handler, run from the built Lambda layers alone, answering requests (ernie/serve.py)."""
    from ernie.serve import check_from_layers  # the layer builder loads only for this piece

    return check_from_layers(console)


def outcome_table(outcomes: list[Outcome]) -> Table:
    """One row per piece of the suite."""
    table = Table(title="ernie demo", title_justify="left")
    for column in ("piece", "outcome", "time", "run", "note"):
        table.add_column(column, overflow="fold")
    style = {"complete": "green", "unavailable": "yellow"}
    for o in outcomes:
        table.add_row(o.name, Text(o.state, style=style.get(o.state, "red")), f"{o.seconds:.0f} s",
                      o.run_id or "-", Text(o.note or "-"))
    return table
