"""Every configuration value the program reads, validated into frozen dataclasses before any resource exists.

`load()` reads the stack's whole configuration (Pulumi.<stack>.yaml under `pulumi up`, or what `ernie check`
sets under mocks); `parse()` is the pure part, over a mapping of full keys ("ernie:tpuType") to raw strings.
Each error names the key, the value and what is accepted. Adding a key: read it in the section that owns it
and list it in that section's `*_KEYS`, or it is refused as unknown.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import pulumi
from pulumi.runtime import config as runtime_config

from catalog.gpu_catalog import (
    DLC_TAGS,
    INSTANCE_TYPES,
    RETIRED_FAMILIES,
    GpuInstanceType,
    dlc_image,
    dlc_regions,
    lookup_instance,
)
from catalog.lambda_runtime import ARCHES, SERVING_PYTHONS
from catalog.limits import (
    MAX_TTL_MINUTES,
    SERVING_MAX_RESERVED_CONCURRENCY,
    SERVING_MAX_TIMEOUT_SECONDS,
)
from catalog.reach import world_ranges
from catalog.tpu_catalog import (TPU_FRAMEWORKS, TpuType, accelerator_types, framework_problem, lookup_tpu,
                               runtime_examples, runtime_problem)

NAMESPACE = "ernie"
Cloud = Literal["gcp", "aws"]

COMMON_KEYS = frozenset({"cloud", "ttlMinutes", "maxUsdPerHour", "spot", "sshAllowedCidrs",
                         "allowSshFromAnywhere", "sshPublicKey", "sshKeyPath"})
GCP_KEYS = frozenset({"tpuType", "runtimeVersion", "framework"})
AWS_KEYS = frozenset({"instanceType", "instanceCount", "availabilityZone", "framework", "dlcTag", "serving"})
SERVING_KEYS = frozenset({"servingPython", "servingArchitecture", "servingMemoryMb", "servingTimeoutSeconds",
                          "servingLogRetentionDays", "servingThrottleRate", "servingThrottleBurst",
                          "servingReservedConcurrency", "servingEmbed", "servingEmbedMemoryMb"})
# Reserved by default: bounded (catalog/limits.py), and leaving the account room for other functions.
SERVING_DEFAULT_RESERVED_CONCURRENCY = 10
# Lambda's CPU grows with memory (one vCPU at 1,769 MB); the encoder is CPU-bound.
SERVING_EMBED_DEFAULT_MEMORY_MB = 2048
# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                      2922, 3288, 3653)


class ConfigError(pulumi.RunError):
    """A configuration value that cannot work. Pulumi prints a RunError without a stack trace."""


@dataclass(frozen=True)
class AccessConfig:
    """Who may reach the hosts over SSH, and with which key."""

    ssh_allowed_cidrs: tuple[str, ...]
    """Source ranges admitted to port 22; never the whole internet unless opted in."""
    ssh_from_anywhere: bool
    """ernie:allowSshFromAnywhere: the user accepted SSH open to the internet (`ernie check` then warns only)."""
    ssh_public_key: str | None
    """The user's OpenSSH public key; None: the stack makes a key pair and keeps the private half secret."""
    ssh_key_path: str | None
    """Where the private half of `ssh_public_key` lives on the user's machine (for the inventory)."""


@dataclass(frozen=True)
class TpuConfig:
    """A TPU VM or pod slice on Google Cloud."""

    project: str
    zone: str
    region: str
    tpu: TpuType
    runtime_version: str
    framework: str | None = None
    """ernie:framework (jax, pytorch, tensorflow): what the workloads run, checked against the runtime image."""


@dataclass(frozen=True)
class GpuConfig:
    """A fleet of GPU instances on AWS running a Deep Learning Container image."""

    region: str
    availability_zone: str
    instance: GpuInstanceType
    instance_count: int
    framework: str
    dlc_tag: str
    image: str
    """The full DLC image URI, derived from region, framework and tag."""


@dataclass(frozen=True)
class ServingConfig:
    """The Lambda serving stack (infra/aws_serving.py): runtime, size and limits of its function and API."""

    python_version: str
    """Lambda runtime pythonX.Y the layers are built for."""
    architecture: str
    memory_mb: int
    """Memory, and with it CPU: more makes the cold start's imports faster."""
    timeout_seconds: int
    log_retention_days: int
    throttle_rate: int
    """Steady requests per second the HTTP API lets through."""
    throttle_burst: int
    reserved_concurrency: int
    """Instances of the function that may run at once (and that no other function of the account may take)."""
    embed_memory_mb: int | None
    """Memory of the second function, sentence embeddings (workloads/serving/embed.py, `ernie:servingEmbed`),
    which shares the settings above; None when it is not built."""


