"""The comparison report of a plan: one row per cell, the plan's estimate beside the actual, and the plot people
expect (time to target against dollars, one point per cell).

Figures come from the results index (ernie/results: the same derivations `ernie report` shows); the estimate is
the one state.json kept when the cell started. Error = (estimate - actual) / actual. Written as compare.md with
its plot beside it, compare.html (self-contained, through ernie/report/render.py) and compare.json.
"""

from __future__ import annotations

import io
import json
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ernie.compare.plan import ComparePlan
from ernie.results import ResultsIndex, RunSummary

if TYPE_CHECKING:
    from ernie.compare.runner import CellState


@dataclass(frozen=True)
class Row:
    """One cell's actual figures and its estimate."""

    cell: str
    hardware: str
    workload: str
    status: str
    run_id: str
    throughput: float | None
    throughput_unit: str | None
    mfu: float | None
    time_to_target_min: float | None
    usd_per_million: float | None
    usd_to_target: float | None
    actual_min: float | None
    actual_usd: float | None
    estimate_min: float | None
    estimate_usd: float | None
    estimate_mfu: float | None

    @property
    def min_error(self) -> float | None:
        return _error(self.estimate_min, self.actual_min)

    @property
    def usd_error(self) -> float | None:
        return _error(self.estimate_usd, self.actual_usd)

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "min_error": self.min_error, "usd_error": self.usd_error}


def _error(estimate: float | None, actual: float | None) -> float | None:
    return None if estimate is None or not actual else (estimate - actual) / actual


def rows(plan: ComparePlan, state: dict[str, CellState], results_root: Path) -> list[Row]:
    """Index the cells' runs (so the next plan learns from them) and read their figures."""
    index = ResultsIndex(results_root)
    index.refresh([results_root / s.run_id for s in state.values() if (results_root / s.run_id).is_dir()])
    found = {r.run_id: r for r in index.summaries()}
    out = []
    for cell in plan.cells:
        st = state.get(cell.name)
        if st is None:
            continue
        r = found.get(st.run_id) or RunSummary(run_id=st.run_id, status=st.status)
        est = st.estimate
        hw = est.get("hardware", {})
        out.append(Row(
            cell=cell.name, hardware=f"{hw.get('chips')}x {hw.get('accelerator')} [{hw.get('cloud')}]",
            workload=r.workload or cell.workload, status=r.status if r.run_id in found else st.status,
            run_id=st.run_id, throughput=r.throughput, throughput_unit=r.throughput_unit, mfu=r.mfu,
            time_to_target_min=_min(r.time_to_target_s), usd_per_million=r.usd_per_million,
            usd_to_target=r.usd_to_target, actual_min=_min(r.lifetime_s), actual_usd=r.cost_usd,
            estimate_min=est.get("total_minutes"), estimate_usd=est.get("usd"),
            estimate_mfu=(est.get("mfu") or {}).get("value")))
    return out


def answers(table: list[Row]) -> list[str]:
    """The summary: the fastest and the cheapest cell for the stated target (by throughput and $ per million
    where no cell reached it)."""
    done = [r for r in table if r.status == "complete"]
    reached = [r for r in done if r.time_to_target_min is not None and r.usd_to_target is not None]
    if reached:
        fast = min(reached, key=lambda r: r.time_to_target_min)  # type: ignore[arg-type,return-value]
        cheap = min(reached, key=lambda r: r.usd_to_target)  # type: ignore[arg-type,return-value]
        return [f"fastest to target: {fast.cell} ({_num(fast.time_to_target_min, ' min')}); cheapest to target: "
                f"{cheap.cell} ({_num(cheap.usd_to_target, ' USD')})"]
    rated = [r for r in done if r.throughput]
    if not rated:
        return ["no cell completed: nothing to compare yet (`ernie compare PLAN --resume` runs the missing cells)"]
    fast = max(rated, key=lambda r: r.throughput)  # type: ignore[arg-type,return-value]
    priced = [r for r in rated if r.usd_per_million is not None]
    line = (f"no cell reached its target; highest throughput: {fast.cell} "
            f"({fast.throughput:.4g} {fast.throughput_unit}/s)")
    if priced:
        cheap = min(priced, key=lambda r: r.usd_per_million)  # type: ignore[arg-type,return-value]
        line += f"; cheapest per million {cheap.throughput_unit}: {cheap.cell} ({cheap.usd_per_million:.4g} USD)"
    return [line]


