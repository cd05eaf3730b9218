"""The report's tables as plain text cells, rendered alike to Markdown, HTML and the terminal."""

from __future__ import annotations

from dataclasses import dataclass

import re

from ernie.results import Comparison, RunSummary
from ernie.results.figures import WALL_SPLIT
from ernie.results.frameworks import FrameworkComparison
from ernie.results.mlperf import conformance_label, run_conformance


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


def settings_table(runs: list[RunSummary]) -> Table:
    """What each run ran with: the settings a framework comparison must hold equal."""
    rows = [
        (
            r.run_id, r.framework or "?", r.precision or "-",
            f"{_or_dash(r.threads)} / {_or_dash(r.inter_op_threads)}" if r.threads is not None else "-",
            _or_dash(r.processes),
            f"{_or_dash(r.micro_batch)} / {_or_dash(r.global_batch_size)}",
            r.compile or "-",
            f"{r.data} [{r.data_digest[:8]}]" if r.data and r.data_digest else (r.data or "-"),
            _or_dash(r.host_cpus),
        )
        for r in runs
    ]
    return Table(
        "Settings", ("run", "framework", "precision", "threads (intra / inter-op)", "processes",
                     "batch (micro / global)", "compile", "data [meta.json digest]", "host CPUs"),
        rows,
        note="As each run's result.json records them (a run that predates them shows '-'). Equal data digests "
             "are the same prepared data.",
    )


def frameworks_table(comparisons: list[FrameworkComparison]) -> Table:
    """Each pair of frameworks on the same accelerator and model: the throughput ratio and what matched."""
    rows = [
        (c.first.run_id, c.second.run_id, c.label, f"{c.ratio:.2f}x", ", ".join(c.matched) or "-",
         ", ".join(c.differs + [f"{u} (not recorded)" for u in c.unknown]) or "-")
        for c in comparisons
    ]
    return Table(
        "Frameworks compared", ("run", "against run", "ratio of", "throughput ratio", "same", "differs"), rows,
        note="The latest complete run of each framework per benchmark, accelerator, chip count and model. A ratio "
             "is like for like only where nothing differs.",
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
                      "had every worker training again (work redone and downtime); it is part of the lifetime. "
                      "A local run is not billed: its price is an equivalent cloud instance's (the same number of "
                      "vCPUs, catalog/prices.csv), or it is not priced.")


def comparison_table(comparisons: list[Comparison], note: str = "",
                     title: str = "Against MLPerf Training") -> Table:
    """Our runs beside published MLPerf time-to-train: scored as the rules score them, each labelled with its
    conformance, whether it is like for like (and if not, what differs), and how the scales differ."""
    rows = [
        (c.run.run_id, f"{ours(c.run)}; scored: {c.score.label}", conformance_label(c.run),
         f"MLPerf {c.row.round} {c.row.system} ({c.row.status})",
         f"{c.row.minutes:.2f} min to {c.row.quality_metric} {c.row.quality_target}", _like(c), c.scale)
        for c in comparisons
    ]
    return Table(
        title,
        ("our run", "ours (latest run; scored)", "conformance", "MLPerf system (status)",
         "MLPerf time-to-train (round's target)", "like for like?", "scale difference"),
        rows,
        note=note or COMPARISON_NOTE,
    )


def _like(c: Comparison) -> str:
    """'yes', or 'no: ' and what differs beyond the conformance column (which names the run's own differences)."""
    if c.like_for_like:
        return "yes"
    own = ["the run is not conformant"] if run_conformance(c.run) else []
    return "no: " + "; ".join(own + list(c.beyond_conformance))


COMPARISON_NOTE = (
    "MLPerf rows, their status (available cloud, available on-premise, preview, research) and their sources ship "
    "in ernie/data/mlperf_results.csv. A configuration's complete runs are scored as the rules score them: the "
    "olympic mean (fastest and slowest dropped) of the rules' number of runs (10 for BERT and Transformer), with "
    "the fastest-slowest spread; fewer runs are scored all the same and labelled 'N of 10 runs'. A comparison is "
    "like for like only when the run is conformant (result.json's MLPerf block: closed division, nothing differs), "
    "aims at the round's target and has the rules' number of runs; otherwise it names what differs.")


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


def ours(r: RunSummary) -> str:
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
    if r.price_per_hour_usd is None:
        return "not priced" if r.price_basis == "not priced" else "-"
    return f"${r.price_per_hour_usd:,.2f}/h" + (" (equivalent)" if r.price_basis == "equivalent" else "")


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


_RUN_ID_STAMP = re.compile(r"\d{8}-\d{6}-")


def short_id(run_id: str) -> str:
    """A run id without its date and time ('20261204-173427-bert-torch-91b2' -> 'bert-torch-91b2'): the terminal's
    name for a run; the report and `ernie report RUN_ID` use the whole id."""
    return _RUN_ID_STAMP.sub("", run_id, count=1) if _RUN_ID_STAMP.match(run_id) else run_id


def _quality(r: RunSummary) -> str:
    if r.eval_value is None:
        return "-"
    target = f" ({r.eval_target})" if r.eval_target is not None else ""
    mark = " reached" if r.target_reached else ""
    return f"{r.eval_metric or 'eval'} {r.eval_value:.3f}{target}{mark}"