@dataclass(frozen=True)
class StackConfig:
    """The whole validated configuration of one stack."""

    cloud: Cloud
    stack: str
    ttl_minutes: int
    max_usd_per_hour: float
    """The most the stack's hosts and disks may cost per hour on demand; the cost-ceiling guardrail checks it."""
    spot: bool
    access: AccessConfig
    tpu: TpuConfig | None
    """Set when cloud is gcp."""
    gpu: GpuConfig | None
    """Set when cloud is aws."""
    serving: ServingConfig | None
    """Set when the aws stack also builds the Lambda serving stack (`ernie:serving: true`)."""


def load() -> StackConfig:
    """Validate the running stack's configuration; raises ConfigError before any resource exists."""
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    raw = {k: runtime_config.get_config(k) for k in keys}
    return parse({k: v for k, v in raw.items() if v is not None}, pulumi.get_stack())


def parse(raw: Mapping[str, str], stack: str) -> StackConfig:
    """Validate raw config values (full keys, string values as Pulumi stores them)."""
    values = _Values(raw)
    cloud = values.choice("cloud", get_args(Cloud))
    aws_keys = AWS_KEYS | SERVING_KEYS
    own, other = (GCP_KEYS, aws_keys) if cloud == "gcp" else (aws_keys, GCP_KEYS)
    values.refuse_unknown(COMMON_KEYS | own, other, cloud)
    return StackConfig(
        cloud=cloud,
        stack=stack,
        ttl_minutes=_ttl(values),
        max_usd_per_hour=_max_usd_per_hour(values),
        spot=values.flag("spot", default=False),
        access=_access(values),
        tpu=_tpu(values) if cloud == "gcp" else None,
        gpu=_gpu(values) if cloud == "aws" else None,
        serving=_serving(values) if cloud == "aws" and values.flag("serving", default=False) else None,
    )


def _ttl(values: _Values) -> int:
    accepted = (f"minutes from 1 to {MAX_TTL_MINUTES} (one day) after which the hosts are deleted, "
                "so a forgotten slice stops billing")
    ttl = values.integer("ttlMinutes", accepted)
    if not 1 <= ttl <= MAX_TTL_MINUTES:
        raise values.error("ttlMinutes", ttl, accepted)
    return ttl


def _max_usd_per_hour(values: _Values) -> float:
    accepted = ("the most the stack's hosts and disks may cost, in USD per hour on demand (catalog/prices.csv), "
                "a number above 0, e.g. 60")
    text = values.text("maxUsdPerHour", accepted, required=True)
    try:
        ceiling = float(text)
    except ValueError:
        raise values.error("maxUsdPerHour", text, accepted) from None
    if not (math.isfinite(ceiling) and ceiling > 0):
        raise values.error("maxUsdPerHour", text, accepted)
    return ceiling


def _access(values: _Values) -> AccessConfig:
    accepted = "CIDRs of your own addresses, e.g. [\"203.0.113.7/32\"] or [\"10.0.0.0/8\"]"
    cidrs = values.text_list("sshAllowedCidrs", accepted)
    if not cidrs:
        raise values.error("sshAllowedCidrs", [], accepted)
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=True))
        except ValueError as exc:
            raise values.error("sshAllowedCidrs", cidr, f"{accepted} ({exc})") from None
    world = world_ranges(cidrs)
    from_anywhere = values.flag("allowSshFromAnywhere", default=False)
    if world and not from_anywhere:
        raise values.error("sshAllowedCidrs", cidrs, f"{accepted}; {', '.join(world)} opens SSH to the internet "
                                                     "(ranges broader than a /8 of IPv4 or a /32 of IPv6, alone or "
                                                     "together) and needs the explicit opt-in "
                                                     "`ernie:allowSshFromAnywhere: true`")
    public_key = values.text("sshPublicKey", "an OpenSSH public key line")
    if public_key is not None and not public_key.startswith(("ssh-ed25519 ", "ssh-rsa ", "ecdsa-sha2-")):
        raise values.error("sshPublicKey", public_key[:24] + "...", "an OpenSSH public key line (ssh-ed25519 AAAA...)")
    key_path = values.text("sshKeyPath", "a path")
    if (public_key is None) != (key_path is None):
        raise values.error("sshKeyPath" if key_path is None else "sshPublicKey", None,
                           "sshPublicKey and sshKeyPath together (your key and where its private half is), "
                           "or neither (the stack makes a key pair and keeps it as a secret)")
    return AccessConfig(tuple(str(n) for n in networks), from_anywhere, public_key, key_path)


