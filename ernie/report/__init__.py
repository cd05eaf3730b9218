"""`ernie report`: a Markdown report and a self-contained HTML page from indexed runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ernie import __version__
from ernie.errors import ErnieError
from ernie.report.plots import render_plots
from ernie.report.render import to_html, to_markdown
from ernie.report.tables import (
    COMPARISON_NOTE, Table, comparison_table, frameworks_table, problems_table, provenance_table, runs_table,
    settings_table, wall_table,
)
from ernie.results import ResultsIndex, RunSummary, compare
from ernie.results.frameworks import compare_frameworks, sentence
from ernie.results.mlperf import closest

TITLE = "ernie: which accelerator and framework trained fastest, and which was cheapest per result?"


@dataclass(frozen=True)
class ReportFiles:
    """Where a report was written."""

    markdown: Path
    html: Path


def build_tables(runs: list[RunSummary]) -> list[Table]:
    """Every table of the report, in page order: the results, then the detail sections."""
    comparisons = compare(runs)
    return [
        runs_table(runs), frameworks_table(compare_frameworks(runs)), settings_table(runs),
        comparison_table(closest(comparisons), note=NEAREST_NOTE), wall_table(runs), problems_table(runs),
        provenance_table(runs), comparison_table(comparisons, title="Detail: against every MLPerf row"),
    ]


NEAREST_NOTE = ("Each configuration beside the MLPerf row nearest its scale (the same accelerator family first, then "
                "the nearest chip count); every row is in 'Detail: against every MLPerf row'. " + COMPARISON_NOTE
                + " A run that did not reach the MLPerf quality target has no time-to-train in MLPerf's sense.")


def answers(runs: list[RunSummary]) -> list[str]:
    """The report's question answered in sentences, per throughput unit, from complete runs only."""
    done = [r for r in runs if r.succeeded]
    out = []
    for unit in sorted({r.throughput_unit for r in done if r.throughput_unit}):
        same = [r for r in done if r.throughput_unit == unit and r.throughput is not None]
        fastest = max(same, key=lambda r: r.throughput)
        out.append(f"Fastest ({unit}/s): {_name(fastest)} at {fastest.throughput:,.1f} {unit}/s.")
        priced = [r for r in same if r.usd_per_million]
        if priced:
            cheapest = min(priced, key=lambda r: r.usd_per_million)
            out.append(f"Cheapest per million {unit}: {_name(cheapest)} at {_usd(cheapest.usd_per_million)}"
                       f"{_basis(cheapest)}.")
        elif same:
            out.append(f"Cheapest per million {unit}: not priced ({same[0].price_source or 'no price given'}).")
    out += [sentence(c) for c in compare_frameworks(runs)]
    reached = [r for r in done if r.usd_to_target is not None]
    if reached:
        best = min(reached, key=lambda r: r.usd_to_target)
        out.append(f"Cheapest to its quality target: {_name(best)}, {_usd(best.usd_to_target)}{_basis(best)} "
                   f"in {best.time_to_target_s / 60:.1f} min of training.")
    hits = [r for r in done if r.target_reached and r.time_to_target_s is not None]
    if hits and not reached:
        fastest = min(hits, key=lambda r: r.time_to_target_s)
        out.append(f"Fastest to its quality target: {_name(fastest)}, {fastest.time_to_target_s / 60:.1f} min "
                   f"to {fastest.eval_metric} {fastest.eval_target} (not priced).")
    if not hits:
        out.append("No complete run reached its quality target.")
    not_done = len(runs) - len(done)
    if not_done:
        out.append(f"{not_done} run(s) did not complete and are not counted as results (see 'Not complete').")
    return out


def write_report(runs: list[RunSummary], out_dir: Path, source: str) -> ReportFiles:
    """Write report.md (plots as PNG files in plots/) and report.html (self-contained) to `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots, not_drawn = render_plots(runs)
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    for p in plots:
        (plot_dir / f"{p.name}.png").write_bytes(p.png)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    done = sum(r.succeeded for r in runs)
    intro = [f"{len(runs)} run(s), {done} complete, from {source}; generated {now} by ernie {__version__} "
             "from the collected files alone (manifest.json, timeline.json, MLPerf logs, result.json)."]
    tables = build_tables(runs)
    said = answers(runs) + not_drawn
    md = out_dir / "report.md"
    md.write_text(to_markdown(TITLE, intro, said, tables, plots, {p.name: f"plots/{p.name}.png" for p in plots}),
                  encoding="utf-8")
    page = out_dir / "report.html"
    page.write_text(to_html(TITLE, intro, said, tables, plots), encoding="utf-8")
    return ReportFiles(md, page)


def _usd(value: float) -> str:
    """Dollars to the cent, or to four significant figures below a cent (a minute of a small instance)."""
    return f"${value:,.2f}" if value >= 0.01 else f"${value:.4g}"


def _basis(r: RunSummary) -> str:
    return (f" (priced as an equivalent, not a bill: {r.price_source.removeprefix('equivalent, not a bill: ')})"
            if r.price_basis == "equivalent" else "")


def _name(r: RunSummary) -> str:
    chips = f"{r.chips}x " if r.chips else ""
    return f"{r.workload} ({r.framework}) on {chips}{r.accelerator} [{r.cloud}], run {r.run_id}"


def report_runs(results: Path, run_ids: list[str], all_runs: bool,
                out: Path | None) -> tuple[ReportFiles, list[RunSummary]]:
    """Index the runs under `results` (only those changed since last time) and report the runs asked for.

    `run_ids` names runs (directories under `results`, or runs already in its database); `all_runs` takes every
    run directory there and every run the database holds.
    """
    if all_runs == bool(run_ids):
        raise ErnieError("name the runs to report (RUN_ID ...) or pass --all, not both and not neither")
    if not results.is_dir():
        raise ErnieError(f"no results directory {results}: run a workload first (`ernie demo` or `ernie run`), "
                         "or pass --results DIR where runs were collected")
    index = ResultsIndex(results)
    if all_runs:
        index.refresh(index.run_dirs())
        runs = index.summaries()
        if not runs:
            raise ErnieError(f"no runs under {results}: run a workload first (`ernie demo` or `ernie run`)")
    else:
        index.refresh(results / r for r in dict.fromkeys(run_ids) if (results / r).is_dir())
        runs = index.summaries(list(dict.fromkeys(run_ids)))
    files = write_report(runs, out or results / "report", source=str(results))
    return files, runs
