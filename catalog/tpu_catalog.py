"""What Google Cloud offers as TPU VMs: generations, slice sizes, zones and runtime images.

The one place these facts live; `config.py` validates against it and `pricing.py` prices from it.
Source: cloud.google.com/tpu/docs/regions-zones, .../runtimes and .../<generation> pages, as collected
in the project's REFERENCE.md (2025). Re-check against `gcloud compute tpus tpu-vm versions list --zone Z`
(or `gcp.tpu.get_v2_runtime_versions`) before relying on a new zone or runtime.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement


@dataclass(frozen=True)
class TpuGeneration:
    """One TPU generation and how its accelerator types are spelled and laid out."""

    name: str
    """Short name used in messages and the price catalog: "v4", "v5e"."""
    prefix: str
    """Accelerator type prefix: "v4" in "v4-32", "v5litepod" in "v5litepod-16"."""
    sizes: tuple[int, ...]
    """Accepted suffixes: "v4-32" is 32."""
    suffix_is_cores: bool
    """v2-v4 and v5p count TensorCores (2 per chip) in the suffix; v5e and v6e count chips."""
    chips_per_host: int
    """Chips on one worker VM of a multi-host slice."""
    max_single_host_chips: int
    """The largest slice that is still one VM."""
    zones: tuple[str, ...]
    """Zones offering single-host slices."""
    pod_zones: tuple[str, ...]
    """Zones offering multi-host slices."""
    base_image: str
    """The PyTorch/JAX runtime image for this generation."""
    spot: bool
    """Whether Spot VMs are offered (v2 and v3 predate them: preemptible only)."""


def _powers_of_two(low: int, high: int) -> tuple[int, ...]:
    return tuple(2**i for i in range(low.bit_length() - 1, high.bit_length()))


GENERATIONS: tuple[TpuGeneration, ...] = (
    # v2 pod zones are not in the reference tables, so only v2-8 is offered.
    TpuGeneration("v2", "v2", (8,), True, 4, 4, ("us-central1-b", "us-central1-c", "europe-west4-a"),
                  (), "tpu-ubuntu2204-base", spot=False),
    TpuGeneration("v3", "v3", _powers_of_two(8, 2048), True, 4, 4,
                  ("us-central1-a", "us-central1-b", "europe-west4-a"), ("europe-west4-a",),
                  "tpu-ubuntu2204-base", spot=False),
    TpuGeneration("v4", "v4", _powers_of_two(8, 4096), True, 4, 4, ("us-central2-b",), ("us-central2-b",),
                  "tpu-ubuntu2204-base", spot=True),
    # A multi-host v5e VM holds 4 chips (GKE's ct5lp-hightpu-4t): v5litepod-16 is 4 VMs. The v5e page's "hosts"
    # column counts 8-chip machines; the node's network endpoints (one per VM) have the last word.
    TpuGeneration("v5e", "v5litepod", (1, 4, 8, 16, 32, 64, 128, 256), False, 4, 8,
                  ("us-central1-a", "us-south1-a", "us-west1-c", "us-west4-a"),
                  ("us-central1-a", "us-south1-a", "us-west1-c", "us-west4-a"), "v2-alpha-tpuv5-lite", spot=True),
    TpuGeneration("v5p", "v5p", _powers_of_two(8, 8192), True, 4, 4, ("us-central1-a", "us-east5-a"),
                  ("us-central1-a", "us-east5-a"), "v2-alpha-tpuv5", spot=True),
    TpuGeneration("v6e", "v6e", (1, 4, 8, 16, 32, 64, 128, 256), False, 4, 8,
                  ("us-central1-b", "us-east1-d", "us-east5-a", "us-east5-b", "europe-west4-a"),
                  ("us-central1-b", "us-east1-d", "us-east5-a", "us-east5-b", "europe-west4-a"),
                  "v2-alpha-tpuv6e", spot=True),
)

# TensorFlow TPU VM runtimes published for these versions (cloud.google.com/tpu/docs/runtimes).
TF_VERSIONS: tuple[str, ...] = ("2.12.0", "2.13.0", "2.14.0", "2.15.0", "2.16.1", "2.17.0", "2.18.0", "2.20.0")
# A TPU VM's TensorFlow runtime must be the release the TensorFlow workload installs: its venv takes the
# system site-packages, and a pod slice's workers run the image's TensorFlow server (issue 14, defect 5).
TF_WORKLOAD_REQUIREMENTS = Path(__file__).resolve().parents[1] / "workloads" / "bert" / "requirements-tf.txt"
TF_PINNED_PACKAGES = ("tensorflow-tpu", "tensorflow")
# From 2.15 a TF runtime names its TPU API: -pjrt or -se (stream executor).
_TF_API_REQUIRED_FROM = (2, 15)
_TF_RUNTIME = re.compile(r"^tpu-vm-tf-(?P<version>\d+\.\d+\.\d+)(?P<pod>-pod)?(?P<api>-pjrt|-se)?$")


@dataclass(frozen=True)
class TpuType:
    """One accelerator type ("v4-32") resolved against its generation."""

    name: str
    generation: TpuGeneration
    chips: int
    hosts: int

    @property
    def multi_host(self) -> bool:
        return self.hosts > 1

    @property
    def chips_per_host(self) -> int:
        return self.chips // self.hosts

    def offered_in(self, zone: str) -> bool:
        return zone in (self.generation.pod_zones if self.multi_host else self.generation.zones)

    def zones(self) -> tuple[str, ...]:
        return self.generation.pod_zones if self.multi_host else self.generation.zones


def accelerator_types() -> list[str]:
    """Every accelerator type ernie accepts, in catalog order."""
    return [f"{g.prefix}-{size}" for g in GENERATIONS for size in g.sizes]


def lookup_tpu(accelerator_type: str) -> TpuType | None:
    """Resolve "v4-32" into chips and hosts; None when it is not a TPU type Google offers."""
    prefix, _, suffix = accelerator_type.partition("-")
    for gen in GENERATIONS:
        if gen.prefix == prefix and suffix.isdigit() and int(suffix) in gen.sizes:
            chips = int(suffix) // 2 if gen.suffix_is_cores else int(suffix)
            hosts = 1 if chips <= gen.max_single_host_chips else chips // gen.chips_per_host
            return TpuType(accelerator_type, gen, chips, hosts)
    return None


def runtime_problem(tpu: TpuType, runtime: str) -> str | None:
    """Why `runtime` cannot boot `tpu`, or None when it fits. The message says what would fit."""
    fits = runtime_examples(tpu)
    match = _TF_RUNTIME.match(runtime)
    if match:
        version = match["version"]
        if version not in TF_VERSIONS:
            return f"TensorFlow {version} has no TPU VM runtime (published: {', '.join(TF_VERSIONS)}); use {fits}"
        needs_api = tuple(int(p) for p in version.split(".")[:2]) >= _TF_API_REQUIRED_FROM
        if needs_api and not match["api"]:
            return f"TensorFlow {version} runtimes end in -pjrt or -se; use {fits}"
        if tpu.multi_host and not match["pod"]:
            return f"{tpu.name} is a multi-host slice ({tpu.hosts} hosts) and needs a -pod runtime; use {fits}"
        if not tpu.multi_host and match["pod"]:
            return f"{tpu.name} is a single host and cannot run a -pod runtime; use {fits}"
        pinned = tf_workload_version()
        if version != pinned:
            return (f"TensorFlow {version} is not the release the TensorFlow workload pins "
                    f"({TF_WORKLOAD_REQUIREMENTS.relative_to(TF_WORKLOAD_REQUIREMENTS.parents[2])}: {pinned}); "
                    f"use {fits}")
        return None
    owners = [g for g in GENERATIONS if g.base_image == runtime]
    if not owners:
        return f"not a TPU VM runtime; use {fits}"
    if tpu.generation not in owners:
        return f"that is the runtime for TPU {'/'.join(g.name for g in owners)}, not {tpu.generation.name}; use {fits}"
    return None


# The frameworks a TPU VM runs, and the runtime images each needs (cloud.google.com/tpu/docs/runtimes):
# TensorFlow runs on its own tpu-vm-tf-* images (the TensorFlow build and, on a pod slice, the TPU server
# that worker 0's client drives); JAX and PyTorch/XLA install on the generation's base image and bring
# their own libtpu. A tpu-vm-tf-* image's runtime holds the chips, so JAX or PyTorch cannot use them there.
TPU_FRAMEWORKS: tuple[str, ...] = ("jax", "pytorch", "tensorflow")


def framework_problem(tpu: TpuType, runtime: str, framework: str) -> str | None:
    """Why `framework` cannot run on `runtime`, or None when they go together. The message says what would."""
    tensorflow_image = _TF_RUNTIME.match(runtime) is not None
    if framework == "tensorflow" and not tensorflow_image:
        pod = "-pod" if tpu.multi_host else ""
        return (f"TensorFlow runs on its own TPU runtime, not {runtime}; use tpu-vm-tf-{TF_VERSIONS[-1]}{pod}-pjrt "
                "(or set ernie:framework to jax or pytorch)")
    if framework != "tensorflow" and tensorflow_image:
        return (f"{runtime} is a TensorFlow runtime, whose TPU server holds the chips; {framework} installs on the "
                f"base image {tpu.generation.base_image} (or set ernie:framework to tensorflow)")
    return None


def runtime_examples(tpu: TpuType) -> str:
    """The runtimes that fit `tpu`, as a user would type them."""
    pod = "-pod" if tpu.multi_host else ""
    return f"{tpu.generation.base_image} (PyTorch/JAX) or tpu-vm-tf-{tf_workload_version()}{pod}-pjrt (TensorFlow)"


@cache
def tf_workload_version(path: Path = TF_WORKLOAD_REQUIREMENTS) -> str:
    """The TensorFlow release the TensorFlow workload pins (`tensorflow-tpu==X.Y.Z` in its requirements)."""
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if not text or text.startswith("-"):
            continue
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise ValueError(f"{path}: {text!r} is not a requirement ({exc})") from None
        if req.name in TF_PINNED_PACKAGES:
            pins = [s.version for s in req.specifier if s.operator == "=="]
            if len(pins) == 1 and re.fullmatch(r"\d+\.\d+\.\d+", pins[0]):
                return pins[0]
            raise ValueError(f"{path}: {text!r} must pin one release (==X.Y.Z): the TPU runtime is chosen by it")
    raise ValueError(f"{path}: no {' or '.join(TF_PINNED_PACKAGES)}==X.Y.Z line to choose the TPU runtime by")