def _serving(values: _Values) -> ServingConfig:
    def one_of(key: str, accepted: Sequence[str]) -> str:
        value = values.text(key, ", ".join(accepted)) or accepted[0]
        if value not in accepted:
            raise values.error(key, value, ", ".join(accepted))
        return value

    def bounded(key: str, low: int, high: int, default: int, unit: str) -> int:
        accepted = f"a whole number of {unit} from {low} to {high}"
        value = values.integer(key, accepted, default=default)
        if not low <= value <= high:
            raise values.error(key, value, accepted)
        return value

    embed = values.flag("servingEmbed", default=False)
    stray = None if embed else values.text("servingEmbedMemoryMb", "")
    if stray is not None:
        raise values.error("servingEmbedMemoryMb", stray, "set it only with `ernie:servingEmbed: true`, which "
                           "builds the embedding function", accepts=False)
    retention = values.integer("servingLogRetentionDays", "days", default=14)
    if retention not in LOG_RETENTION_DAYS:
        raise values.error("servingLogRetentionDays", retention,
                           f"a CloudWatch retention period: {', '.join(map(str, LOG_RETENTION_DAYS))}")
    return ServingConfig(
        python_version=one_of("servingPython", SERVING_PYTHONS),
        architecture=one_of("servingArchitecture", ARCHES),
        memory_mb=bounded("servingMemoryMb", 128, 10240, 1024, "MB (Lambda's range)"),
        timeout_seconds=bounded("servingTimeoutSeconds", 1, SERVING_MAX_TIMEOUT_SECONDS, 30,
                                "seconds (the HTTP API gives up after 30)"),
        log_retention_days=retention,
        throttle_rate=bounded("servingThrottleRate", 1, 10000, 50, "requests per second"),
        throttle_burst=bounded("servingThrottleBurst", 1, 5000, 100, "requests"),
        reserved_concurrency=bounded("servingReservedConcurrency", 1, SERVING_MAX_RESERVED_CONCURRENCY,
                                     SERVING_DEFAULT_RESERVED_CONCURRENCY, "instances running at once"),
        # The encoder's activations for a full batch of long texts come on top of ONNX Runtime and the model.
        embed_memory_mb=bounded("servingEmbedMemoryMb", 512, 10240, SERVING_EMBED_DEFAULT_MEMORY_MB,
                                "MB (the embedding model needs 512; Lambda allows up to 10240)") if embed else None,
    )


def _tpu(values: _Values) -> TpuConfig:
    project = values.text("project", "your Google Cloud project id", namespace="gcp", required=True)
    name = values.choice("tpuType", accelerator_types())
    tpu = lookup_tpu(name)
    zone = values.text("zone", f"a zone offering {tpu.name}: {', '.join(tpu.zones())}", namespace="gcp",
                       required=True)
    if not tpu.offered_in(zone):
        raise values.error("zone", zone, f"a zone offering {tpu.name}: {', '.join(tpu.zones())}", namespace="gcp")
    runtime = values.text("runtimeVersion", runtime_examples(tpu), required=True)
    problem = runtime_problem(tpu, runtime)
    if problem:
        raise values.error("runtimeVersion", runtime, problem, accepts=False)
    framework = values.text("framework", f"the framework the slice runs: {', '.join(TPU_FRAMEWORKS)}")
    if framework is not None:
        if framework not in TPU_FRAMEWORKS:
            raise values.error("framework", framework, f"a framework TPU VMs run: {', '.join(TPU_FRAMEWORKS)}")
        problem = framework_problem(tpu, runtime, framework)
        if problem:
            raise values.error("framework", framework, problem, accepts=False)
    if values.flag("spot", default=False) and not tpu.generation.spot:
        raise values.error("spot", True, f"false for TPU {tpu.generation.name}: Spot VMs are offered only for "
                                          "v4 and later")
    return TpuConfig(project, zone, zone.rsplit("-", 1)[0], tpu, runtime, framework)


