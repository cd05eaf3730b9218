"""The report's plots (matplotlib, rendered to PNG bytes): throughput, cost per million, time and cost to
target, and the wall-time split. Runs of one configuration are drawn as their median, so a thousand runs
make the same few bars; only complete runs are drawn as results. A plot with nothing to show (every value
missing or zero) is not drawn: the report says why instead."""

from __future__ import annotations

import io
import statistics
from collections import defaultdict
from dataclasses import dataclass

from matplotlib.figure import Figure

from ernie.results import RunSummary
from ernie.results.figures import WALL_SPLIT

_DPI = 100
_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1")


@dataclass(frozen=True)
class Plot:
    """One rendered plot."""

    name: str  # file stem: throughput, cost, target, wall
    title: str
    png: bytes


class NotDrawn(Exception):
    """A plot with nothing to show; the message says why."""


def render_plots(runs: list[RunSummary]) -> tuple[list[Plot], list[str]]:
    """The report's plots from the complete runs among `runs`, and for each plot not drawn, why."""
    done = [r for r in runs if r.succeeded]
    plots, skipped = [], []
    for name, title, draw in (
        ("throughput", "Throughput per accelerator and framework", _throughput),
        ("cost", "Cost per million samples (or words)", _cost),
        ("target", "Time and cost to the quality target", _target),
        ("wall", "Where the wall time went", _wall),
    ):
        try:
            plots.append(Plot(name, title, draw(done)))
        except NotDrawn as why:
            skipped.append(f"{title}: not drawn, {why}.")
    return plots, skipped


def config_label(r: RunSummary) -> str:
    """A configuration as the plots name it: workload, accelerator and chips."""
    chips = f"{r.chips}x " if r.chips else ""
    return f"{r.workload or '?'} ({r.framework or '?'})\n{chips}{r.accelerator or '?'}"


def _by_config(runs: list[RunSummary], value) -> dict[str, dict[str, float]]:
    """{unit: {configuration: median value}} over the runs where `value(run)` is known."""
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        v = value(r)
        if v is not None and r.throughput_unit:
            groups[r.throughput_unit][config_label(r)].append(v)
    return {unit: {k: statistics.median(v) for k, v in sorted(g.items())} for unit, g in sorted(groups.items())}


def _throughput(runs: list[RunSummary]) -> bytes:
    return _bars(_by_config(runs, lambda r: r.throughput), "{unit}/s", "no complete run measured a throughput")


def _cost(runs: list[RunSummary]) -> bytes:
    return _bars(_by_config(runs, lambda r: r.usd_per_million), cost_axis(runs),
                 "no complete run is priced (a local run without an equivalent instance is not)")


def cost_axis(runs: list[RunSummary]) -> str:
    """The cost plot's axis: a local run's cost is an equivalent instance's, not a bill, and the axis says so."""
    equivalent = any(r.price_basis == "equivalent" and r.usd_per_million for r in runs)
    return "$ per million {unit}" + (" (local runs: an equivalent instance's price, not a bill)" if equivalent else "")


def _bars(data: dict[str, dict[str, float]], ylabel: str, empty: str) -> bytes:
    """One horizontal bar panel per unit (samples, words): units are never mixed on one axis. Zero bars are
    dropped (a zero is no measurement here), and a plot left with no bar is not drawn."""
    data = {unit: kept for unit, groups in data.items() if (kept := {k: v for k, v in groups.items() if v})}
    if not data:
        raise NotDrawn(empty)
    rows = sum(len(g) for g in data.values())
    fig = _figure(0.5 + 0.55 * rows + 0.9 * len(data), left=0.27, top_in=0.2, bottom_in=0.6)
    axes = fig.subplots(len(data), 1, squeeze=False, height_ratios=[len(g) + 1 for g in data.values()],
                        gridspec_kw={"hspace": 0.9 / (0.55 * rows / len(data) + 0.5)})
    for ax, (unit, groups) in zip(axes[:, 0], data.items()):
        labels, values = list(groups), list(groups.values())
        bars = ax.barh(labels, values, color=[_COLOURS[i % len(_COLOURS)] for i in range(len(labels))])
        ax.bar_label(bars, labels=[f"{v:,.2f}" for v in values], padding=3, fontsize=8)
        ax.set_xlabel(ylabel.format(unit=unit))
        ax.invert_yaxis()
        ax.set_xlim(0, max(values) * 1.18)  # room for the labels
        ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


def _target(runs: list[RunSummary]) -> bytes:
    """Minutes to the target per configuration (median), each bar labelled with the median cost to it where the
    runs are priced: a run that reached its target is shown even when it has no price."""
    hits = [r for r in runs if r.target_reached and r.time_to_target_s]
    if not hits:
        raise NotDrawn("no complete run reached its quality target")
    groups: dict[str, list[RunSummary]] = defaultdict(list)
    for r in hits:
        groups[f"{config_label(r)} to {r.eval_metric} {r.eval_target}"].append(r)
    labels = sorted(groups)
    minutes = [statistics.median(r.time_to_target_s / 60 for r in groups[k]) for k in labels]
    costs = []
    for k in labels:
        priced = [r.usd_to_target for r in groups[k] if r.usd_to_target is not None]
        costs.append(f"${statistics.median(priced):,.4f}" if priced else "not priced")
    fig = _figure(1.1 + 0.55 * len(labels), left=0.27, top_in=0.2, bottom_in=0.6)
    ax = fig.subplots()
    bars = ax.barh(labels, minutes, color=[_COLOURS[i % len(_COLOURS)] for i in range(len(labels))])
    ax.bar_label(bars, labels=[f"{m:,.2f} min, {c}" for m, c in zip(minutes, costs)], padding=3, fontsize=8)
    ax.set_xlabel("minutes from MLPerf run_start to the first eval at the target (label: $ to target)")
    ax.set_xlim(0, max(minutes) * 1.4)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


def _wall(runs: list[RunSummary]) -> bytes:
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for r in runs:
        if any(r.wall_s.get(b) for b in WALL_SPLIT):  # a timeline of zeros draws no bar
            groups[config_label(r)].append(r.wall_s)
    if not groups:
        raise NotDrawn("no complete run has a timed phase in its timeline")
    labels = sorted(groups)
    fig = _figure(1.5 + 0.55 * len(labels), left=0.27, top_in=0.5, bottom_in=0.6)
    ax = fig.subplots()
    left = [0.0] * len(labels)
    for i, bucket in enumerate(WALL_SPLIT):
        minutes = [statistics.mean(w.get(bucket, 0.0) for w in groups[k]) / 60 for k in labels]
        ax.barh(labels, minutes, left=left, label=bucket, color=_COLOURS[i % len(_COLOURS)])
        left = [a + b for a, b in zip(left, minutes)]
    ax.set_xlabel("minutes (mean per configuration)")
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    ax.legend(fontsize=8, ncols=len(WALL_SPLIT), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return _png(fig)


def _figure(height_in: float, left: float, top_in: float, bottom_in: float) -> Figure:
    """A figure 8 inches wide with fixed margins (room for two-line labels on the left): constrained layout
    would find the same margins, at a third of the rendering time."""
    fig = Figure(figsize=(8, height_in), dpi=_DPI)
    fig.subplots_adjust(left=left, right=0.96, top=1 - top_in / height_in, bottom=bottom_in / height_in)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
