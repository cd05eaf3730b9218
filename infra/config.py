"""Every configuration value the program reads, validated into frozen models before any resource exists.

`load()` reads the stack's whole configuration (Pulumi.<stack>.yaml under `pulumi up`, or what `ernie check`
sets under mocks); `parse()` is the pure part, over a mapping of full keys ("ernie:tpuType") to raw strings.
Each section is a catalog/schema.py model whose fields are aliased by their full keys, so its one error formatter
names the key, the value and what is accepted. Adding a key: declare it in the section that owns it; an ernie key
no section declares is refused as unknown.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

import pulumi
from pulumi.runtime import config as runtime_config
from pydantic import BeforeValidator, ConfigDict, Field, InstanceOf, ValidationError, ValidationInfo, \
    field_validator, model_validator

from catalog.gpu_catalog import DLC_TAGS, INSTANCE_TYPES, RETIRED_FAMILIES, GpuInstanceType, dlc_image, \
    dlc_regions, lookup_instance
from catalog.lambda_runtime import ARCHES, SERVING_PYTHONS
from catalog.limits import MAX_TTL_MINUTES, SERVING_MAX_RESERVED_CONCURRENCY, SERVING_MAX_TIMEOUT_SECONDS
from catalog.reach import world_ranges
from catalog.schema import Problem, Schema, explain, show
from catalog.tpu_catalog import TPU_FRAMEWORKS, TpuType, accelerator_types, framework_problem, lookup_tpu, \
    runtime_examples, runtime_problem

Cloud = Literal["gcp", "aws"]
# Reserved by default: bounded (catalog/limits.py), and leaving the account room for other functions.
SERVING_DEFAULT_RESERVED_CONCURRENCY = 10
# Lambda's CPU grows with memory (one vCPU at 1,769 MB); the encoder is CPU-bound.
SERVING_EMBED_DEFAULT_MEMORY_MB = 2048
# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                      2922, 3288, 3653)
_CIDRS = "CIDRs of your own addresses, e.g. [\"203.0.113.7/32\"] or [\"10.0.0.0/8\"]"


class ConfigError(pulumi.RunError):
    """A configuration value that cannot work. Pulumi prints a RunError without a stack trace."""


def _key(full: str, accepted: str, default: Any = ..., **bounds: Any) -> Any:
    """A field read from the full key `full`; `accepted` is its documentation and every generic error's answer."""
    return Field(default, alias=full, description=accepted, json_schema_extra={"accepted": accepted}, **bounds)


def _bounded(full: str, low: int, high: int, default: int | None, unit: str) -> Any:
    return _key(full, f"a whole number of {unit} from {low} to {high}", default, ge=low, le=high)


def _choices(values: Any) -> str:
    return ", ".join(map(str, values))


# Pulumi hands every value as a string: a well-formed one is read here, anything else is refused by the (strict)
# type with the field's accepted text. A whole number is read before its bounds are checked, so they name 0, not '0'.
def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, str) and re.fullmatch(r"-?\d+", value) else value


def _flag(value: Any) -> Any:
    return {"true": True, "false": False}.get(value.lower(), value) if isinstance(value, str) else value


Whole = Annotated[int, BeforeValidator(_whole)]
Flag = Annotated[bool, BeforeValidator(_flag)]


def _switch(values: Mapping[str, Any], full: str) -> bool:
    """A flag that decides which fields are read at all, checked before them."""
    value = _flag(values.get(full, False))
    if not isinstance(value, bool):
        raise Problem(full, f"{show(value)}; accepted: true or false")
    return value


class _Section(Schema):
    """Reads its own keys from the whole flat mapping; Pulumi's strings are parsed by the field types above."""

    model_config = ConfigDict(extra="ignore")