def _gpu(values: _Values) -> GpuConfig:
    region = values.choice("region", dlc_regions(), namespace="aws")
    zone = values.text("availabilityZone", f"a zone of {region}, e.g. {region}a") or f"{region}a"
    if not (zone.startswith(region) and len(zone) == len(region) + 1 and zone[-1].isalpha()):
        raise values.error("availabilityZone", zone, f"a zone of {region}, e.g. {region}a")
    known = ", ".join(t.name for t in INSTANCE_TYPES)
    name = values.text("instanceType", f"a GPU instance type: {known}", required=True)
    instance = lookup_instance(name)
    retired = RETIRED_FAMILIES.get(name.split(".", 1)[0])
    if instance is None and retired:
        raise values.error("instanceType", name, f"not offered: {retired}", accepts=False)
    if instance is None:
        raise values.error("instanceType", name, f"not a GPU instance type in ernie's catalog; accepted: {known}",
                           accepts=False)
    count = values.integer("instanceCount", "a whole number of instances, 1 or more", default=1)
    if count < 1:
        raise values.error("instanceCount", count, "a whole number of instances, 1 or more")
    if values.flag("spot", default=False) and not instance.spot:
        spot_types = ", ".join(t.name for t in INSTANCE_TYPES if t.spot)
        raise values.error("spot", True, f"false for {instance.name}, which is not offered as Spot; "
                                          f"Spot is offered for {spot_types}")
    framework = values.choice("framework", list(DLC_TAGS),
                              why="a framework with an AWS Deep Learning Container training image:")
    tag = values.choice("dlcTag", DLC_TAGS[framework], why=f"a published {framework} training image tag:")
    return GpuConfig(region, zone, instance, count, framework, tag, dlc_image(region, framework, tag))


class _Values:
    """Raw values, typed reads whose errors name the key and what is accepted, and the unknown-key check."""

    def __init__(self, raw: Mapping[str, str]) -> None:
        self._raw = raw

    def refuse_unknown(self, allowed: frozenset[str], other_cloud: frozenset[str], cloud: str) -> None:
        for full in sorted(self._raw):
            namespace, _, key = full.partition(":")
            if namespace != NAMESPACE or key in allowed:
                continue
            if key in other_cloud:
                raise self.error(key, self._raw[full], f"it applies to the other cloud, not {cloud}; remove it",
                                 accepts=False)
            near = difflib.get_close_matches(key, sorted(allowed | other_cloud), n=1)
            hint = f"did you mean ernie:{near[0]}? " if near else ""
            raise self.error(key, self._raw[full], f"{hint}the ernie keys for {cloud} are "
                                                   f"{', '.join(sorted(allowed))}", accepts=False, what="unknown key")

    @staticmethod
    def error(key: str, value: object, accepted: str, *, namespace: str = NAMESPACE,
              accepts: bool = True, what: str = "") -> ConfigError:
        shown = "missing" if value is None else repr(value) if isinstance(value, str) else json.dumps(value)
        lead = f"{what} " if what else ""
        verb = "accepted: " if accepts else ""
        return ConfigError(f"{namespace}:{key}: {lead}{shown}; {verb}{accepted}")

    def text(self, key: str, accepted: str, *, namespace: str = NAMESPACE, required: bool = False) -> str | None:
        value = self._raw.get(f"{namespace}:{key}")
        if value in (None, ""):
            if required:
                raise self.error(key, None, f"{accepted} (`pulumi config set {namespace}:{key} VALUE`; "
                                            "Pulumi.gcp.yaml and Pulumi.aws.yaml show examples)", namespace=namespace)
            return None
        return value

    def choice(self, key: str, accepted: Sequence[str], *, namespace: str = NAMESPACE, why: str = "") -> str:
        listed = f"{why} {', '.join(accepted)}" if why else ", ".join(accepted)
        value = self.text(key, listed, namespace=namespace, required=True)
        if value not in accepted:
            raise self.error(key, value, listed, namespace=namespace)
        return value

    def integer(self, key: str, accepted: str, *, default: int | None = None) -> int:
        value = self.text(key, accepted, required=default is None)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise self.error(key, value, accepted) from None

    def flag(self, key: str, *, default: bool) -> bool:
        value = self.text(key, "true or false")
        if value is None:
            return default
        if value.lower() not in ("true", "false"):
            raise self.error(key, value, "true or false")
        return value.lower() == "true"

    def text_list(self, key: str, accepted: str) -> list[str]:
        value = self.text(key, accepted, required=True)
        try:
            items = json.loads(value)
        except json.JSONDecodeError:
            items = None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise self.error(key, value, f"a list: {accepted}")
        return items
