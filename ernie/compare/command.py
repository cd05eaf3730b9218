"""`ernie compare PLAN`: check and estimate every cell (`--plan` stops there), hold the plan to `--budget`,
then run the cells (ernie/compare/runner.py) and write the comparison report (ernie/compare/report.py)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ernie.compare.estimate import BUCKETS, History, PlanEstimate, budget_problems, estimate_plan
from ernie.compare.plan import ComparePlan, load_plan
from ernie.compare.runner import complete_cells, run_plan
from ernie.errors import ErnieError
from ernie.run import RunOptions


def plan_and_check(plan_path: Path, budget: float | None, parallel: int, results: Path, console: Console,
                   resume: bool = False) -> tuple[ComparePlan, PlanEstimate]:
    """Load, check and estimate the plan, and print it; ErnieError (one line per problem) for a bad plan, a
    refused cell or a plan over budget (with `resume`, counting only the cells not yet complete). Nothing is
    created."""
    if parallel < 1:
        raise ErnieError(f"--parallel {parallel}: run at least one cell at a time")
    if budget is not None and not budget > 0:
        raise ErnieError(f"--budget {budget:g}: expected the most this plan may cost, in USD, above 0")
    plan = load_plan(plan_path)
    history = History.of(results)
    console.print(f"plan [bold]{escape(plan.name)}[/]: {len(plan.cells)} cell(s); checking each under mocks "
                  f"(what `ernie check` builds), estimating from {len(history.runs)} earlier run(s) in {results}")
    planned = estimate_plan(plan, history)
    render_plan(plan, planned, parallel, console)
    if planned.refused:
        raise ErnieError("\n".join(planned.refused) + "\nnothing was created: fix the cell(s) above")
    if budget is not None:
        done = complete_cells(plan, results) if resume else {}
        if done:
            console.print(f"--resume: {', '.join(done)} complete already; the budget counts the other cells")
        problems = budget_problems(PlanEstimate([e for e in planned.estimates if e.cell not in done], []), budget)
        if problems:
            raise ErnieError("; ".join(problems) + "; nothing was created")
        console.print(f"within --budget {budget:g} USD")
    return plan, planned


def render_plan(plan: ComparePlan, planned: PlanEstimate, parallel: int, console: Console) -> None:
    """The plan as a table (one row per cell, minutes per bucket, dollars), each figure's source below it."""
    table = Table(title=f"plan {plan.name} ({plan.path.name}): minutes {' + '.join(BUCKETS)}",
                  title_justify="left")
    for column in ("cell", "hardware", "USD/h", "minutes", "total min", "USD", "worst USD"):
        table.add_column(column, overflow="fold")
    for e in planned.estimates:
        hw = e.hardware
        table.add_row(e.cell, f"{hw.chips}x {hw.accelerator} [{hw.cloud}]", f"{hw.usd_per_hour:.2f}",
                      " + ".join(_num(e.minutes[b].value) for b in BUCKETS), _num(e.total_minutes),
                      _num(e.usd, 2), _num(e.worst_usd, 2))
    console.print(table)
    for e in planned.estimates:
        where = f"stack {e.stack}" if e.stack else "the inventory file's hosts"
        console.print(f"[bold]{e.cell}[/] ({where}): price {escape(e.hardware.price_source)}")
        for b in BUCKETS:
            console.print(f"  {b}: {escape(e.minutes[b].source)}")
        if e.mfu is not None:
            console.print(f"  MFU {e.mfu.value:.1%}: {escape(e.mfu.source)}")
        for note in e.notes:
            console.print(f"  [yellow]{escape(note)}[/]")
    for line in planned.refused:
        console.print(f"[red]refused[/] {escape(line)}")
    wall = planned.wall_minutes(parallel)
    console.print(f"expected: {_num(planned.usd, 2)} USD in all, {_num(wall)} min with --parallel {parallel}; "
                  f"worst case {_num(planned.worst_usd, 2)} USD (every host living to its TTL)")


def _num(value: float | None, digits: int = 1) -> str:
    return "unknown" if value is None else f"{value:.{digits}f}"


def compare_command(plan_path: Path, plan_only: bool, budget: float | None, parallel: int, resume: bool,
                    opts: RunOptions, console: Console) -> int:
    """The `ernie compare` command; its exit status."""
    plan, planned = plan_and_check(plan_path, budget, parallel, opts.results_root, console, resume)
    if plan_only:
        return 0
    return run_plan(plan, planned, parallel, resume, opts, console)
