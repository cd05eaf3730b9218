"""What `ernie report` and `ernie demo` print: the MLPerf comparison, what did not complete, where the report is."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rich.console import Console

from ernie.report import ReportFiles, report_runs
from ernie.report.render import to_rich
from ernie.report.tables import comparison_table, problems_table
from ernie.results import RunSummary, compare
from ernie.results.mlperf import closest
from ernie.terminal import SafeConsole

#: The terminal lists the latest runs that are not results; the report lists all of them.
SHOW_PROBLEMS = 10


def print_summary(console: Console, files: ReportFiles, runs: list[RunSummary]) -> None:
    """The comparison table, the runs that are not results and why, and the report's paths."""
    comparisons = compare(runs)
    if comparisons:
        near = closest(comparisons)
        console.print(to_rich(comparison_table(near)))
        console.print(f"(each run beside the MLPerf row nearest its scale; the report has all "
                      f"{len(comparisons)} comparisons)", highlight=False)
    else:
        console.print("No complete run to compare with MLPerf.")
    problems = problems_table(runs)
    if problems.rows:
        shown = replace(problems, rows=problems.rows[-SHOW_PROBLEMS:])
        console.print(to_rich(shown))
        if len(problems.rows) > SHOW_PROBLEMS:
            console.print(f"... and {len(problems.rows) - SHOW_PROBLEMS} more not complete: see the report.")
    done = sum(r.succeeded for r in runs)
    console.print(f"{len(runs)} run(s), {done} complete. Report: {files.markdown} and {files.html}")


def report_command(results: Path, run_ids: list[str], all_runs: bool, out: Path | None) -> None:
    """`ernie report`: index, write the report, print its summary."""
    files, runs = report_runs(results, run_ids, all_runs, out)
    print_summary(SafeConsole(), files, runs)
