"""The planner: for every cell, before anything is created, what it builds, what it costs and how long it takes.

- The stack is what `ernie check` builds from the cell's config, under mocks (a bad config or a guardrail
  finding refuses the cell); an inventory cell's hosts and price come from its file.
- $/hour is the inventory's price, with its source (catalog/prices.csv through catalog/pricing.py).
- Provisioning, setup, collection and teardown minutes are the medians of earlier runs on the same accelerator
  in the results index (else on the same cloud, else a stated default), the buckets of ernie/results/figures.py.
- Training minutes = samples (global_batch x max_steps; a run that reaches its target stops earlier) x FLOPs per
  sample / (peak FLOP/s per chip x chips x MFU), plus the start-up the index saw before training began.
  FLOPs per sample come from workloads/bert/flops.py for the BERT workloads, else from the plan; the peak from
  the same module's table (or the plan, for a device it lacks); MFU from earlier runs of that accelerator (else
  of its device in another size), else the plan's stated figure. Where FLOPs or the peak are unknown, earlier runs of the same workload and settings
  on that accelerator give the throughput; else the training time is unknown, and said so.
- Worst case: every host living to its TTL (or to the expected time, if longer).
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from ernie.compare.plan import PROJECT_DIR, Cell, ComparePlan
from ernie.errors import ErnieError
from ernie.results import ResultsIndex, RunSummary
from ernie.workload import ResolvedWorkload

BUCKETS = ("provisioning", "setup", "training", "collection", "teardown")
"""The wall-time buckets of a run (ernie/results/figures.py's WALL_SPLIT), in the order they happen."""
STARTUP = "startup"
"""The part of the training bucket before the first step: process start, data preparation, compilation."""
# Stated defaults (minutes) where the index has seen nothing alike: a TPU slice takes minutes to create and its
# XLA compile is slow; an EC2 host boots faster but pulls a ~40 GB Deep Learning Container image in setup;
# hosts made elsewhere are already up.
DEFAULT_MINUTES: dict[str, dict[str, float]] = {
    "gcp": {"provisioning": 6.0, "setup": 4.0, STARTUP: 3.0, "collection": 1.0, "teardown": 3.0},
    "aws": {"provisioning": 4.0, "setup": 10.0, STARTUP: 2.0, "collection": 1.0, "teardown": 2.0},
    "local": {"provisioning": 0.5, "setup": 0.5, STARTUP: 0.5, "collection": 0.2, "teardown": 0.0},
}
BERT_DIR = PROJECT_DIR / "workloads" / "bert"
BERT_WORKLOADS = ("bert-torch", "bert-tf")


@dataclass(frozen=True)
class Figure:
    """An estimated number and where it comes from."""

    value: float | None
    source: str


@dataclass(frozen=True)
class Hardware:
    """What a cell runs on, as `ernie check` (or the inventory file) describes it."""

    cloud: str
    accelerator: str
    chips: int
    hosts: int
    usd_per_hour: float
    price_source: str
    ttl_minutes: int | None


@dataclass(frozen=True)
class Estimate:
    """A cell's plan: hardware, minutes per bucket, MFU, dollars."""

    cell: str
    stack: str | None
    hardware: Hardware
    minutes: dict[str, Figure]
    mfu: Figure | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total_minutes(self) -> float | None:
        values = [self.minutes[b].value for b in BUCKETS]
        return None if any(v is None for v in values) else sum(values)  # type: ignore[arg-type]

    @property
    def usd(self) -> float | None:
        total = self.total_minutes
        return None if total is None else self.hardware.usd_per_hour * total / 60

    @property
    def worst_usd(self) -> float | None:
        """Every host alive to its TTL (or the expected time if longer); None: unbounded (no TTL, not free)."""
        if self.hardware.usd_per_hour == 0:
            return 0.0
        if self.hardware.ttl_minutes is None:
            return None
        return self.hardware.usd_per_hour * max(self.hardware.ttl_minutes, self.total_minutes or 0) / 60

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(total_minutes=self.total_minutes, usd=self.usd, worst_usd=self.worst_usd)
        return out


@dataclass(frozen=True)
class History:
    """Complete runs from the results index: what earlier runs teach the planner."""

    runs: list[RunSummary]

    @classmethod
    def of(cls, results_root: Path) -> History:
        """Every complete run indexed under `results_root` (indexing new run directories first)."""
        if not results_root.is_dir():
            return cls([])
        index = ResultsIndex(results_root)
        index.refresh(index.run_dirs())
        return cls([r for r in index.summaries() if r.succeeded])

    def _alike(self, hw: Hardware) -> Iterable[tuple[list[RunSummary], str]]:
        yield [r for r in self.runs if r.cloud == hw.cloud and r.accelerator == hw.accelerator], \
            f"{hw.accelerator} on {hw.cloud}"
        yield [r for r in self.runs if r.cloud == hw.cloud], f"{hw.cloud}"

    def overhead(self, bucket: str, hw: Hardware) -> Figure:
        """Minutes of a wall-time bucket (or the start-up inside training) from alike runs, else the default."""
        for runs, what in self._alike(hw):
            values = [v for r in runs if (v := _bucket_s(r, bucket)) is not None]
            if values:
                return Figure(statistics.median(values) / 60, f"median of {len(values)} earlier run(s) on {what}")
        default = DEFAULT_MINUTES.get(hw.cloud, DEFAULT_MINUTES["local"])[bucket]
        return Figure(default, f"stated default for {hw.cloud} (no earlier run in the index)")

    def mfu(self, hw: Hardware, workload: str, stated: float) -> Figure:
        """MFU of earlier runs of this accelerator (of this workload if there are any; else of the same device in
        another size, a v4-32 for a v4-8), else the stated one."""
        device = device_of(hw.accelerator)
        family = [r for r in self.runs if r.mfu and r.accelerator and device_of(r.accelerator) == device]
        alike = [r for r in family if r.accelerator == hw.accelerator]
        same = [r for r in alike if r.workload == workload]
        for runs, what in ((same, f"{workload} on {hw.accelerator}"), (alike, hw.accelerator),
                           (family, f"{device} in other sizes")):
            if runs:
                return Figure(statistics.median(r.mfu for r in runs),  # type: ignore[misc]
                              f"median of {len(runs)} earlier run(s) of {what}")
        return Figure(stated, "stated in the plan (mfu); no earlier run of this accelerator in the index")

    def throughput(self, hw: Hardware, resolved: ResolvedWorkload) -> Figure | None:
        """Samples/s of earlier runs of this workload, with these settings, on this accelerator."""
        values = [r.throughput for r in self.runs if r.accelerator == hw.accelerator and r.throughput
                  and r.throughput_unit == "samples" and r.workload == resolved.workload.name
                  and r.params == resolved.params]
        if not values:
            return None
        return Figure(statistics.median(values), f"median samples/s of {len(values)} earlier run(s) alike")


def _bucket_s(r: RunSummary, bucket: str) -> float | None:
    if bucket == STARTUP:
        training = r.wall_s.get("training")
        return None if training is None or r.time_to_train_s is None else max(0.0, training - r.time_to_train_s)
    return r.wall_s.get(bucket)


def hardware(cell: Cell, plan_name: str) -> Hardware:
    """What the cell runs on: `ernie check`'s inventory for its stack (ErnieError for a bad config or a
    guardrail finding), or its inventory file."""
    if cell.inventory is not None:
        from ernie.inventory import load_inventory_file

        inv = load_inventory_file(cell.inventory)
        return Hardware(cloud=inv.cloud, accelerator=inv.hosts[0].accelerator, chips=sum(h.chips for h in inv.hosts),
                        hosts=len(inv.hosts), usd_per_hour=inv.price_per_hour_usd,
                        price_source=inv.price_source or "the inventory file names none",
                        ttl_minutes=inv.ttl_minutes)
    from ernie import check  # the Pulumi program under mocks: loads Pulumi and the cloud SDKs

    stack = cell.stack(plan_name)
    assert stack is not None and cell.cloud is not None
    with tempfile.TemporaryDirectory(prefix="ernie-compare-") as tmp:
        file = cell.write_stack_file(Path(tmp) / f"Pulumi.{stack}.yaml")
        try:
            result = check.plan(stack, file)
        except ErnieError as exc:
            raise ErnieError(f"cell {cell.name}: {str(exc).removeprefix(file.name + ': ')}") from None
    if result.findings:
        f = result.findings[0]
        raise ErnieError(f"cell {cell.name}: guardrail {f.rule}: {f.message}"
                         + (f" (and {len(result.findings) - 1} more finding(s): `ernie check`)"
                            if len(result.findings) > 1 else ""))
    inv = result.inventory
    hosts = inv["hosts"]
    return Hardware(cloud=cell.cloud, accelerator=hosts[0]["accelerator"], chips=sum(h["chips"] for h in hosts),
                    hosts=len(hosts), usd_per_hour=float(inv["price_per_hour_usd"]),
                    price_source=inv["price_source"], ttl_minutes=inv["ttl_minutes"])


def estimate_cell(cell: Cell, plan: ComparePlan, hw: Hardware, resolved: ResolvedWorkload,
                  history: History) -> Estimate:
    """The cell's expected minutes per bucket and its MFU, each with its source."""
    minutes = {b: history.overhead(b, hw) for b in BUCKETS if b != "training"}
    notes: list[str] = []
    startup = history.overhead(STARTUP, hw)
    samples = _samples(resolved.params)
    flops = _flops_per_sample(cell, resolved)
    peak = _peak(cell, hw)
    mfu = history.mfu(hw, resolved.workload.name, plan.mfu) if peak.value else None
    training: Figure
    if samples.value is None:
        training = Figure(None, samples.source)
    elif flops.value and peak.value and mfu is not None and mfu.value:
        compute_s = samples.value * flops.value / (peak.value * hw.chips * mfu.value)
        training = Figure(compute_s / 60 + (startup.value or 0),
                          f"{samples.value:.0f} samples x {flops.value / 1e9:.4g} GFLOP ({flops.source}) / "
                          f"({peak.value / 1e12:.4g} TFLOP/s ({peak.source}) x {hw.chips} chip(s) x MFU "
                          f"{mfu.value:.1%}) + start-up {startup.value:.1f} min ({startup.source})")
    elif (rate := history.throughput(hw, resolved)) is not None:
        training = Figure(samples.value / rate.value / 60 + (startup.value or 0),  # type: ignore[operator]
                          f"{samples.value:.0f} samples at {rate.value:.4g}/s ({rate.source}) + start-up "
                          f"{startup.value:.1f} min")
    else:
        missing = flops.source if not flops.value else peak.source
        training = Figure(None, f"unknown: {missing}, and no earlier run alike in the index")
    minutes["training"] = training
    if hw.ttl_minutes is not None and training.value is not None:
        total = sum(minutes[b].value or 0 for b in BUCKETS)
        if total > hw.ttl_minutes:
            notes.append(f"expected {total:.0f} min exceeds the hosts' TTL of {hw.ttl_minutes} min: raise "
                         "ernie:ttlMinutes in the cell's stack overrides, or the hosts are deleted mid-run")
    return Estimate(cell=cell.name, stack=cell.stack(plan.name), hardware=hw,
                    minutes={b: minutes[b] for b in BUCKETS}, mfu=mfu, notes=notes)


def _samples(params: dict[str, Any]) -> Figure:
    batch, steps = params.get("global_batch"), params.get("max_steps")
    if isinstance(batch, int) and isinstance(steps, int) and batch > 0 and steps > 0:
        return Figure(float(batch * steps), f"global_batch {batch} x max_steps {steps}")
    return Figure(None, "unknown: the workload has no global_batch and max_steps parameters")


def _flops_per_sample(cell: Cell, resolved: ResolvedWorkload) -> Figure:
    if resolved.workload.name in BERT_WORKLOADS:
        p = resolved.params
        flops = _bert("flops")
        preset = _bert("presets").get_preset(str(p["preset"]))
        return Figure(flops.flops_per_sequence(preset, int(p["seq_len"]), int(p["max_predictions"])),
                      f"BERT {p['preset']} at seq {p['seq_len']}, workloads/bert/flops.py")
    if cell.flops_per_sample:
        return Figure(cell.flops_per_sample, "stated in the plan")
    return Figure(None, f"FLOPs per sample of {resolved.workload.name} not known (state flops_per_sample)")


def _peak(cell: Cell, hw: Hardware) -> Figure:
    if cell.peak_tflops:
        return Figure(cell.peak_tflops * 1e12, "stated in the plan")
    device = device_of(hw.accelerator)
    peak = _bert("flops").peak_flops_for(device)
    if peak is None:
        return Figure(None, f"no peak FLOP/s known for {device} (state peak_tflops)")
    return Figure(peak, f"{device} peak")


def device_of(accelerator: str) -> str:
    """The device an inventory's accelerator is made of: an EC2 type's GPU model ("A100" for p4d.24xlarge), a TPU
    slice's generation ("v4" for v4-32, "v5litepod" for v5litepod-8)."""
    from catalog.gpu_catalog import lookup_instance

    instance = lookup_instance(accelerator)
    return instance.gpu if instance is not None else accelerator.split("-", 1)[0]


_LOADING = threading.Lock()


@cache
def _bert(name: str) -> ModuleType:
    """A module of workloads/bert (flops.py, presets.py), loaded from its file under a private name. Workloads ship
    standalone, not installed; their directory on sys.path would let any bare import in this process find its
    data.py, results.py or common.py."""
    neighbours = {"presets": _bert("presets")} if name == "flops" else {}  # flops.py: `from presets import Preset`
    spec = importlib.util.spec_from_file_location(f"_ernie_workloads_bert_{name}", BERT_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    with _LOADING:
        sys.modules[spec.name] = module  # dataclasses look their module up there
        previous = {n: sys.modules.get(n) for n in neighbours}
        sys.modules.update(neighbours)  # only while the module runs its imports
        try:
            spec.loader.exec_module(module)
        finally:
            for n, before in previous.items():
                if before is None:
                    sys.modules.pop(n, None)
                else:
                    sys.modules[n] = before
    return module


@dataclass(frozen=True)
class PlanEstimate:
    """Every cell's estimate, or the reason it was refused, and the totals."""

    estimates: list[Estimate]
    refused: list[str]
    """One line per refused cell."""

    @property
    def usd(self) -> float | None:
        values = [e.usd for e in self.estimates]
        return None if any(v is None for v in values) else sum(values)  # type: ignore[misc]

    @property
    def worst_usd(self) -> float | None:
        values = [e.worst_usd for e in self.estimates]
        return None if any(v is None for v in values) else sum(values)  # type: ignore[misc]

    def wall_minutes(self, parallel: int) -> float | None:
        """Minutes until the last cell ends, the cells started in plan order on `parallel` slots."""
        slots = [0.0] * max(1, parallel)
        for e in self.estimates:
            if e.total_minutes is None:
                return None
            slots[slots.index(min(slots))] += e.total_minutes
        return max(slots)


def estimate_plan(plan: ComparePlan, history: History,
                  on_cell: Callable[[str], None] | None = None) -> PlanEstimate:
    """Check and estimate every cell; a refused cell is a line in `refused`, never an exception."""
    estimates, refused = [], []
    for cell in plan.cells:
        if on_cell is not None:
            on_cell(cell.name)
        try:
            resolved = cell.resolved()
            hw = hardware(cell, plan.name)
        except ErnieError as exc:
            refused.append(str(exc))
            continue
        estimates.append(estimate_cell(cell, plan, hw, resolved, history))
    return PlanEstimate(estimates, refused)


def budget_problems(planned: PlanEstimate, budget: float) -> list[str]:
    """Why the plan does not fit `budget` USD: its expected total, or its worst case, exceeds it."""
    problems = []
    usd, worst = planned.usd, planned.worst_usd
    if usd is not None and usd > budget:
        problems.append(f"the expected total {usd:.2f} USD exceeds --budget {budget:g} USD")
    if worst is None:
        unbounded = [e.cell for e in planned.estimates if e.worst_usd is None]
        problems.append(f"the worst case is unbounded: cell(s) {', '.join(unbounded)} bill by the hour with no TTL "
                        "(give the inventory a ttl_minutes)")
    elif worst > budget:
        problems.append(f"the worst case {worst:.2f} USD (every host living to its TTL) exceeds --budget "
                        f"{budget:g} USD: lower ernie:ttlMinutes in the cells' stack overrides, or drop cells")
    return problems
