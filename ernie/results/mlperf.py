"""Published MLPerf Training results (ernie/data/mlperf_results.csv, each row with its source and its status) and how
runs of ours compare with them: scored as the rules score them, and never shown as like for like unless they are.

The rules (mlcommons/training_policies training_rules.adoc, "Benchmark Results"): a benchmark result is the mean of
a benchmark's number of runs after dropping the fastest and the slowest (the olympic mean); one run that does not
converge may count as the slowest, more than one makes the result invalid. NLP (BERT) and translation
(Transformer) take 10 runs.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from dataclasses import dataclass
from functools import cache
from importlib import resources

from ernie.errors import ErnieError
from ernie.results.figures import RunSummary

#: Runs one benchmark result takes, per benchmark (training_rules.adoc, "Benchmark Results").
RUNS_REQUIRED = {"bert": 10, "transformer": 10}

#: A row's status: MLPerf's availability categories, or "not established" where its source does not show it.
STATUSES = ("available cloud", "available on-premise", "preview", "research", "not established")


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
    quality_target: float  # the round's target
    reference_model: str
    source: str
    status: str  # one of STATUSES
    status_source: str  # where the status was read


@dataclass(frozen=True)
class Score:
    """Repeated runs of one configuration scored as the rules score them.

    `mean_s` is the olympic mean (fastest and slowest dropped) from 3 runs up, the plain mean below; it is
    computed from fewer runs than the rules need too, and `label` then says "N of 10 runs". None where no
    score exists: more than one run missed the target, or none reached it."""

    runs: int
    required: int | None  # None: the rules' count for this benchmark is not known here
    converged: int
    mean_s: float | None
    spread_s: tuple[float, float] | None  # fastest and slowest run that reached the target
    stdev_s: float | None  # of the runs that reached the target, from 2 up
    invalid: str | None  # why there is no score

    @property
    def complete(self) -> bool:
        """As many runs as the rules need."""
        return self.required is not None and self.runs >= self.required

    @property
    def label(self) -> str:
        """For example 'olympic mean of 10 runs: 12.40 min (11.90 min to 13.10 min, sd 21.0 s)', or
        '1 of 10 runs, mean: 15.00 min'."""
        how = "olympic mean" if self.runs >= 3 else "mean"
        count = (f"{self.runs} of {self.required} runs, {how}" if not self.complete and self.required
                 else f"{how} of {self.runs} runs")
        if self.mean_s is None:
            return f"{count}: no score ({self.invalid})"
        spread = ""
        if self.spread_s and self.spread_s[0] != self.spread_s[1]:
            sd = f", sd {_minutes(self.stdev_s)}" if self.stdev_s is not None else ""
            spread = f" ({_minutes(self.spread_s[0])} to {_minutes(self.spread_s[1])}{sd})"
        return f"{count}: {_minutes(self.mean_s)}{spread}"


def olympic_score(times_s: list[float | None], required: int | None) -> Score:
    """Score run times (None: the run did not reach its target) as the rules do; fewer than `required` runs are
    scored all the same, and the Score says how many there were."""
    converged = sorted(t for t in times_s if t is not None)
    failed = len(times_s) - len(converged)
    spread = (converged[0], converged[-1]) if converged else None
    stdev = statistics.stdev(converged) if len(converged) >= 2 else None
    invalid = None
    if failed > 1:
        invalid = f"{failed} runs did not reach the target, the rules allow 1"
    elif not converged:
        invalid = "no run reached the target"
    elif failed and len(times_s) < 3:
        invalid = "a run did not reach the target, and too few runs to drop it as the slowest"
    if invalid:
        return Score(len(times_s), required, len(converged), None, spread, stdev, invalid)
    times = converged + [math.inf] * failed
    kept = times[1:-1] if len(times) >= 3 else times
    return Score(len(times_s), required, len(converged), sum(kept) / len(kept), spread, stdev, None)


@dataclass(frozen=True)
class Comparison:
    """One configuration's runs beside one MLPerf row."""

    run: RunSummary  # the configuration's latest complete run
    row: MlperfRow
    scale: str  # what differs in scale, in words: chips, accelerator, model
    score: Score  # every complete run of the configuration
    differences: tuple[str, ...]  # why it is not like for like: empty only when it is

    @property
    def like_for_like(self) -> bool:
        return not self.differences

    @property
    def beyond_conformance(self) -> tuple[str, ...]:
        """The differences the run's own conformance does not name: the target and the number of runs."""
        own = run_conformance(self.run)
        return tuple(d for d in self.differences if d not in own)


def run_conformance(run: RunSummary) -> tuple[str, ...]:
    """What keeps the run itself out of MLPerf's closed division, as result.json's `mlperf` block says; empty
    when it is conformant (closed, nothing differs). A run without the block was never checked."""
    if run.mlperf_division is None:
        return ("not checked: result.json has no MLPerf conformance block",)
    if run.mlperf_division == "closed" and not run.mlperf_differences:
        return ()
    return tuple(run.mlperf_differences) or (f"division {run.mlperf_division}, with no difference named",)


