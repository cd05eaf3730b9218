"""Where this process runs: its place among ernie's workers, the Cloud TPU VM it is on, its GPUs.

Read without loading any framework, so both Keras backends' placement rules (tf_strategy.py for
TensorFlow, jax_placement.py for JAX) start from the same facts:

- `cluster_from_env`: ernie's `ERNIE_WORKER_INDEX`, `ERNIE_NUM_WORKERS` and `ERNIE_COORDINATOR_ADDRESS`
  (worker 0's private address), the same on every runner (docs/workloads.md);
- `detect_tpu_vm`: a Cloud TPU VM, from its TPU device files and its `tpu-env` metadata;
- `count_gpus`: NVIDIA GPUs visible to this process; `cpu_name`: the CPU's model, for result.json.
"""

from __future__ import annotations

import glob
import os
import platform
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

_METADATA_URL = "http://metadata.google.internal/computeMetadata/v1/instance/attributes/"
# TPU VMs expose their chips as /dev/accel* (v2-v4) or VFIO groups (v5e, v5p, v6e).
_TPU_DEVICE_GLOBS = ("/dev/accel[0-9]*", "/dev/vfio/[0-9]*")


@dataclass(frozen=True)
class Cluster:
    """This process's place among the hosts of a run, from ernie's `ERNIE_*` variables."""

    worker_index: int = 0
    num_workers: int = 1
    coordinator_address: str | None = None

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0


@dataclass(frozen=True)
class TpuVm:
    """What a Cloud TPU VM says about itself in its `tpu-env` metadata."""

    node: str  # the TPU's name (NODE_ID), which TPUClusterResolver resolves to every host of the slice
    accelerator_type: str  # "v4-32"
    worker: int  # this host's index in the slice
    hosts: int  # hosts in the slice

    @property
    def chips(self) -> int:
        """Chips in the slice: v5e and v6e names count chips, v2-v4 and v5p names TensorCores (two a chip)."""
        generation, _, count = self.accelerator_type.partition("-")
        return int(count) if generation in ("v5litepod", "v5e", "v6e") else int(count) // 2


def cluster_from_env(env: Mapping[str, str]) -> Cluster:
    """Read ERNIE_WORKER_INDEX / ERNIE_NUM_WORKERS / ERNIE_COORDINATOR_ADDRESS, with errors naming the fix."""

    def integer(name: str, default: int) -> int:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not an integer: ernie sets it to the worker's number") from None

    num_workers = integer("ERNIE_NUM_WORKERS", 1)
    worker_index = integer("ERNIE_WORKER_INDEX", 0)
    if num_workers < 1:
        raise ValueError(f"ERNIE_NUM_WORKERS={num_workers} must be at least 1")
    if not 0 <= worker_index < num_workers:
        raise ValueError(f"ERNIE_WORKER_INDEX={worker_index} must lie in 0..{num_workers - 1} (ERNIE_NUM_WORKERS)")
    coordinator = env.get("ERNIE_COORDINATOR_ADDRESS", "").strip() or None
    if num_workers > 1 and coordinator is None:
        raise ValueError("ERNIE_NUM_WORKERS > 1 needs ERNIE_COORDINATOR_ADDRESS: worker 0's private address")
    return Cluster(worker_index, num_workers, coordinator)


def parse_tpu_env(text: str, worker_endpoints: str) -> TpuVm:
    """A TpuVm from the `tpu-env` attribute ("KEY: 'value'" lines) and `worker-network-endpoints`."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip().strip("'\"")
    missing = [k for k in ("NODE_ID", "ACCELERATOR_TYPE", "WORKER_ID") if not values.get(k)]
    if missing:
        raise ValueError(f"the TPU VM's tpu-env metadata lacks {', '.join(missing)}")
    hosts = len([e for e in worker_endpoints.split(",") if e.strip()]) or 1
    return TpuVm(values["NODE_ID"], values["ACCELERATOR_TYPE"], int(values["WORKER_ID"]), hosts)


def _metadata(attribute: str) -> str:
    request = urllib.request.Request(_METADATA_URL + attribute, headers={"Metadata-Flavor": "Google"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


def detect_tpu_vm() -> TpuVm | None:
    """This host as a TPU VM, or None where it has no TPU device (the metadata server is asked only then)."""
    if not any(glob.glob(pattern) for pattern in _TPU_DEVICE_GLOBS):
        return None
    try:
        return parse_tpu_env(_metadata("tpu-env"), _metadata("worker-network-endpoints"))
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeError(f"this host has TPU devices but its GCE metadata server did not answer: {exc}") from exc


def count_gpus() -> int:
    """NVIDIA GPUs visible to this process, counted without loading a framework."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return len(glob.glob("/dev/nvidia[0-9]*"))


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC 9B14"), the device name of a CPU host's result.json."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"
