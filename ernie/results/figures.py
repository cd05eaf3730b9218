"""Derived figures of one run, computed from its collected files every time (never stored by a workload).

- time-to-train: MLPerf's method, worker 0's `run_stop.time_ms - run_start.time_ms`.
- time-to-target: from `run_start` to the first `eval_accuracy` at or above the target (result.json's
  `eval.target`); when the log has no evaluation, the workload's own `time_to_target_s`.
- throughput: result.json's `words_per_s` where a workload counts words (translation), else `samples_per_s`,
  timed by the workload with its warm-up excluded.
- MFU: throughput x FLOPs per sample / (peak FLOP/s per device x devices), only where the peak is known.
- wall time from timeline.json: provisioning = provision + wait_ssh, setup = push + setup, training = run,
  collection = collect, teardown = destroy; the stack's lifetime runs from the first step's start to the
  last step's end. Time lost to preemptions = the `preempted` steps `ernie run --resume` records (from the
  last checkpoint to the restart); it overlaps the split, which counts what each attempt did.
- price: the inventory's for a cloud run; a local run is priced at a declared equivalent instance or not at all
  (pricing.py), and `price_basis` says which.
- settings: what a framework comparison must hold equal (threads, processes, micro-batch, compile, data), from
  result.json's `settings` block; precision and global batch from its top level.
- MLPerf conformance: result.json's `mlperf` block (BERT writes it: {"division", "differences", "ruleset"});
  a run without one (translation, older BERT) was never checked, which the report says.
- cost = the price per hour x that lifetime; dollars to target = that cost when the target was
  reached (what was paid, provisioning and teardown included, to get the model); dollars per million samples
  = price per hour / samples per hour at the measured throughput (the steady-state rate).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ernie.results.pricing import hourly_price
from ernie.results.rundir import MllogEvent, RunFiles
from ernie.rundir import COMPLETE, FAILED

#: The report's wall-time buckets and the timeline steps each one sums.
WALL_SPLIT: dict[str, tuple[str, ...]] = {
    "provisioning": ("provision", "wait_ssh"),
    "setup": ("push", "setup"),
    "training": ("run",),
    "collection": ("collect",),
    "teardown": ("destroy",),
}

#: The timeline step `ernie run --resume` records for each preemption.
LOST_STEP = "preempted"

#: MLPerf benchmark of a workload, by the quality metric it evaluates (when its log names no benchmark).
BENCHMARK_BY_METRIC = {"masked_lm_accuracy": "bert", "bleu": "transformer"}


@dataclass
class RunSummary:
    """One run as the report shows it: identity, status, derived figures and provenance."""

    run_id: str
    status: str  # complete | failed | incomplete
    problems: list[str] = field(default_factory=list)
    workload: str | None = None
    benchmark: str | None = None
    framework: str | None = None
    created: str | None = None
    cloud: str | None = None
    stack: str | None = None
    runner: str | None = None
    accelerator: str | None = None
    device_name: str | None = None
    chips: int | None = None
    hosts: int | None = None
    preset: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    global_batch_size: int | None = None
    seq_len: int | None = None
    precision: str | None = None
    processes: int | None = None
    threads: int | None = None  # intra-op (OpenMP for PyTorch, TensorFlow's intra-op pool)
    inter_op_threads: int | None = None
    micro_batch: int | None = None
    compile: str | None = None  # eager | torch.compile | xla
    data: str | None = None  # the prepared data's directory name
    data_digest: str | None = None  # sha256 of its meta.json: equal digests, the same data
    host_cpus: int | None = None
    steps: int | None = None
    throughput: float | None = None
    throughput_unit: str | None = None  # "samples" or "words"
    tokens_per_s: float | None = None
    step_time_ms_p50: float | None = None
    step_time_ms_p90: float | None = None
    mfu: float | None = None
    eval_metric: str | None = None
    eval_value: float | None = None
    eval_target: float | None = None
    target_reached: bool = False
    time_to_train_s: float | None = None
    run_stop_status: str | None = None
    time_to_target_s: float | None = None
    wall_s: dict[str, float] = field(default_factory=dict)
    lifetime_s: float | None = None
    lost_s: float | None = None  # lost to preemptions: from the last checkpoint to the restart, summed
    price_per_hour_usd: float | None = None
    price_source: str | None = None
    price_basis: str | None = None  # bill | equivalent | not priced (pricing.py)
    cost_usd: float | None = None
    usd_per_million: float | None = None  # per million of `throughput_unit`
    usd_to_target: float | None = None
    mlperf_division: str | None = None  # closed | open as the run judged itself; None: not checked
    mlperf_differences: list[str] = field(default_factory=list)  # what differs from MLPerf's closed division
    versions: dict[str, Any] = field(default_factory=dict)
    image: str | None = None
    runtime: str | None = None
    command: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    config_hash: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "complete"

    def to_json(self) -> str:
        return json.dumps(vars(self), sort_keys=True)  # every field is a plain JSON value: no asdict deep copy

    @classmethod
    def from_json(cls, text: str) -> RunSummary:
        return cls(**json.loads(text))


def summarize(run: RunFiles) -> RunSummary:
    """Every figure the report shows for `run`, from its files alone."""
    result = run.result or {}
    inventory = run.inventory
    manifest = run.manifest
    s = RunSummary(run_id=run.run_id, status="incomplete", problems=list(run.problems))

    s.workload = manifest.get("workload") or result.get("workload")
    s.created = manifest.get("created")
    s.params = _mapping(manifest.get("params"))
    s.cloud, s.stack, s.runner = inventory.get("cloud"), inventory.get("stack"), inventory.get("runner")
    inv_hosts = [h for h in inventory.get("hosts") or [] if isinstance(h, dict)]
    s.accelerator = _first(inv_hosts[0].get("accelerator") if inv_hosts else None, result.get("accelerator"))
    s.chips = _first(result.get("chips"), sum(int(h.get("chips") or 0) for h in inv_hosts) or None)
    s.hosts = _first(result.get("hosts"), len(inv_hosts) or None)
    s.framework = result.get("framework")
    s.device_name = result.get("device_name")
    s.model = _mapping(result.get("model"))
    s.preset = _first(s.model.get("preset"), s.params.get("preset"), s.params.get("recipe"))
    for key in ("global_batch_size", "seq_len", "precision", "steps", "tokens_per_s",
                "step_time_ms_p50", "step_time_ms_p90", "command"):
        setattr(s, key, result.get(key))

    _settings(s, result)
    _throughput(s, result)
    _evaluation(s, result, run.events)
    _conformance(s, result)
    _wall(s, run.steps)
    _cost(s, inventory)
    _provenance(s, result, inventory)

    s.status = _status(run, s)
    return s


def _settings(s: RunSummary, result: dict[str, Any]) -> None:
    """result.json's `settings` (a host wrote it: each value is taken only when it has the expected type)."""
    settings = _mapping(result.get("settings"))
    threads, data = _mapping(settings.get("threads")), _mapping(settings.get("data"))
    s.processes, s.micro_batch, s.host_cpus = (_int(settings.get(k)) for k in ("processes", "micro_batch", "host_cpus"))
    s.threads, s.inter_op_threads = _int(threads.get("intra_op")), _int(threads.get("inter_op"))
    s.compile, s.data, s.data_digest = (_str(v) for v in (settings.get("compile"), data.get("name"),
                                                          data.get("meta_sha256")))