def conformance_label(run: RunSummary) -> str:
    """'conformant (closed division)', or 'not conformant: ...' with what differs."""
    why = run_conformance(run)
    return "conformant (closed division)" if not why else "not conformant: " + "; ".join(why)


def difference_kinds(differences: tuple[str, ...]) -> str:
    """The kinds of difference, short, for a narrow terminal: 'data, eval set, checkpoint, runs'."""
    return ", ".join(dict.fromkeys(d.split(":")[0] for d in differences))


@cache
def mlperf_rows() -> tuple[MlperfRow, ...]:
    """The shipped MLPerf rows."""
    text = resources.files("ernie").joinpath("data/mlperf_results.csv").read_text(encoding="utf-8")
    return parse_rows(text)


def parse_rows(text: str) -> tuple[MlperfRow, ...]:
    """MLPerf rows from CSV text; a row without its source or with a status outside STATUSES is refused."""
    rows = []
    for n, r in enumerate(csv.DictReader(text.splitlines()), start=2):
        if (r.get("status") or "") not in STATUSES:
            raise ErnieError(f"mlperf_results.csv line {n}: status {r.get('status')!r} is not one of "
                             f"{', '.join(STATUSES)}; write the status its system file gives, or 'not established'")
        for key in ("source", "status_source"):
            if not (r.get(key) or "").strip():
                raise ErnieError(f"mlperf_results.csv line {n}: {key} is empty; name where the row was read")
        rows.append(MlperfRow(
            round=r["round"], system=r["system"], accelerator=r["accelerator"], chips=int(r["chips"]),
            benchmark=r["benchmark"], minutes=float(r["minutes"]), quality_metric=r["quality_metric"],
            quality_target=float(r["quality_target"]), reference_model=r["reference_model"], source=r["source"],
            status=r["status"], status_source=r["status_source"],
        ))
    return tuple(rows)


def compare(runs: list[RunSummary], rows: tuple[MlperfRow, ...] | None = None) -> list[Comparison]:
    """Each configuration's complete runs, scored, against every MLPerf row of its benchmark.

    A configuration is (workload, framework, cloud, accelerator, chips, config hash: the workload and its
    parameters, and its conformance: runs that differ from MLPerf in different ways are never scored together);
    incomplete and failed runs are never compared, since a comparison presents them as a result.
    """
    rows = mlperf_rows() if rows is None else rows
    groups: dict[tuple, list[RunSummary]] = {}
    for r in runs:
        if r.succeeded and r.benchmark:
            key = (r.workload, r.framework, r.cloud, r.accelerator, r.chips, r.config_hash, run_conformance(r))
            groups.setdefault(key, []).append(r)
    out = []
    for same in groups.values():
        latest = same[-1]
        score = olympic_score([r.time_to_target_s if r.target_reached else None for r in same],
                              RUNS_REQUIRED.get(latest.benchmark or ""))
        for row in rows:
            if row.benchmark == latest.benchmark:
                out.append(Comparison(latest, row, scale_label(latest, row), score, differences(latest, row, score)))
    return out


def differences(run: RunSummary, row: MlperfRow, score: Score) -> tuple[str, ...]:
    """Why the runs are not like for like with the row: the run's own conformance, the target against the
    round's, and the number of runs against the rules'. Scale (chips, accelerator) is not among them: it is what
    a comparison of systems compares."""
    out = list(run_conformance(run))
    if run.eval_target is None:
        out.append(f"target: none evaluated, the round's is {row.quality_metric} {row.quality_target}")
    elif float(run.eval_target) != row.quality_target:
        out.append(f"target: {run.eval_target} vs the round's {row.quality_target}")
    if not score.complete:
        out.append(f"runs: {score.runs} of {score.required}" if score.required
                   else f"runs: {score.runs}, the rules' count for {row.benchmark} unknown here")
    return tuple(out)


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
    m = run.model
    hidden = _first(m.get("hidden"), m.get("encoder_embed_dim"))  # BERT's names, else fairseq's
    layers = _first(m.get("layers"), m.get("encoder_layers"))
    shape = ", ".join(f"{k} {v}" for k, v in (("hidden", hidden), ("layers", layers), ("seq", run.seq_len)) if v)
    notes.append(f"{run.preset or 'our'} model ({shape}) vs {row.reference_model}" if shape
                 else f"{run.preset or 'our'} model vs {row.reference_model}")
    return f"{ours} vs {theirs}: " + "; ".join(notes)


def _first(*values: object) -> object:
    return next((v for v in values if v is not None), None)


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 60:.2f} min" if seconds >= 60 else f"{seconds:.1f} s"


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
