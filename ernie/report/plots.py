"""The report's plots (matplotlib, rendered to PNG bytes): throughput, cost per million, time and cost to
target, and the wall-time split. Runs of one configuration are drawn as their median, so a thousand runs
make the same few bars; only complete runs are drawn as results."""

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


def render_plots(runs: list[RunSummary]) -> list[Plot]:
    """Every plot of the report, from the complete runs among `runs`."""
    done = [r for r in runs if r.succeeded]
    return [
        Plot("throughput", "Throughput per accelerator and framework", _throughput(done)),
        Plot("cost", "Cost per million samples (or words)", _cost(done)),
        Plot("target", "Time and cost to the quality target", _target(done)),
        Plot("wall", "Where the wall time went", _wall(done)),
    ]


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
    return _bars(_by_config(runs, lambda r: r.usd_per_million), "$ per million {unit}",
                 "no complete run has both a price and a throughput")


def _bars(data: dict[str, dict[str, float]], ylabel: str, empty: str) -> bytes:
    """One horizontal bar panel per unit (samples, words): units are never mixed on one axis."""
    if not data:
        return _message(empty)
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
        ax.set_xlim(0, max(values) * 1.18 or 1.0)  # room for the labels; an all-zero panel still has an axis
        ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


def _target(runs: list[RunSummary]) -> bytes:
    hits = [r for r in runs if r.target_reached and r.time_to_target_s is not None and r.usd_to_target is not None]
    if not hits:
        return _message("no complete run reached its quality target")
    fig = _figure(4.5, left=0.1, top_in=0.2, bottom_in=0.6)
    ax = fig.subplots()
    points: dict[str, list[RunSummary]] = defaultdict(list)
    for r in hits:
        points[config_label(r).replace("\n", ", ")].append(r)
    for i, (label, rs) in enumerate(sorted(points.items())):
        ax.scatter([r.time_to_target_s / 60 for r in rs], [r.usd_to_target for r in rs],
                   label=label, color=_COLOURS[i % len(_COLOURS)], s=40)
    ax.set_xlabel("time to target (minutes, MLPerf run_start to the first eval at target)")
    ax.set_ylabel("$ to target (whole stack lifetime)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _wall(runs: list[RunSummary]) -> bytes:
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for r in runs:
        if r.wall_s:
            groups[config_label(r)].append(r.wall_s)
    if not groups:
        return _message("no complete run has a timeline")
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


def _message(text: str) -> bytes:
    """A small image that says why a plot is empty, so the page never shows a broken image."""
    fig = Figure(figsize=(8, 1.2), dpi=_DPI)
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="#555555")
    return _png(fig)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