class AccessConfig(_Section):
    """Who may reach the hosts over SSH, and with which key."""

    ssh_allowed_cidrs: tuple[str, ...] = _key("ernie:sshAllowedCidrs", _CIDRS)
    """Source ranges admitted to port 22; never the whole internet unless opted in."""
    ssh_from_anywhere: Flag = _key("ernie:allowSshFromAnywhere", "true or false", False)
    """ernie:allowSshFromAnywhere: the user accepted SSH open to the internet (`ernie check` then warns only)."""
    ssh_public_key: str | None = _key("ernie:sshPublicKey", "an OpenSSH public key line", None)
    """The user's OpenSSH public key; None: the stack makes a key pair and keeps the private half secret."""
    ssh_key_path: str | None = _key("ernie:sshKeyPath", "a path", None)
    """Where the private half of `ssh_public_key` lives on the user's machine (for the inventory)."""

    @field_validator("ssh_allowed_cidrs", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        try:
            cidrs = json.loads(value)
        except (TypeError, json.JSONDecodeError):
            cidrs = None
        if not isinstance(cidrs, list) or not all(isinstance(c, str) for c in cidrs):
            raise ValueError(f"{show(value)}; accepted: a list: {_CIDRS}")
        if not cidrs:
            raise ValueError(f"[]; accepted: {_CIDRS}")
        networks = []
        for cidr in cidrs:
            try:
                networks.append(str(ipaddress.ip_network(cidr, strict=True)))
            except ValueError as exc:
                raise ValueError(f"{show(cidr)}; accepted: {_CIDRS} ({exc})") from None
        return tuple(networks)

    @field_validator("ssh_public_key")
    @classmethod
    def _openssh(cls, key: str | None) -> str | None:
        if key is not None and not key.startswith(("ssh-ed25519 ", "ssh-rsa ", "ecdsa-sha2-")):
            raise ValueError(f"{show(key[:24] + '...')}; accepted: an OpenSSH public key line (ssh-ed25519 AAAA...)")
        return key

    @model_validator(mode="after")
    def _together(self) -> AccessConfig:
        world = world_ranges(list(self.ssh_allowed_cidrs))
        if world and not self.ssh_from_anywhere:
            raise Problem("ernie:sshAllowedCidrs", f"{show(list(self.ssh_allowed_cidrs))}; accepted: {_CIDRS}; "
                          f"{', '.join(world)} opens SSH to the internet (ranges broader than a /8 of IPv4 or a /32 "
                          "of IPv6, alone or together) and needs the explicit opt-in "
                          "`ernie:allowSshFromAnywhere: true`")
        if (self.ssh_public_key is None) != (self.ssh_key_path is None):
            raise Problem("ernie:sshKeyPath" if self.ssh_key_path is None else "ernie:sshPublicKey",
                          "missing; accepted: sshPublicKey and sshKeyPath together (your key and where its private "
                          "half is), or neither (the stack makes a key pair and keeps it as a secret)")
        return self


class TpuConfig(_Section):
    """A TPU VM or pod slice on Google Cloud."""

    project: str = _key("gcp:project", "your Google Cloud project id")
    tpu: Annotated[InstanceOf[TpuType], BeforeValidator(lambda name: lookup_tpu(name) or name)] = \
        _key("ernie:tpuType", _choices(accelerator_types()))
    # Checked against the TPU type, which also says what is accepted when they are missing.
    zone: str = _key("gcp:zone", "a zone offering the TPU type", None, validate_default=True)
    runtime_version: str = _key("ernie:runtimeVersion", "a runtime image for the TPU type", None,
                                validate_default=True)
    framework: Literal[TPU_FRAMEWORKS] | None = \
        _key("ernie:framework", f"a framework TPU VMs run: {_choices(TPU_FRAMEWORKS)}", None)
    """ernie:framework (jax, pytorch, tensorflow): what the workloads run, checked against the runtime image."""

    @property
    def region(self) -> str:
        return self.zone.rsplit("-", 1)[0]

    @field_validator("zone", mode="before")
    @classmethod
    def _offered(cls, zone: str | None, info: ValidationInfo) -> str | None:
        tpu = info.data.get("tpu")
        if tpu is not None and (zone is None or not tpu.offered_in(zone)):
            raise ValueError(f"{show(zone)}; accepted: a zone offering {tpu.name}: {', '.join(tpu.zones())}")
        return zone

    @field_validator("runtime_version", mode="before")
    @classmethod
    def _runtime(cls, runtime: str | None, info: ValidationInfo) -> str | None:
        if "tpu" in info.data and runtime is None:
            raise ValueError(f"missing; accepted: {runtime_examples(info.data['tpu'])}")
        problem = "tpu" in info.data and runtime_problem(info.data["tpu"], runtime)
        if problem:
            raise ValueError(f"{show(runtime)}; {problem}")
        return runtime

    @field_validator("framework")
    @classmethod
    def _framework(cls, framework: str | None, info: ValidationInfo) -> str | None:
        problem = framework and "tpu" in info.data and "runtime_version" in info.data and \
            framework_problem(info.data["tpu"], info.data["runtime_version"], framework)
        if problem:
            raise ValueError(f"{show(framework)}; {problem}")
        return framework


_INSTANCES = _choices(t.name for t in INSTANCE_TYPES)


def _instance(name: Any) -> Any:
    instance = lookup_instance(name) if isinstance(name, str) else name
    if instance is None:
        retired = RETIRED_FAMILIES.get(name.split(".", 1)[0])
        raise ValueError(f"{show(name)}; not offered: {retired}" if retired else
                         f"{show(name)}; not a GPU instance type in ernie's catalog; accepted: {_INSTANCES}")
    return instance


class GpuConfig(_Section):
    """A fleet of GPU instances on AWS running a Deep Learning Container image."""

    region: Literal[tuple(dlc_regions())] = _key("aws:region", _choices(dlc_regions()))
    availability_zone: str = _key("ernie:availabilityZone", "a zone of the region, e.g. us-east-1a", None,
                                  validate_default=True)
    instance: Annotated[InstanceOf[GpuInstanceType], BeforeValidator(_instance)] = \
        _key("ernie:instanceType", f"a GPU instance type: {_INSTANCES}")
    instance_count: Whole = _key("ernie:instanceCount", "a whole number of instances, 1 or more", 1, ge=1)
    framework: Literal[tuple(DLC_TAGS)] = _key(
        "ernie:framework", f"a framework with an AWS Deep Learning Container training image: {_choices(DLC_TAGS)}")
    dlc_tag: str = _key("ernie:dlcTag", "a published training image tag of the framework", None,
                        validate_default=True)

    @property
    def image(self) -> str:
        """The full DLC image URI, derived from region, framework and tag."""
        return dlc_image(self.region, self.framework, self.dlc_tag)

    @field_validator("availability_zone", mode="before")
    @classmethod
    def _in_region(cls, zone: str | None, info: ValidationInfo) -> str | None:
        region = info.data.get("region")
        if region is None:
            return zone
        if zone is not None and not (zone.startswith(region) and len(zone) == len(region) + 1 and zone[-1].isalpha()):
            raise ValueError(f"{show(zone)}; accepted: a zone of {region}, e.g. {region}a")
        return zone or f"{region}a"

    @field_validator("dlc_tag", mode="before")
    @classmethod
    def _published(cls, tag: str | None, info: ValidationInfo) -> str | None:
        framework = info.data.get("framework")
        if framework and tag not in DLC_TAGS[framework]:
            raise ValueError(f"{show(tag)}; accepted: a published {framework} training image tag: "
                             f"{_choices(DLC_TAGS[framework])}")
        return tag


class ServingConfig(_Section):
    """The Lambda serving stack (infra/aws_serving.py): runtime, size and limits of its function and API."""

    python_version: Literal[SERVING_PYTHONS] = _key("ernie:servingPython", _choices(SERVING_PYTHONS),
                                                   SERVING_PYTHONS[0])
    """Lambda runtime pythonX.Y the layers are built for."""
    architecture: Literal[ARCHES] = _key("ernie:servingArchitecture", _choices(ARCHES), ARCHES[0])
    memory_mb: Whole = _bounded("ernie:servingMemoryMb", 128, 10240, 1024, "MB (Lambda's range)")
    """Memory, and with it CPU: more makes the cold start's imports faster."""
    timeout_seconds: Whole = _bounded("ernie:servingTimeoutSeconds", 1, SERVING_MAX_TIMEOUT_SECONDS, 30,
                                      "seconds (the HTTP API gives up after 30)")
    log_retention_days: Annotated[Literal[LOG_RETENTION_DAYS], BeforeValidator(_whole)] = \
        _key("ernie:servingLogRetentionDays", f"a CloudWatch retention period: {_choices(LOG_RETENTION_DAYS)}", 14)
    throttle_rate: Whole = _bounded("ernie:servingThrottleRate", 1, 10000, 50, "requests per second")
    """Steady requests per second the HTTP API lets through."""
    throttle_burst: Whole = _bounded("ernie:servingThrottleBurst", 1, 5000, 100, "requests")
    reserved_concurrency: Whole = _bounded("ernie:servingReservedConcurrency", 1, SERVING_MAX_RESERVED_CONCURRENCY,
                                           SERVING_DEFAULT_RESERVED_CONCURRENCY, "instances running at once")
    """Instances of the function that may run at once (and that no other function of the account may take)."""
    embed: Flag = _key("ernie:servingEmbed", "true or false", False)
    # The encoder's activations for a full batch of long texts come on top of ONNX Runtime and the model.
    embed_memory_mb: Annotated[int | None, BeforeValidator(_whole)] = _bounded(
        "ernie:servingEmbedMemoryMb", 512, 10240, None, "MB (the embedding model needs 512; Lambda allows up to 10240)")
    """Memory of the second function, sentence embeddings (workloads/serving/embed.py, `ernie:servingEmbed`),
    which shares the settings above; None when it is not built."""

    @model_validator(mode="before")
    @classmethod
    def _embed_memory(cls, values: dict[str, Any]) -> dict[str, Any]:
        memory = values.get("ernie:servingEmbedMemoryMb")
        if not _switch(values, "ernie:servingEmbed"):
            if memory is not None:
                raise Problem("ernie:servingEmbedMemoryMb", f"{show(memory)}; set it only with "
                              "`ernie:servingEmbed: true`, which builds the embedding function")
            return values
        return {"ernie:servingEmbedMemoryMb": str(SERVING_EMBED_DEFAULT_MEMORY_MB), **values}


class StackConfig(_Section):
    """The whole validated configuration of one stack."""

    cloud: Cloud = _key("ernie:cloud", _choices(get_args(Cloud)))
    stack: str
    ttl_minutes: Whole = _key("ernie:ttlMinutes", f"minutes from 1 to {MAX_TTL_MINUTES} (one day) after which the "
                              "hosts are deleted, so a forgotten slice stops billing", ge=1, le=MAX_TTL_MINUTES)
    max_usd_per_hour: float = _key("ernie:maxUsdPerHour", "the most the stack's hosts and disks may cost, in USD per "
                                   "hour on demand (catalog/prices.csv), a number above 0, e.g. 60",
                                   gt=0, allow_inf_nan=False, strict=False)
    """The most the stack's hosts and disks may cost per hour on demand; the cost-ceiling guardrail checks it."""
    spot: Flag = _key("ernie:spot", "true or false", False)
    access: AccessConfig
    tpu: TpuConfig | None = None
    """Set when cloud is gcp."""
    gpu: GpuConfig | None = None
    """Set when cloud is aws."""
    serving: ServingConfig | None = Field(None, alias="ernie:serving")
    """Set when the aws stack also builds the Lambda serving stack (`ernie:serving: true`)."""

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, values: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Each section reads its keys from the same mapping; a valid cloud picks its sections and keys."""
        cloud = values.get("ernie:cloud")
        if cloud not in get_args(Cloud):
            return values
        # Every key the user set counts here, an empty one too: a misspelt key is refused even when blank.
        _refuse_unknown((info.context or {}).get("raw", values), cloud)
        sections = {name: values for name in SECTIONS[cloud]}
        if "ernie:serving" in sections and not _switch(values, "ernie:serving"):
            sections["ernie:serving"] = None
        return {**values, "access": values, "tpu": None, "gpu": None, "ernie:serving": None, **sections}

    @model_validator(mode="after")
    def _spot(self) -> StackConfig:
        if self.spot and self.tpu and not self.tpu.tpu.generation.spot:
            raise Problem("ernie:spot", f"true; accepted: false for TPU {self.tpu.tpu.generation.name}: Spot VMs are "
                                        "offered only for v4 and later")
        if self.spot and self.gpu and not self.gpu.instance.spot:
            raise Problem("ernie:spot", f"true; accepted: false for {self.gpu.instance.name}, which is not offered "
                          f"as Spot; Spot is offered for {_choices(t.name for t in INSTANCE_TYPES if t.spot)}")
        return self


SECTIONS = {"gcp": {"tpu": TpuConfig}, "aws": {"gpu": GpuConfig, "ernie:serving": ServingConfig}}
"""Each cloud's sections of StackConfig, by the field (or, for the optional serving stack, the key) that holds
them; every cloud also reads StackConfig's own keys and AccessConfig."""


def _keys(cloud: str) -> frozenset[str]:
    """The ernie keys a cloud's stack reads (without the namespace): its sections', and no other cloud's."""
    others = {key for c, sections in SECTIONS.items() if c != cloud for key in sections}
    fields = [f for model in (StackConfig, AccessConfig, *SECTIONS[cloud].values()) for f in model.model_fields.values()]
    return frozenset(f.alias.partition(":")[2] for f in fields
                     if f.alias and f.alias.startswith("ernie:") and f.alias not in others)


KEYS = {cloud: _keys(cloud) for cloud in get_args(Cloud)}
"""The ernie keys (without the namespace) each cloud's stack reads; any other ernie key is refused."""


def _refuse_unknown(values: Mapping[str, Any], cloud: str) -> None:
    """Only the ernie namespace is closed: other providers' keys (aws:profile, default tags) pass through."""
    own, other = KEYS[cloud], frozenset().union(*(keys for c, keys in KEYS.items() if c != cloud))
    for full in sorted(values):
        namespace, _, key = full.partition(":")
        if namespace != "ernie" or key in own:
            continue
        if key in other:
            raise Problem(full, f"{show(values[full])}; it applies to the other cloud, not {cloud}; remove it")
        near = difflib.get_close_matches(key, sorted(own | other), n=1)
        hint = f"did you mean ernie:{near[0]}? " if near else ""
        raise Problem(full, f"unknown key {show(values[full])}; {hint}the ernie keys for {cloud} are "
                            f"{', '.join(sorted(own))}")


def load() -> StackConfig:
    """Validate the running stack's configuration; raises ConfigError before any resource exists."""
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    raw = {k: runtime_config.get_config(k) for k in keys}
    return parse({k: v for k, v in raw.items() if v is not None}, pulumi.get_stack())


def parse(raw: Mapping[str, str], stack: str) -> StackConfig:
    """Validate raw config values (full keys, string values as Pulumi stores them); an empty value is unset."""
    try:
        return StackConfig.model_validate({**{k: v for k, v in raw.items() if v != ""}, "stack": stack},
                                          context={"raw": raw})
    except ValidationError as exc:
        error = explain(exc, StackConfig)
    key = error.field.rpartition(".")[2]  # a key is named in full, without the section that read it
    hint = (f" (`pulumi config set {key} VALUE`; Pulumi.gcp.yaml and Pulumi.aws.yaml show examples)"
            if error.problem.startswith("missing;") else "")
    raise ConfigError(f"{key}: {error.problem}{hint}")
