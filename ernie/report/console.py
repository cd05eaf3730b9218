"""What `ernie report` and `ernie demo` print: a summary that fits an 80-column terminal (short run ids, a few
columns, each run beside its nearest MLPerf row only), or with --wide every table of the report. The report's
files hold everything either way."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table as RichTable
from rich.text import Text

from ernie.report import ReportFiles, build_tables, report_runs
from ernie.report.render import to_rich
from ernie.report.tables import ours, problems_table, short_id
from ernie.results import RunSummary, compare
from ernie.results.frameworks import compare_frameworks, sentence
from ernie.results.mlperf import Comparison, closest, difference_kinds, run_conformance
from ernie.terminal import SafeConsole, remote

#: The terminal lists the latest runs that are not results; the report lists all of them.
SHOW_PROBLEMS = 10


def print_summary(console: Console, files: ReportFiles, runs: list[RunSummary], wide: bool = False) -> None:
    """The runs, the framework comparisons, each run's nearest MLPerf row, what did not complete, and the files.

    Cells are short and a long text (a comparison, a problem) is a paragraph of its own, so at 80 columns no
    cell wraps; `wide` prints every table of the report instead, at the terminal's width.
    """
    if wide:
        for table in build_tables(runs):
            if table.rows:
                console.print(to_rich(table))
    else:
        _compact(console, runs)
    done = sum(r.succeeded for r in runs)
    console.print(remote(f"{len(runs)} run(s), {done} complete. Report: {files.markdown} and {files.html}"))


def _compact(console: Console, runs: list[RunSummary]) -> None:
    table = _table("Runs (every column: the report, or --wide)", ("run", "throughput", "eval / target", "status"))
    for r in runs:
        rate = f"{r.throughput:,.{0 if r.throughput >= 100 else 1}f} {r.throughput_unit}/s" if r.throughput else "-"
        table.add_row(remote(short_id(r.run_id)), rate, remote(_eval(r)), r.status)
    console.print(table)
    for c in compare_frameworks(runs):
        console.print(_paragraph(f"{short_id(c.second.run_id)} vs {short_id(c.first.run_id)}: {sentence(c)}"))
    comparisons = compare(runs)
    if comparisons:
        near = _table(f"Against MLPerf Training: each run's nearest row (all {len(comparisons)} in the report)",
                      ("run", "ours, and the nearest MLPerf time-to-train"))
        for c in closest(comparisons):
            near.add_row(remote(short_id(c.run.run_id)), remote("\n".join(_against(c))))
        console.print(near)
    else:
        console.print("No complete run to compare with MLPerf.")
    problems = problems_table(runs)
    if problems.rows:
        shown = replace(problems, rows=problems.rows[-SHOW_PROBLEMS:])
        console.print(Text("Not complete:", style="bold"))
        for run_id, status, what in shown.rows:
            console.print(_paragraph(f"{short_id(run_id)} ({status}): {what}"))
        if len(problems.rows) > SHOW_PROBLEMS:
            console.print(f"... and {len(problems.rows) - SHOW_PROBLEMS} more not complete: see the report.")


def _table(title: str, headers: tuple[str, ...]) -> RichTable:
    """A borderless table under its title, the title as wide as the table or the title, whichever is wider (a
    table's own title wraps at the table's width)."""
    out = RichTable(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
                    min_width=len(title))
    for h in headers:
        out.add_column(h, overflow="fold")
    return out


def _paragraph(text: str) -> Padding:
    """A long text as an indented paragraph: it wraps as prose, never inside a table cell."""
    return Padding(remote(text), (0, 0, 0, 2))


def _against(c: Comparison) -> list[str]:
    """A comparison in short lines: ours, our score, the MLPerf row and its status, and whether it is like for like
    (the kinds of difference only; the report names each one), wrapped so that no cell wraps at 80 columns."""
    own = run_conformance(c.run)
    conformance = f"not conformant: {difference_kinds(own)}" if own else "conformant (closed division)"
    beyond = difference_kinds(("conformance",) * bool(own) + c.beyond_conformance)
    lines = [_ours(c.run), f"scored: {c.score.label}",
             f"MLPerf {c.row.round} {c.row.system}: {c.row.minutes:.2f} min",
             f"  {c.row.status}, target {c.row.quality_target}", conformance,
             "like for like" if c.like_for_like else f"not like for like: {beyond}"]
    return [part for line in lines for part in textwrap.wrap(line, CELL_WIDTH, subsequent_indent="  ")]


#: The widest text a comparison cell holds: 80 columns less a short run id and the table's padding.
CELL_WIDTH = 56


def _ours(r: RunSummary) -> str:
    """The run in MLPerf's terms, short: the time to its target, or how far from it the run stopped."""
    if r.target_reached and r.time_to_target_s is not None:
        return ours(r)
    if r.eval_value is None or r.eval_target is None:
        return "no evaluation against a target"
    return f"not reached: {r.eval_metric} {r.eval_value:.3f} of {r.eval_target}"


def _eval(r: RunSummary) -> str:
    if r.eval_value is None:
        return "-"
    target = f" / {r.eval_target}" if r.eval_target is not None else ""
    return f"{r.eval_value:.3f}{target}" + (" reached" if r.target_reached else "")


def report_command(results: Path, run_ids: list[str], all_runs: bool, out: Path | None, wide: bool = False) -> None:
    """`ernie report`: index, write the report, print its summary."""
    files, runs = report_runs(results, run_ids, all_runs, out)
    print_summary(SafeConsole(), files, runs, wide)