def _throughput(s: RunSummary, result: dict[str, Any]) -> None:
    # A workload that counts words (translation) is measured in words, as MLPerf's Transformer is; its sentence
    # pairs per second would otherwise share an axis with BERT's sequences.
    if result.get("words_per_s") is not None:
        s.throughput, s.throughput_unit = float(result["words_per_s"]), "words"
    elif result.get("samples_per_s") is not None:
        s.throughput, s.throughput_unit = float(result["samples_per_s"]), "samples"
    flops, peak = result.get("flops_per_sample"), result.get("peak_flops_per_device")
    if s.throughput_unit == "samples" and flops and peak and s.chips:
        s.mfu = s.throughput * float(flops) / (float(peak) * s.chips)


def _evaluation(s: RunSummary, result: dict[str, Any], events: list[MllogEvent]) -> None:
    ev = _mapping(result.get("eval"))
    s.eval_metric, s.eval_target = ev.get("metric"), ev.get("target")
    by_key: dict[str, list[MllogEvent]] = {}
    for e in events:
        by_key.setdefault(e.key, []).append(e)
    bench = by_key.get("submission_benchmark")
    s.benchmark = str(bench[0].value) if bench else BENCHMARK_BY_METRIC.get(str(s.eval_metric))

    start, stop = by_key.get("run_start"), by_key.get("run_stop")
    if start and stop:
        s.time_to_train_s = (stop[-1].time_ms - start[0].time_ms) / 1000.0
        s.run_stop_status = stop[-1].metadata.get("status")
    elif events:
        s.problems.append("worker 0's MLPerf log lacks " + " and ".join(
            k for k, v in (("run_start", start), ("run_stop", stop)) if not v) + ": no time-to-train")

    evals = [e for e in by_key.get("eval_accuracy", []) if isinstance(e.value, (int, float))]
    if evals:
        s.eval_value = float(evals[-1].value)
        if s.eval_target is not None and start:
            hit = next((e for e in evals if e.value >= float(s.eval_target)), None)
            if hit is not None:
                s.target_reached = True
                s.time_to_target_s = (hit.time_ms - start[0].time_ms) / 1000.0
    elif ev:
        s.eval_value = ev.get("value")
        s.target_reached = bool(ev.get("reached"))
        s.time_to_target_s = result.get("time_to_target_s") if s.target_reached else None