def closeness(table: list[Row], previous_report: Path) -> list[str]:
    """How far the plan's time estimates were from the actual runs, beside the same figure for the runs the
    previous report of this plan showed (the index learned from those: this is where the estimates improve)."""
    now = [abs(r.min_error) for r in table if r.min_error is not None and r.status == "complete"]
    if not now:
        return []
    line = f"the plan's time estimates were off by a median {statistics.median(now):.0%} ({len(now)} cell(s))"
    try:
        before = json.loads(previous_report.read_text())["cells"]
        current = {r.run_id for r in table}
        then = [abs(c["min_error"]) for c in before
                if c.get("min_error") is not None and c.get("status") == "complete" and c.get("run_id") not in current]
    except (OSError, ValueError, KeyError, TypeError):
        then = []
    if then:
        line += f"; for the runs of the previous report of this plan: {statistics.median(then):.0%}"
    return [line]


def like_for_like(plan: ComparePlan) -> list[str]:
    """The settings every cell shares, and each declared difference, for the top of the report."""
    shared = ", ".join(f"{k}={v}" for k, v in plan.shared.items()) or "none declared"
    lines = [f"like for like: {shared}"]
    for cell in plan.cells:
        if cell.differs:
            lines.append(f"cell {cell.name} differs on purpose: "
                         + ", ".join(f"{k}={cell.params[k]} (not {plan.shared[k]})" for k in cell.differs))
    return lines


def write_comparison(plan: ComparePlan, state: dict[str, CellState], results_root: Path,
                     out: Path) -> tuple[Path, Path, Path]:
    """compare.md (+ compare-plot.png), compare.html and compare.json in `out`."""
    from ernie.report.plots import Plot
    from ernie.report.render import to_html, to_markdown
    from ernie.report.tables import Table

    table = rows(plan, state, results_root)
    title = f"ernie compare {plan.name}: which cell reached the target fastest, and which cheapest?"
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    intro = [f"plan {plan.path} ({len(table)} cell(s)); generated {now} from the results index in {results_root}",
             *like_for_like(plan)]
    said = answers(table) + closeness(table, out / "compare.json")
    cells = Table("cells", ("cell", "hardware", "workload", "status", "throughput", "MFU", "time to target",
                            "USD per million", "USD to target", "run"),
                  [(r.cell, r.hardware, r.workload, r.status, _rate(r), _pct(r.mfu), _num(r.time_to_target_min, " min"),
                    _num(r.usd_per_million, " USD"), _num(r.usd_to_target, " USD"), r.run_id) for r in table])
    accuracy = Table("the plan's estimate beside the actual",
                     ("cell", "minutes: estimate", "actual", "error", "USD: estimate", "actual", "error",
                      "MFU: estimate", "actual"),
                     [(r.cell, _num(r.estimate_min), _num(r.actual_min), _pct(r.min_error, signed=True),
                       _num(r.estimate_usd), _num(r.actual_usd), _pct(r.usd_error, signed=True),
                       _pct(r.estimate_mfu), _pct(r.mfu)) for r in table],
                     note="error = (estimate - actual) / actual; actual minutes are the run's lifetime, provisioning "
                          "to teardown. The next plan's estimates learn from these runs.")
    plot = Plot("compare-plot", "time to target against dollars, one point per cell", _plot(table))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{plot.name}.png").write_bytes(plot.png)
    md, page, data = out / "compare.md", out / "compare.html", out / "compare.json"
    md.write_text(to_markdown(title, intro, said, [cells, accuracy], [plot], {plot.name: f"{plot.name}.png"}),
                  encoding="utf-8")
    page.write_text(to_html(title, intro, said, [cells, accuracy], [plot]), encoding="utf-8")
    data.write_text(json.dumps({"plan": plan.name, "like_for_like": plan.shared, "answers": said,
                                "cells": [r.to_json() for r in table]}, indent=2) + "\n")
    return md, page, data


def _plot(table: list[Row]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    points = [r for r in table if r.time_to_target_min is not None and r.usd_to_target is not None]
    for r in points:
        ax.scatter(r.time_to_target_min, r.usd_to_target, s=40)
        ax.annotate(f"{r.cell}\n{r.hardware}", (r.time_to_target_min, r.usd_to_target),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    if not points:
        ax.text(0.5, 0.5, "no cell reached its target", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("time to target (minutes)")
    ax.set_ylabel("dollars to target (USD)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.margins(0.2)
    ax.set_title("each cell: time to target against dollars to target", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _min(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60


def _num(value: float | None, unit: str = "", digits: int = 3) -> str:
    """`digits` significant figures: a cell may cost a few cents or a few thousand dollars."""
    return "-" if value is None else f"{value:.{digits}g}{unit}"


def _pct(value: float | None, signed: bool = False) -> str:
    return "-" if value is None else f"{value:+.1%}" if signed else f"{value:.1%}"


def _rate(r: Row) -> str:
    return "-" if r.throughput is None else f"{r.throughput:.4g} {r.throughput_unit}/s"
