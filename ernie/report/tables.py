"""The report's tables as plain text cells, rendered alike to Markdown, HTML and the terminal."""

from __future__ import annotations

from dataclasses import dataclass

from ernie.results import Comparison, RunSummary
from ernie.results.figures import WALL_SPLIT


@dataclass(frozen=True)
class Table:
    """A titled table of text cells."""

    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    note: str = ""


def runs_table(runs: list[RunSummary]) -> Table:
    """One row per run: what ran where, whether it completed, and its speed, quality and cost figures."""
    rows = [
        (
            r.run_id, r.workload or "?", r.framework or "?", _where(r), r.status,
            _rate(r.throughput, r.throughput_unit), _pct(r.mfu), _minutes(r.time_to_train_s),
            _quality(r), _minutes(r.time_to_target_s), _usd(r.cost_usd), _usd(r.usd_per_million),
            _usd(r.usd_to_target),
        )
        for r in runs
    ]
    return Table(
        "Runs",
        ("run", "workload", "framework", "where", "status", "throughput", "MFU", "time-to-train",
         "eval (target)", "time-to-target", "cost", "$ per M", "$ to target"),
        rows,
        note="time-to-train is MLPerf's run_start to run_stop; cost is the price per hour times the stack's "
             "lifetime (provisioning to teardown); $ per M is per million samples (or words) at the measured "
             "throughput. Only complete runs are results: failed and incomplete runs are listed with what is missing.",
    )


def wall_table(runs: list[RunSummary]) -> Table:
    """Where each run's wall time went, from its timeline.json."""
    rows = [
        (r.run_id, r.status, *(_minutes(r.wall_s.get(b)) if r.wall_s else "-" for b in WALL_SPLIT),
         _minutes(r.lifetime_s), _minutes(r.lost_s), _price(r))
        for r in runs
    ]
    return Table("Wall time", ("run", "status", *WALL_SPLIT, "lifetime", "lost to preemption", "price"), rows,
                 note="lost to preemption: from the last checkpoint before a preemption until `ernie run --resume` "
                      "had every worker training again (work redone and downtime); it is part of the lifetime.")


def comparison_table(comparisons: list[Comparison], note: str = "") -> Table:
    """Our runs beside published MLPerf time-to-train, each labelled with how the two differ."""
    rows = [
        (c.run.run_id, _ours(c.run), f"MLPerf {c.row.round} {c.row.system}", f"{c.row.minutes:.2f} min", c.scale)
        for c in comparisons
    ]
    return Table(
        "Against MLPerf Training",
        ("our run", "ours", "MLPerf system", "MLPerf time-to-train", "scale difference"),
        rows,
        note=note or "MLPerf rows and their sources ship in ernie/data/mlperf_results.csv. Only complete runs are "
             "compared; a run that did not reach the MLPerf quality target has no time-to-train in MLPerf's sense.",
    )


def provenance_table(runs: list[RunSummary]) -> Table:
    """What it takes to reproduce each row."""
    rows = [
        (
            r.run_id, r.config_hash or "-",
            ", ".join(f"{k} {v}" for k, v in sorted(r.versions.items()) if v and k not in ("image", "runtime")) or "-",
            r.image or "-", r.runtime or "-", r.command or "-",
        )
        for r in runs
    ]
    return Table("Provenance", ("run", "config hash", "versions", "image", "runtime", "command"), rows)


def problems_table(runs: list[RunSummary]) -> Table:
    """Every run that is not a result, and exactly what is missing or failed."""
    rows = [(r.run_id, r.status, "; ".join(r.problems) or "-") for r in runs if not r.succeeded or r.problems]
    return Table("Not complete", ("run", "status", "what is missing or failed"), rows)


def _ours(r: RunSummary) -> str:
    """Our result in an MLPerf row's terms: the time to the target, or how far from it the run stopped."""
    if r.target_reached and r.time_to_target_s is not None:
        return f"{_minutes(r.time_to_target_s)} to {r.eval_metric} {r.eval_target}"
    ttt = f" after {_minutes(r.time_to_train_s)}" if r.time_to_train_s is not None else ""
    if r.eval_value is None or r.eval_target is None:
        return f"no evaluation against a target{ttt}"
    return f"target not reached ({r.eval_metric} {r.eval_value:.3f} of {r.eval_target}){ttt}"


def _where(r: RunSummary) -> str:
    chips = f"{r.chips}x " if r.chips else ""
    hosts = f", {r.hosts} hosts" if r.hosts and r.hosts > 1 else ""
    return f"{r.cloud or '?'}: {chips}{r.accelerator or '?'}{hosts}"


def _rate(value: float | None, unit: str | None) -> str:
    return f"{value:,.1f} {unit}/s" if value is not None else "-"


def _pct(value: float | None) -> str:
    return f"{value:.1%}" if value is not None else "-"


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 60:.2f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _usd(value: float | None) -> str:
    return f"${value:,.2f}" if value is not None else "-"


def _price(r: RunSummary) -> str:
    return f"${r.price_per_hour_usd:,.2f}/h" if r.price_per_hour_usd is not None else "-"


def _quality(r: RunSummary) -> str:
    if r.eval_value is None:
        return "-"
    target = f" ({r.eval_target})" if r.eval_target is not None else ""
    mark = " reached" if r.target_reached else ""
    return f"{r.eval_metric or 'eval'} {r.eval_value:.3f}{target}{mark}"