def _conformance(s: RunSummary, result: dict[str, Any]) -> None:
    """result.json's `mlperf` block, each value taken only when it has the expected type (a host wrote it)."""
    block = _mapping(result.get("mlperf"))
    division = block.get("division")
    s.mlperf_division = division if division in ("closed", "open") else None
    differences = block.get("differences")
    s.mlperf_differences = [d for d in differences if isinstance(d, str)] if isinstance(differences, list) else []


def _wall(s: RunSummary, steps: list[dict[str, Any]] | None) -> None:
    if steps is None:
        return  # already a problem: timeline.json missing or unreadable
    timed = [st for st in steps if isinstance(st.get("start"), (int, float)) and isinstance(st.get("end"), (int, float))]
    if not timed:
        s.problems.append("timeline.json has no timed steps: no wall-time split and no cost")
        return
    durations: dict[str, float] = {}
    for st in timed:
        name = str(st.get("name"))
        durations[name] = durations.get(name, 0.0) + float(st["end"]) - float(st["start"])
    s.wall_s = {bucket: sum(durations.get(n, 0.0) for n in names) for bucket, names in WALL_SPLIT.items()}
    s.lifetime_s = max(float(st["end"]) for st in timed) - min(float(st["start"]) for st in timed)
    s.lost_s = durations.get(LOST_STEP)
    failed = [str(st.get("name")) for st in timed if st.get("ok") is False]
    if failed:
        s.problems.append(f"timeline steps failed: {', '.join(failed)}")


def _cost(s: RunSummary, inventory: dict[str, Any]) -> None:
    price = hourly_price(inventory, s.host_cpus)
    s.price_source, s.price_basis = price.source, price.basis
    if price.usd is None:
        return
    s.price_per_hour_usd = price.usd
    if s.lifetime_s is not None:
        s.cost_usd = s.price_per_hour_usd * s.lifetime_s / 3600.0
        if s.target_reached:
            s.usd_to_target = s.cost_usd
    if s.throughput:
        s.usd_per_million = s.price_per_hour_usd / (s.throughput * 3600.0) * 1e6


def _provenance(s: RunSummary, result: dict[str, Any], inventory: dict[str, Any]) -> None:
    s.versions = _mapping(result.get("versions"))
    s.image = _first(s.versions.get("image"), inventory.get("image"))
    s.runtime = s.versions.get("runtime")
    # The workload and its resolved parameters: the same configuration hashes the same on every run, where
    # the command a worker ran also holds that run's own output directory.
    config = {"workload": s.workload, "params": s.params}
    s.config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def _status(run: RunFiles, s: RunSummary) -> str:
    """`complete` only when every worker was collected and verified, and the result and timings were read."""
    if any(w.state == FAILED for w in run.workers) or any(st.get("ok") is False for st in run.steps or ()):
        return "failed"
    complete = (
        bool(run.workers)
        and all(w.state == COMPLETE for w in run.workers)  # the manifest's worker state
        and run.result is not None
        and s.time_to_train_s is not None
        and s.lifetime_s is not None
    )
    return "complete" if complete and not s.problems else "incomplete"


def _mapping(value: Any) -> dict[str, Any]:
    """A JSON object's field that should be an object; anything else reads as empty."""
    return dict(value) if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)
