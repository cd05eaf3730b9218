"""The inventory's schema, one definition for its producer (infra/inventory.py, which checks what it exports
against it) and its consumer (ernie/inventory.py, which reads every source through it); the whole contract is
docs/inventory.md."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, PrivateAttr, field_serializer, field_validator, \
    ValidationInfo, model_validator

from catalog.schema import Problem, Schema

Runner = Literal["tpu-vm", "docker", "local"]
"""How a run starts the workload on each host: on the TPU VM itself, in a container, or on this machine."""
RUNNERS: tuple[str, ...] = get_args(Runner)
Cloud = Literal["gcp", "aws", "local"]
CLOUDS: tuple[str, ...] = get_args(Cloud)

# A host's name becomes a directory under results/RUN_ID/. Matched whole: `$` would let a newline through.
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ULIMIT = re.compile(r"[a-z]+=-?\d+(:-?\d+)?")
_ABS_PATH = re.compile(r"/[A-Za-z0-9._/-]*")
_HOME_PATH = re.compile(r"(~/|/)[A-Za-z0-9._/-]*")  # ~/ is the login user's home
_REGISTRY = re.compile(r"[A-Za-z0-9.-]+(:\d+)?")


def _matching(pattern: re.Pattern[str], problem: str):
    """A string validator: `problem` (formatted with the value's repr) unless the whole value matches."""
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(problem.format(repr(value)))
        return value
    return AfterValidator(check)


def _required(what: str):
    def check(value: str) -> str:
        if not value:
            raise ValueError(f"required: {what}")
        return value
    return AfterValidator(check)


# An empty string reads as an absent value (a stack output left blank).
OptionalText = Annotated[str | None, BeforeValidator(lambda value: None if value == "" else value)]
HomePath = Annotated[str, _matching(_HOME_PATH, "{} is not a plain absolute path (or one under ~/)")]


class Host(Schema):
    """One worker."""

    model_config = ConfigDict(extra="ignore")  # docs/inventory.md: a host's unknown fields are ignored

    name: Annotated[str, _matching(HOST_NAME, "{} is not a plain host name (letters, digits, . _ -; at most 63; "
                                              "it becomes a directory under results/RUN_ID/)")] = \
        Field(description="a plain host name (letters, digits, . _ -)")
    address: Annotated[str, _required("the address ernie connects to")] = \
        Field(description="the address ernie connects to")
    private_address: str = ""  # what the other workers use (ERNIE_COORDINATOR_ADDRESS for worker 0); default address
    worker: int = Field(ge=0, description="the worker's index, each of 0..N-1 once")
    accelerator: str = "cpu"
    chips: int = Field(1, ge=1)
    port: int = Field(22, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _private_defaults_to_address(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("private_address") and isinstance(data.get("address"), str):
            return {**data, "private_address": data["address"]}
        return data


class Bootstrap(Schema):
    """What a host's first-boot script leaves behind: ernie sets nothing up before `done_file` exists."""

    done_file: HomePath = Field(description="the file the host's boot script writes when it is done")
    failed_file: HomePath | None = None
    """Written when the boot script fails: ernie stops waiting at once and shows `log_file`'s tail."""
    log_file: HomePath | None = None
    timeout_s: float = Field(1800.0, gt=0)


class RegistryLogin(Schema):
    """How the login user signs in to the image's registry before pulling: `password_command | docker login`."""

    registry: Annotated[str, _matching(_REGISTRY, "{} is not a registry host[:port]")] = \
        Field(description="the registry's host[:port]")
    username: Annotated[str, _required("the registry user")] = Field(description="the registry user")
    password_command: Annotated[str, _required("a command that prints the password")] = \
        Field(description="a command that prints the password")
    """Run on the host as the login user; prints the password (e.g. `aws ecr get-login-password --region R`)."""


def _device(device: str) -> str:
    if not all(_ABS_PATH.fullmatch(p) for p in device.split(":", 1)):
        raise ValueError(f"{device!r} is not a plain absolute device path (HOST[:CONTAINER], as `docker run "
                         "--device` takes it)")
    return device


class ContainerOptions(Schema):
    """What the stack says every container needs beyond the GPUs (EFA: its devices, unlimited memlock, NCCL's
    libfabric settings)."""

    devices: tuple[Annotated[str, AfterValidator(_device)], ...] = ()
    ulimits: tuple[Annotated[str, _matching(_ULIMIT, "{} is not NAME=SOFT[:HARD] (e.g. memlock=-1:-1)")], ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # sorted; an object {NAME: value} in the document

    @field_validator("env", mode="before")
    @classmethod
    def _env_object(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        for name, text in value.items():
            if not _ENV_NAME.fullmatch(name) or not isinstance(text, str):
                raise Problem(name, "expected a variable name and a string value")
        return tuple(sorted(value.items()))

    @field_serializer("env")
    def _env_as_object(self, env: tuple[tuple[str, str], ...]) -> dict[str, str]:
        return dict(env)


class Inventory(Schema):
    """A validated inventory. `ssh_private_key` is a secret: it is never written anywhere by ernie."""

    model_config = ConfigDict(extra="ignore")  # docs/inventory.md: unknown top-level fields are ignored

    cloud: Cloud = "local"
    # default: the cloud, also when blank or null (a stack output left unset)
    stack: Annotated[str, BeforeValidator(lambda value: "" if value is None else value)] = \
        Field(default_factory=lambda data: data.get("cloud", "local"))
    runner: Runner = Field(description=f"how runs start on the hosts: {', '.join(RUNNERS)}")
    hosts: tuple[Host, ...] = Field(min_length=1, description="a non-empty list of {name, address, worker, ...}")
    ssh_user: OptionalText = None
    ssh_private_key: OptionalText = Field(None, repr=False)  # out of every repr, traceback and log
    ssh_key_path: OptionalText = None
    image: OptionalText = None
    bucket: OptionalText = None
    price_per_hour_usd: float = Field(0.0, ge=0)
    price_source: OptionalText = None
    ttl_minutes: int | None = Field(None, ge=1)
    serving_url: OptionalText = None
    embed_url: OptionalText = None
    """The sentence-embedding endpoint (ernie:servingEmbed), beside serving_url."""
    bootstrap: Bootstrap | None = None
    registry_login: RegistryLogin | None = None
    container: ContainerOptions = ContainerOptions()
    _source: str = PrivateAttr("inventory")

    def model_post_init(self, context: Any) -> None:
        self._source = (context or {}).get("source", "inventory")

    @property
    def source(self) -> str:
        """Where it came from (`stack gcp`, `--inventory FILE`, `--local`), for error messages."""
        return self._source

    @property
    def coordinator(self) -> Host:
        """Worker 0."""
        return self.hosts[0]

    @field_validator("stack")
    @classmethod
    def _stack_defaults_to_cloud(cls, stack: str, info: ValidationInfo) -> str:
        return stack or info.data.get("cloud", "local")

    @field_validator("hosts")
    @classmethod
    def _workers_once_each(cls, hosts: tuple[Host, ...]) -> tuple[Host, ...]:
        names = [h.name for h in hosts]
        if len(set(names)) != len(names):
            raise ValueError(f"host names must be unique, got {names}")
        workers = sorted(h.worker for h in hosts)
        if workers != list(range(len(hosts))):
            raise Problem("[].worker", f"expected each of 0..{len(hosts) - 1} exactly once, got {workers}")
        return tuple(sorted(hosts, key=lambda h: h.worker))

    @model_validator(mode="after")
    def _runner_needs(self) -> Inventory:
        if self.runner == "docker" and not self.image:
            raise Problem("image", "the docker runner needs the container image URI (e.g. an AWS Deep Learning "
                                   "Container)")
        if self.runner != "local":
            if not self.ssh_user:
                raise Problem("ssh_user", "required: the user ernie logs in as (e.g. \"ernie\")")
            if not self.ssh_private_key and not self.ssh_key_path:
                raise Problem("ssh_private_key", "required: give the private key (PEM) or ssh_key_path (a key file)")
        return self

    def public(self) -> dict[str, Any]:
        """The copy that goes into manifest.json and run.json: no secret, no key path."""
        return {
            "cloud": self.cloud, "stack": self.stack, "runner": self.runner, "image": self.image,
            "price_per_hour_usd": self.price_per_hour_usd, "price_source": self.price_source,
            "ttl_minutes": self.ttl_minutes,
            "hosts": [{"name": h.name, "worker": h.worker, "accelerator": h.accelerator, "chips": h.chips}
                      for h in self.hosts],
        }
