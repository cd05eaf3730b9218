"""Published MLPerf Training results (ernie/data/mlperf_results.csv, each row with its source) and how a run of
ours compares with them: never without saying how different the scale, the accelerator and the model are."""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from ernie.results.figures import RunSummary


@dataclass(frozen=True)
class MlperfRow:
    """One published time-to-train: MLPerf's minutes from run_start to run_stop (quality target reached)."""

    round: str
    system: str
    accelerator: str
    chips: int
    benchmark: str
    minutes: float
    quality_metric: str
    quality_target: float
    reference_model: str
    source: str


@dataclass(frozen=True)
class Comparison:
    """One of our runs beside one MLPerf row."""

    run: RunSummary
    row: MlperfRow
    scale: str  # what differs, in words: chips, accelerator, model


@cache
def mlperf_rows() -> tuple[MlperfRow, ...]:
    """The shipped MLPerf rows."""
    text = resources.files("ernie").joinpath("data/mlperf_results.csv").read_text(encoding="utf-8")
    return tuple(
        MlperfRow(
            round=r["round"], system=r["system"], accelerator=r["accelerator"], chips=int(r["chips"]),
            benchmark=r["benchmark"], minutes=float(r["minutes"]), quality_metric=r["quality_metric"],
            quality_target=float(r["quality_target"]), reference_model=r["reference_model"], source=r["source"],
        )
        for r in csv.DictReader(text.splitlines())
    )


def compare(runs: list[RunSummary], rows: tuple[MlperfRow, ...] | None = None) -> list[Comparison]:
    """Each configuration's latest complete run against every MLPerf row of its benchmark.

    A configuration is (workload, framework, accelerator, chips, preset); incomplete and failed runs are never
    compared, since a comparison presents the run as a result.
    """
    rows = mlperf_rows() if rows is None else rows
    latest: dict[tuple, RunSummary] = {}
    for r in runs:
        if r.succeeded and r.benchmark:
            latest[(r.workload, r.framework, r.accelerator, r.chips, r.preset)] = r
    return [
        Comparison(run, row, scale_label(run, row))
        for run in latest.values()
        for row in rows
        if row.benchmark == run.benchmark
    ]


def closest(comparisons: list[Comparison]) -> list[Comparison]:
    """Per run, the MLPerf row nearest its scale: the same accelerator family first, then the chip ratio."""
    best: dict[str, Comparison] = {}
    for c in comparisons:
        held = best.get(c.run.run_id)
        if held is None or _distance(c) < _distance(held):
            best[c.run.run_id] = c
    return list(best.values())


def _distance(c: Comparison) -> tuple[bool, float]:
    other = accelerator_family(c.run.accelerator) != accelerator_family(c.row.accelerator)
    return other, abs(math.log(c.row.chips / (c.run.chips or 1)))


def scale_label(run: RunSummary, row: MlperfRow) -> str:
    """For example '1x cpu vs 16x TPU v3 (v3-32): 16x the chips; other accelerator; tiny model (hidden 128,
    2 layers, seq 128) vs BERT-large, seq 512'."""
    chips = run.chips or 1
    ours = f"{chips}x {run.accelerator or 'unknown accelerator'}"
    theirs = f"{row.chips}x {row.accelerator}"
    notes = []
    if row.chips != chips:
        ratio = row.chips / chips
        notes.append(f"{_times(ratio)} the chips" if ratio >= 1 else f"{_times(1 / ratio)} fewer chips")
    else:
        notes.append("same chip count")
    if accelerator_family(run.accelerator) != accelerator_family(row.accelerator):
        notes.append("other accelerator")
    if run.eval_target is not None and float(run.eval_target) != row.quality_target:
        notes.append(f"target {run.eval_target} vs {row.quality_target}")
    m = run.model
    hidden = _first(m.get("hidden"), m.get("encoder_embed_dim"))  # BERT's names, else fairseq's
    layers = _first(m.get("layers"), m.get("encoder_layers"))
    shape = ", ".join(f"{k} {v}" for k, v in (("hidden", hidden), ("layers", layers), ("seq", run.seq_len)) if v)
    notes.append(f"{run.preset or 'our'} model ({shape}) vs {row.reference_model}" if shape
                 else f"{run.preset or 'our'} model vs {row.reference_model}")
    return f"{ours} vs {theirs}: " + "; ".join(notes)


def _first(*values: object) -> object:
    return next((v for v in values if v is not None), None)


def _times(ratio: float) -> str:
    return f"{ratio:,.1f}".removesuffix(".0") + "x"


def accelerator_family(name: str | None) -> str:
    """'v3-32' and 'TPU v3' -> 'tpu v3'; 'v5litepod-16' -> 'tpu v5e'; 'NVIDIA A100-SXM4-40GB' and 'A100' -> 'a100'; others lower-cased."""
    text = (name or "").lower()
    tpu = re.search(r"\bv(\d+[a-z]*?)(litepod)?-\d+\b|tpu\s*v(\d+[a-z]*)", text)
    if tpu:  # a v5litepod slice is a TPU v5e
        return f"tpu v{tpu.group(1) or tpu.group(3)}{'e' if tpu.group(2) else ''}"
    gpu = re.search(r"\b([ahlvtb]\d{2,3}[a-z]?)\b", text)
    return gpu.group(1) if gpu else text
