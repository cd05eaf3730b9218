"""Which `tf.distribute` strategy the TensorFlow trainer runs under, and who launches what on a TPU slice.

One place for the placement rules, decided before TensorFlow is imported (a TPU launch sets variables
TensorFlow reads when it loads):

- A Cloud TPU VM (a TPU device file and the VM's `tpu-env` metadata): `TPUStrategy` through
  `TPUClusterResolver`. Cloud TPU's rule for TensorFlow on TPU VMs, as Google's own TF-on-TPU test
  harness applies it (GoogleCloudPlatform/ml-auto-solutions, dags/solutions_team/configs/tensorflow):
    * single host (`tpu-vm-tf-X.Y.Z-pjrt`): the program runs on the host with `tpu="local"` and the
      PJRT plugin (`NEXT_PLUGGABLE_DEVICE_USE_C_API=true`, `TF_PLUGGABLE_DEVICE_LIBRARY_PATH=libtpu.so`);
    * pod slice (`tpu-vm-tf-X.Y.Z-pod-pjrt`): ONE client, on worker 0, drives every host of the slice
      through the TPU runtime server each host runs; it names the slice (`tpu=<node name>`) and must not
      load libtpu itself (`TPU_LOAD_LIBRARY=0`). The other workers run nothing of their own: ernie starts
      the same command on every worker, and on workers 1..N-1 it returns at once (`drives` is False).
  JAX and PyTorch/XLA differ here: there every worker runs the program (`--worker=all`).
- Several CPU/GPU hosts (`ERNIE_NUM_WORKERS` > 1): `MultiWorkerMirroredStrategy`. Its `TF_CONFIG` needs
  every worker's address, and ernie hands each worker only the coordinator's, so the workers swap
  theirs through a small rendezvous on the coordinator (`exchange_addresses`), as torch.distributed's
  TCPStore does.
- One host with several GPUs: `MirroredStrategy`; otherwise TensorFlow's default strategy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Mapping

# Re-exported: where this process runs is the same question for both Keras backends (cluster.py).
from cluster import Cluster, TpuVm, cluster_from_env, count_gpus, detect_tpu_vm, parse_tpu_env  # noqa: F401

if TYPE_CHECKING:
    import tensorflow as tf

StrategyKind = Literal["tpu", "multi_worker", "mirrored", "default"]

_PJRT_LIBTPU = "/lib/libtpu.so"  # where the tpu-vm-tf-*-pjrt runtime images keep it


@dataclass(frozen=True)
class Plan:
    """How this process trains: the strategy, whether it runs the program at all, what TF must see."""

    kind: StrategyKind
    cluster: Cluster
    drives: bool = True  # False: a TPU pod-slice worker whose chips worker 0's program drives
    tpu: str | None = None  # TPUClusterResolver's `tpu` argument
    env: dict[str, str] = field(default_factory=dict)  # set before TensorFlow loads
    accelerator: Literal["tpu", "gpu", "cpu"] = "cpu"
    tpu_vm: TpuVm | None = None

    @property
    def is_chief(self) -> bool:
        """Only the chief writes the MLPerf log, result.json and checkpoints."""
        return self.cluster.is_chief


def libtpu_path() -> str:
    """libtpu.so: from the `libtpu` wheel that tensorflow-tpu installs, else the runtime image's copy."""
    spec = importlib.util.find_spec("libtpu")
    if spec is not None and spec.submodule_search_locations:
        candidate = os.path.join(list(spec.submodule_search_locations)[0], "libtpu.so")
        if os.path.exists(candidate):
            return candidate
    return _PJRT_LIBTPU


def tpu_launch(tpu: TpuVm, cluster: Cluster) -> Plan:
    """Cloud TPU's launch rule for TensorFlow (see the module docstring): the one place it is written."""
    if tpu.hosts == 1:
        env = {"NEXT_PLUGGABLE_DEVICE_USE_C_API": "true", "TF_PLUGGABLE_DEVICE_LIBRARY_PATH": libtpu_path()}
        return Plan("tpu", cluster, drives=True, tpu="local", env=env, accelerator="tpu", tpu_vm=tpu)
    # A pod slice: worker 0 is the one client; the whole slice is one "host" to the run's bookkeeping.
    return Plan(
        "tpu",
        Cluster(worker_index=tpu.worker, num_workers=1),
        drives=tpu.worker == 0,
        tpu=tpu.node,
        env={"TPU_LOAD_LIBRARY": "0"},
        accelerator="tpu",
        tpu_vm=tpu,
    )


