"""Frameworks compared like for like: complete runs of one benchmark on the same accelerator, chips and model,
each pair's throughput ratio, and which of the settings that move throughput matched and which did not."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

from ernie.results.figures import RunSummary

#: What a comparison must hold equal, with how each is read from a run and shown.
SETTINGS: tuple[tuple[str, Any], ...] = (
    ("precision", lambda r: r.precision),
    ("threads", lambda r: r.threads),
    ("processes", lambda r: r.processes),
    ("micro-batch", lambda r: r.micro_batch),
    ("global batch", lambda r: r.global_batch_size),
    ("seq", lambda r: r.seq_len),
    ("compile", lambda r: r.compile),
    # The same prepared bytes have the same meta.json digest; the name is shown, the digest decides.
    ("data", lambda r: (r.data, r.data_digest) if r.data else None),
)


@dataclass(frozen=True)
class FrameworkComparison:
    """`second`'s throughput over `first`'s (frameworks in name order: tensorflow / pytorch), and the settings."""

    first: RunSummary
    second: RunSummary
    ratio: float
    matched: list[str]  # "precision fp32"
    differs: list[str]  # "compile (xla vs eager)": the second's value first
    unknown: list[str]  # settings one of the runs did not record

    @property
    def label(self) -> str:
        return f"{self.second.framework} / {self.first.framework}"

    @property
    def like_for_like(self) -> bool:
        return not self.differs and not self.unknown


def compare_frameworks(runs: list[RunSummary]) -> list[FrameworkComparison]:
    """Per (benchmark, accelerator, chips, preset), the latest complete run of each framework, paired."""
    latest: dict[tuple, dict[str, RunSummary]] = {}
    for r in runs:
        if r.succeeded and r.framework and r.throughput and r.benchmark:
            latest.setdefault((r.benchmark, r.throughput_unit, r.accelerator, r.chips, r.preset), {})[r.framework] = r
    out = []
    for by_framework in latest.values():
        for a, b in combinations(sorted(by_framework), 2):
            out.append(_pair(by_framework[a], by_framework[b]))
    return out


def _pair(first: RunSummary, second: RunSummary) -> FrameworkComparison:
    matched, differs, unknown = [], [], []
    for name, read in SETTINGS:
        x, y = read(first), read(second)
        if x is None or y is None:
            unknown.append(name)
        elif x == y:
            matched.append(f"{name} {_show(x)}")
        else:
            differs.append(f"{name} ({_show(y)} vs {_show(x)})")
    return FrameworkComparison(first, second, second.throughput / first.throughput, matched, differs, unknown)


def _show(value: Any) -> str:
    if isinstance(value, tuple):  # data: (name, digest)
        name, digest = value
        return f"{name} [{digest[:8]}]" if digest else name
    return str(value)


def sentence(c: FrameworkComparison) -> str:
    """The comparison in one sentence, for the report's answers and the terminal."""
    r = c.first
    chips = f"{r.chips}x " if r.chips else ""
    unit = r.throughput_unit or "samples"
    said = [f"{c.label} = {c.ratio:.2f}x {unit}/s ({c.second.throughput:,.1f} vs {c.first.throughput:,.1f}) on "
            f"{chips}{r.accelerator}, {r.preset or 'same'} model"]
    if c.matched:
        said.append("same " + ", ".join(c.matched))
    if c.differs:
        said.append("differs: " + ", ".join(c.differs))
    if c.unknown:
        said.append("not recorded by both: " + ", ".join(c.unknown))
    return "; ".join(said) + "."
