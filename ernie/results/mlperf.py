"""Published MLPerf Training results (ernie/data/mlperf_results.csv, each row with its source) and how a run of
ours compares with them: never without saying how different the scale, the accelerator and the model are."""

from __future__ import annotations

import csv
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

    @property
    def ours(self) -> str:
        """Our result in the MLPerf row's terms: minutes to the target, or how far from it we stopped."""
        r = self.run
        if r.target_reached and r.time_to_target_s is not None:
            return f"{r.time_to_target_s / 60:.2f} min to {r.eval_metric} {r.eval_target}"
        ttt = f" after {r.time_to_train_s / 60:.2f} min" if r.time_to_train_s is not None else ""
        if r.eval_value is None or r.eval_target is None:
            return f"no evaluation against a target{ttt}"
        return f"target not reached ({r.eval_metric} {r.eval_value:.3f} of {r.eval_target}){ttt}"


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
    shape = ", ".join(
        f"{k} {v}" for k, v in (("hidden", m.get("hidden")), ("layers", m.get("layers")), ("seq", run.seq_len)) if v
    )
    notes.append(f"{run.preset or 'our'} model ({shape}) vs {row.reference_model}" if shape
                 else f"{run.preset or 'our'} model vs {row.reference_model}")
    return f"{ours} vs {theirs}: " + "; ".join(notes)


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
