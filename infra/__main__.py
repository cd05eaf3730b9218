"""The Pulumi program: validate the stack's config, build its hosts, export the inventory.

Pulumi runs this file with infra/ as the working directory (Pulumi.yaml `main: infra/`); the repository root
goes first on sys.path so the modules beside it import as the `infra` package, and the shared data beside that
as `catalog`, exactly as `ernie check` and the tests import them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pulumi  # noqa: E402
import pulumi_tls as tls  # noqa: E402

from catalog import pricing  # noqa: E402
from catalog.gpu_catalog import (  # noqa: E402
    AMI_SSH_USER,
    DLC_REPOSITORIES,
    dlc_account,
    dlc_registry,
    efa_container_options,
    uses_efa,
)
from infra import config, serving_layers, startup  # noqa: E402
from infra.aws_gpu import GpuFleet, GpuFleetArgs  # noqa: E402
from infra.aws_serving import LambdaService, LambdaServiceArgs  # noqa: E402
from infra.gcp_tpu import TpuSlice, TpuSliceArgs  # noqa: E402
from infra.inventory import build_inventory  # noqa: E402
from infra.naming import gcp_label, tpu_node_name  # noqa: E402

TPU_SSH_USER = "ernie"

cfg = config.load()
# The serving functions' layers come built (`ernie layers build`); read before any resource is declared, so a
# stack whose layers are missing or stale stops here, before `up` creates anything.
served = [(f, serving_layers.read(f, cfg.serving)) for f in serving_layers.wanted(cfg.serving)] if cfg.serving else []
labels = {"ernie-stack": gcp_label(cfg.stack), "ernie-ttl": f"{cfg.ttl_minutes}m"}

if cfg.access.ssh_public_key is None:
    ssh_key = tls.PrivateKey("ssh", algorithm="ED25519")
    ssh_public_key: pulumi.Input[str] = ssh_key.public_key_openssh
    ssh_private_key: pulumi.Input[str] | None = pulumi.Output.secret(ssh_key.private_key_openssh)
else:
    ssh_public_key, ssh_private_key = cfg.access.ssh_public_key, None

if cfg.tpu is not None:
    tpu = cfg.tpu
    machines = TpuSlice("tpu", TpuSliceArgs(
        project=tpu.project, zone=tpu.zone, region=tpu.region, node_name=tpu_node_name(cfg.stack),
        accelerator_type=tpu.tpu.name, runtime_version=tpu.runtime_version, chips=tpu.tpu.chips,
        spot=cfg.spot, ssh_allowed_cidrs=cfg.access.ssh_allowed_cidrs,
        ssh_user=TPU_SSH_USER, ssh_public_key=ssh_public_key, ttl_minutes=cfg.ttl_minutes, labels=labels))
    priced, disk_gib = ("gcp", tpu.tpu.generation.name, tpu.tpu.chips), 0  # the catalog prices TPU chips only
    runner, ssh_user, image = "tpu-vm", TPU_SSH_USER, None
    host_setup: dict = {}
else:
    gpu = cfg.gpu
    machines = GpuFleet("gpu", GpuFleetArgs(
        region=gpu.region, availability_zone=gpu.availability_zone, instance_type=gpu.instance.name,
        instance_count=gpu.instance_count, gpus_per_instance=gpu.instance.gpus, efa=gpu.instance.efa,
        image=gpu.image, registry_account=dlc_account(gpu.region),
        repository=DLC_REPOSITORIES[gpu.framework], spot=cfg.spot, ssh_allowed_cidrs=cfg.access.ssh_allowed_cidrs,
        ssh_public_key=ssh_public_key, ttl_minutes=cfg.ttl_minutes, bucket_prefix=f"{cfg.stack}/",
        tags={**labels, "ernie-ttl": str(cfg.ttl_minutes)}))
    priced = ("aws", gpu.instance.name, gpu.instance_count)
    disk_gib = machines.root_volume_gib.apply(lambda gib: gib * gpu.instance_count)  # each root volume bills too
    runner, ssh_user, image = "docker", AMI_SSH_USER, gpu.image
    host_setup = {
        "bootstrap": {"done_file": startup.GPU_DONE_FILE, "failed_file": startup.GPU_FAILED_FILE,
                      "log_file": startup.GPU_USER_DATA_LOG},
        # The login user signs in itself before pulling (user data signed in root only; tokens last 12 hours).
        "registry_login": {"registry": dlc_registry(gpu.region), "username": "AWS",
                           "password_command": f"aws ecr get-login-password --region {gpu.region}"},
        "container": efa_container_options(gpu.instance) if uses_efa(gpu.instance, gpu.instance_count) else None,
    }

# The Lambda serving stack (aws, ernie:serving) sets serving_url to its HTTPS endpoint, and with
# ernie:servingEmbed, embed_url to the embedding endpoint.
urls: dict[str, pulumi.Output[str]] = {}
for served_function, built in served:
    serving = cfg.serving
    urls[served_function.name] = LambdaService(served_function.name, LambdaServiceArgs(
        function=built, stack=cfg.stack, memory_mb=served_function.memory_mb, timeout_seconds=serving.timeout_seconds,
        log_retention_days=serving.log_retention_days, throttle_rate=serving.throttle_rate,
        throttle_burst=serving.throttle_burst, reserved_concurrency=serving.reserved_concurrency,
        ttl_minutes=cfg.ttl_minutes, tags={**labels, "ernie-ttl": str(cfg.ttl_minutes)})).url
serving_url, embed_url = urls.get("serving"), urls.get("embedding")

pulumi.export("inventory", pulumi.Output.all(
    hosts=machines.hosts, bucket=machines.bucket_uri, ssh_private_key=ssh_private_key, serving_url=serving_url,
    embed_url=embed_url, disk_gib=disk_gib,
).apply(lambda out: build_inventory(
    cloud=cfg.cloud, stack=cfg.stack, runner=runner, ssh_user=ssh_user, hosts=out["hosts"], bucket=out["bucket"],
    # The same figure the cost-ceiling guardrail adds up (policy/rules.py), from the same function.
    price=pricing.quote(*priced, disk_gib=out["disk_gib"]), ttl_minutes=cfg.ttl_minutes,
    ssh_private_key=out["ssh_private_key"], ssh_key_path=cfg.access.ssh_key_path, image=image,
    serving_url=out["serving_url"], embed_url=out["embed_url"], **host_setup)))
