"""Where the JAX trainer runs, and how every worker of a run joins one JAX program.

Decided before JAX is imported, because XLA reads `XLA_FLAGS` when its CPU backend starts:

- Every worker runs the program: JAX's launch rule on a TPU pod slice (and PyTorch/XLA's), unlike
  TensorFlow's, where worker 0 alone drives the slice (tf_strategy.py). ernie starts the same command on
  each worker with its `ERNIE_*` variables (cluster.py); worker i of N calls
  `jax.distributed.initialize(ERNIE_COORDINATOR_ADDRESS:--port, N, i)`, worker 0 serving the
  coordinator. After that `jax.devices()` is every chip of every worker, and one `jit`-compiled step
  runs over all of them (jax_pretrain.py).
- A Cloud TPU VM: the slice's chips are the devices (libtpu comes with `jax[tpu]`). ernie's worker
  index must be the slice's WORKER_ID, or the processes would claim each other's chips.
- A CPU host: `--cpu-devices` virtual devices per process (XLA's
  `--xla_force_host_platform_device_count`) and gloo collectives between processes, so a slice's shape
  (workers x chips) runs for real on CPUs: two hosts with 4 devices each compile and run the same
  program as a 2-worker x 4-chip v4-16.
- GPU hosts: their GPUs.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass
from typing import Literal, Mapping

from cluster import Cluster, TpuVm, cluster_from_env

# How long a worker's coordination client may go without a heartbeat before the coordinator fails the
# whole run (JAX's default is 100 s): a preempted worker must end its peers soon, not hold the slice.
HEARTBEAT_TIMEOUT_S = 30
_DEVICE_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\S*")


@dataclass(frozen=True)
class Placement:
    """This process's part of the run: its worker, its devices, where the coordinator is."""

    cluster: Cluster
    accelerator: Literal["tpu", "gpu", "cpu"]
    cpu_devices: int  # virtual devices of a CPU host (1 elsewhere)
    port: int  # the coordinator's port on worker 0
    tpu_vm: TpuVm | None = None

    @property
    def is_chief(self) -> bool:
        """Only the chief writes the MLPerf log, result.json and the checkpoints."""
        return self.cluster.is_chief

    @property
    def coordinator(self) -> str | None:
        """`host:port` of jax.distributed's coordinator, None for a single worker."""
        if self.cluster.num_workers == 1:
            return None
        host = self.cluster.coordinator_address or ""
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def plan(env: Mapping[str, str], tpu_vm: TpuVm | None, gpus: int, cpu_devices: int, port: int) -> Placement:
    """The placement from ernie's variables, the TPU VM this host is (if any), its GPUs and the flags."""
    cluster = cluster_from_env(env)
    accelerator = "tpu" if tpu_vm is not None else "gpu" if gpus else "cpu"
    if cpu_devices < 1:
        raise ValueError(f"--cpu-devices {cpu_devices} must be at least 1")
    if cpu_devices != 1 and accelerator != "cpu":
        raise ValueError(f"--cpu-devices {cpu_devices}: this host has {accelerator.upper()}s, which are its devices; "
                         "the flag simulates chips on CPU hosts only (leave it at 1)")
    if tpu_vm is not None and (tpu_vm.hosts, tpu_vm.worker) != (cluster.num_workers, cluster.worker_index):
        raise ValueError(
            f"this TPU VM is worker {tpu_vm.worker} of a {tpu_vm.hosts}-host slice ({tpu_vm.accelerator_type}), but "
            f"ERNIE_WORKER_INDEX={cluster.worker_index} of ERNIE_NUM_WORKERS={cluster.num_workers}: list the slice's "
            "hosts in the inventory in the order of its network endpoints, one worker each"
        )
    if not 0 < port < 65536:
        raise ValueError(f"--port {port} is not a TCP port")
    return Placement(cluster, accelerator, cpu_devices, port, tpu_vm)


def prepare_environment(placement: Placement, environ: dict[str, str] | None = None) -> None:
    """Set what JAX reads as it starts: the CPU host's virtual device count, and CPU as its only platform."""
    environ = os.environ if environ is None else environ
    if placement.accelerator != "cpu":
        return
    flags = _DEVICE_COUNT_FLAG.sub("", environ.get("XLA_FLAGS", "")).strip()
    environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={placement.cpu_devices}".strip()
    environ.setdefault("JAX_PLATFORMS", "cpu")


def wait_for_coordinator(placement: Placement, timeout_s: float) -> None:
    """A worker > 0: return once worker 0's coordinator port accepts connections, or raise a RuntimeError
    naming the settings when it does not within `timeout_s`. JAX itself ends the process (a C++ fatal
    error, no Python exception) when its registration times out, so the wait is checked here first."""
    host, port = placement.cluster.coordinator_address or "", placement.port
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, timeout_s)):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"worker {placement.cluster.worker_index} could not reach the JAX coordinator at "
                    f"{placement.coordinator} (ERNIE_COORDINATOR_ADDRESS and --port) within {timeout_s:.0f} s "
                    f"(--coordinator-timeout): {exc}. Check that worker 0 was started and that the port is open "
                    "between the hosts"
                ) from None
            time.sleep(0.5)


def initialize(placement: Placement, timeout_s: float) -> None:
    """Join the run's JAX program: jax.distributed across workers (gloo between CPU hosts). A coordinator
    that a worker cannot reach within `timeout_s` is a RuntimeError naming the settings, before any training."""
    if placement.cluster.num_workers == 1:
        return
    if placement.is_chief:
        print(f"worker 0: serving the JAX coordinator on port {placement.port}; waiting up to {timeout_s:.0f} s "
              f"(--coordinator-timeout) for all {placement.cluster.num_workers} workers", flush=True)
    else:
        wait_for_coordinator(placement, timeout_s)
    import jax

    if placement.accelerator == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # A worker that has not registered by the deadline ends every process (JAX's own fatal error, which
    # says "another task died"); the line above says which setting bounds that wait.
    jax.distributed.initialize(
        coordinator_address=placement.coordinator,
        num_processes=placement.cluster.num_workers,
        process_id=placement.cluster.worker_index,
        initialization_timeout=max(1, int(timeout_s)),
        heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
    )


def peer_named(message: str) -> int | None:
    """The worker a JAX runtime error blames (its coordination service names tasks `.../task:N`), if any."""
    match = re.search(r"task:(\d+)", message)
    return int(match.group(1)) if match else None