def plan(env: Mapping[str, str], tpu: TpuVm | None, gpus: int) -> Plan:
    """The strategy for this process from its environment, the TPU VM it is on (if any) and its GPU count."""
    cluster = cluster_from_env(env)
    if tpu is not None:
        return tpu_launch(tpu, cluster)
    accelerator = "gpu" if gpus else "cpu"
    if cluster.num_workers > 1:
        return Plan("multi_worker", cluster, accelerator=accelerator)
    if gpus > 1:
        return Plan("mirrored", cluster, accelerator=accelerator)
    return Plan("default", cluster, accelerator=accelerator)


# --- MultiWorkerMirroredStrategy: TF_CONFIG from ERNIE_* ---------------------------------------------


def _own_address(coordinator: str, port: int) -> str:
    """The address other hosts reach this one on: the interface that routes to the coordinator."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((coordinator, port))  # a UDP connect sends nothing; it only picks the route
        return probe.getsockname()[0]


def exchange_addresses(cluster: Cluster, port: int, timeout_s: float = 300.0) -> list[str]:
    """Every worker's `host:port` for its TensorFlow server, in worker order.

    Worker 0 listens on the coordinator's `port` and answers once all workers have reported; each
    worker's own server takes `port + 1 + worker_index`, distinct even when workers share a host.
    """
    assert cluster.coordinator_address is not None
    coordinator = cluster.coordinator_address
    deadline = time.monotonic() + timeout_s
    if cluster.is_chief:
        addresses = {0: f"{coordinator}:{port + 1}"}
        with socket.create_server((coordinator, port)) as server:
            server.settimeout(timeout_s)
            peers = []
            while len(addresses) < cluster.num_workers:
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    waiting = sorted(set(range(cluster.num_workers)) - set(addresses))
                    raise RuntimeError(f"workers {waiting} did not reach {coordinator}:{port} in {timeout_s:.0f} s")
                conn.settimeout(timeout_s)
                hello = json.loads(conn.makefile().readline())
                addresses[int(hello["worker"])] = hello["address"]
                peers.append(conn)
            reply = (json.dumps([addresses[i] for i in range(cluster.num_workers)]) + "\n").encode()
            for conn in peers:
                with conn:
                    conn.sendall(reply)
        return [addresses[i] for i in range(cluster.num_workers)]
    while True:  # the coordinator may not be listening yet
        try:
            conn = socket.create_connection((coordinator, port), timeout=10)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not reach the coordinator at {coordinator}:{port} in {timeout_s:.0f} s")
            time.sleep(0.5)
    own = f"{_own_address(coordinator, port)}:{port + 1 + cluster.worker_index}"
    with conn:
        conn.settimeout(timeout_s)
        conn.sendall((json.dumps({"worker": cluster.worker_index, "address": own}) + "\n").encode())
        return json.loads(conn.makefile().readline())


def tf_config(addresses: list[str], worker_index: int) -> str:
    """TF_CONFIG for MultiWorkerMirroredStrategy: worker 0 is the chief (it writes logs and results)."""
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": worker_index}})


def prepare_environment(chosen: Plan, port: int, timeout_s: float = 300.0) -> None:
    """Set what TensorFlow reads when it loads: the TPU launch variables or the multi-worker TF_CONFIG."""
    for key, value in chosen.env.items():
        os.environ.setdefault(key, value)
    if chosen.kind == "multi_worker":
        os.environ["TF_CONFIG"] = tf_config(exchange_addresses(chosen.cluster, port, timeout_s), chosen.cluster.worker_index)


def build_strategy(chosen: Plan) -> tf.distribute.Strategy:
    """The tf.distribute.Strategy for `chosen`; call after `prepare_environment`."""
    import tensorflow as tf  # noqa: F811  (here, not above: prepare_environment must run before it loads)

    if chosen.kind == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=chosen.tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if chosen.kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if chosen.kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def choose(port: int, timeout_s: float = 300.0) -> Plan:
    """Plan this process from its real environment; exits quietly on a pod-slice worker that drives nothing."""
    chosen = plan(os.environ, detect_tpu_vm(), count_gpus())
    if not chosen.drives:
        print(f"TPU pod slice {chosen.tpu}: worker 0's program drives this host's chips; nothing to run here")
        sys.exit(0)
    prepare_environment(chosen, port, timeout_s)
    return chosen
