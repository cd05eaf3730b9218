"""The inventory: which hosts a run uses and how to reach them (docs/inventory.md, the contract).

Three sources, one validated shape: a Pulumi stack's `inventory` output (through `ernie.pulumi_cli`),
a hand-written JSON file, or this machine alone (`--local`). Every field is checked before anything
connects, and an error names the field and the fix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from catalog.inventory import RUNNERS, Runner
from ernie.errors import ErnieError
from ernie.names import HOST_NAME

Cloud = Literal["gcp", "aws", "local"]
CLOUDS: tuple[str, ...] = get_args(Cloud)


@dataclass(frozen=True)
class Host:
    """One worker."""

    name: str
    address: str  # where ernie connects
    private_address: str  # what the other workers use (ERNIE_COORDINATOR_ADDRESS for worker 0)
    worker: int
    accelerator: str = "cpu"
    chips: int = 1
    port: int = 22


@dataclass(frozen=True)
class Bootstrap:
    """What a host's first-boot script leaves behind: ernie sets nothing up before `done_file` exists."""

    done_file: str
    failed_file: str | None = None
    """Written when the boot script fails: ernie stops waiting at once and shows `log_file`'s tail."""
    log_file: str | None = None
    timeout_s: float = 1800.0


@dataclass(frozen=True)
class RegistryLogin:
    """How the login user signs in to the image's registry before pulling: `password_command | docker login`."""

    registry: str
    username: str
    password_command: str
    """Run on the host as the login user; prints the password (e.g. `aws ecr get-login-password --region R`)."""


@dataclass(frozen=True)
class ContainerOptions:
    """What the stack says every container needs beyond the GPUs (EFA: its devices, unlimited memlock, NCCL's
    libfabric settings)."""

    devices: tuple[str, ...] = ()
    ulimits: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Inventory:
    """A validated inventory. `ssh_private_key` is a secret: it is never written anywhere by ernie."""

    cloud: Cloud
    stack: str
    runner: Runner
    hosts: tuple[Host, ...]
    ssh_user: str | None = None
    ssh_private_key: str | None = field(default=None, repr=False)  # out of every repr, traceback and log
    ssh_key_path: str | None = None
    image: str | None = None
    bucket: str | None = None
    price_per_hour_usd: float = 0.0
    price_source: str | None = None
    ttl_minutes: int | None = None
    serving_url: str | None = None
    embed_url: str | None = None
    """The sentence-embedding endpoint (ernie:servingEmbed), beside serving_url."""
    bootstrap: Bootstrap | None = None
    registry_login: RegistryLogin | None = None
    container: ContainerOptions = ContainerOptions()
    source: str = "inventory"  # where it came from, for error messages

    @property
    def coordinator(self) -> Host:
        """Worker 0."""
        return self.hosts[0]

    def public(self) -> dict[str, Any]:
        """The copy that goes into manifest.json and run.json: no secret, no key path."""
        return {
            "cloud": self.cloud, "stack": self.stack, "runner": self.runner, "image": self.image,
            "price_per_hour_usd": self.price_per_hour_usd, "price_source": self.price_source,
            "ttl_minutes": self.ttl_minutes,
            "hosts": [{"name": h.name, "worker": h.worker, "accelerator": h.accelerator, "chips": h.chips}
                      for h in self.hosts],
        }


def local_inventory() -> Inventory:
    """This machine as the only host, started by the local runner (no SSH)."""
    return Inventory(
        cloud="local", stack="local", runner="local", source="--local",
        hosts=(Host(name="local", address="127.0.0.1", private_address="127.0.0.1", worker=0),),
        price_per_hour_usd=0.0, price_source="this machine: no charge",
    )


def load_inventory_file(path: Path) -> Inventory:
    """Read and validate a hand-written inventory file (the same shape as a stack's output)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ErnieError(f"--inventory {path}: cannot read it ({exc.strerror})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ErnieError(f"--inventory {path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    return parse_inventory(data, source=f"--inventory {path}")


def parse_inventory(data: Any, source: str) -> Inventory:
    """Validate an inventory dict; every problem names `source`, the field and what is accepted."""

    def fail(field: str, problem: str) -> ErnieError:
        return ErnieError(f"{source}: {field}: {problem}")

    if not isinstance(data, dict):
        raise fail("inventory", f"expected a JSON object, got {type(data).__name__}")
    cloud = data.get("cloud", "local")
    if cloud not in CLOUDS:
        raise fail("cloud", f"{cloud!r} is not one of {', '.join(CLOUDS)}")
    runner = data.get("runner")
    if runner not in RUNNERS:
        raise fail("runner", f"{runner!r} is not one of {', '.join(RUNNERS)}")
    stack = _opt_str(data, "stack", fail) or cloud
    image = _opt_str(data, "image", fail)
    if runner == "docker" and not image:
        raise fail("image", "the docker runner needs the container image URI (e.g. an AWS Deep Learning Container)")

    user = _opt_str(data, "ssh_user", fail)
    key = _opt_str(data, "ssh_private_key", fail)
    key_path = _opt_str(data, "ssh_key_path", fail)
    if runner != "local":
        if not user:
            raise fail("ssh_user", "missing: the user ernie logs in as (e.g. \"ernie\")")
        if not key and not key_path:
            raise fail("ssh_private_key", "missing: give the private key (PEM) or ssh_key_path (a key file)")
        if key_path and not key and not Path(key_path).expanduser().is_file():
            raise fail("ssh_key_path", f"{key_path} is not a file")

    raw_hosts = data.get("hosts")
    if not isinstance(raw_hosts, list) or not raw_hosts:
        raise fail("hosts", "expected a non-empty list of {name, address, worker, ...}")
    hosts = [_parse_host(h, i, fail) for i, h in enumerate(raw_hosts)]
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise fail("hosts", f"host names must be unique, got {names}")
    workers = sorted(h.worker for h in hosts)
    if workers != list(range(len(hosts))):
        raise fail("hosts[].worker", f"expected each of 0..{len(hosts) - 1} exactly once, got {workers}")

    price = data.get("price_per_hour_usd", 0.0)
    if not isinstance(price, (int, float)) or isinstance(price, bool) or price < 0:
        raise fail("price_per_hour_usd", f"expected a number >= 0, got {price!r}")
    ttl = data.get("ttl_minutes")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1):
        raise fail("ttl_minutes", f"expected a whole number of minutes >= 1 or null, got {ttl!r}")
    return Inventory(
        cloud=cloud, stack=stack, runner=runner, image=image,
        hosts=tuple(sorted(hosts, key=lambda h: h.worker)),
        ssh_user=user, ssh_private_key=key, ssh_key_path=key_path,
        bucket=_opt_str(data, "bucket", fail), price_per_hour_usd=float(price),
        price_source=_opt_str(data, "price_source", fail), ttl_minutes=ttl,
        serving_url=_opt_str(data, "serving_url", fail), embed_url=_opt_str(data, "embed_url", fail),
        bootstrap=_parse_bootstrap(data.get("bootstrap"), fail),
        registry_login=_parse_registry_login(data.get("registry_login"), fail),
        container=_parse_container(data.get("container"), fail), source=source,
    )


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ULIMIT = re.compile(r"[a-z]+=-?\d+(:-?\d+)?")
_ABS_PATH = re.compile(r"/[A-Za-z0-9._/-]*")
_HOME_PATH = re.compile(r"(~/|/)[A-Za-z0-9._/-]*")  # ~/ is the login user's home


def _object(raw: Any, key: str, fields: dict[str, type], fail) -> dict[str, Any] | None:
    """An optional object whose fields have the given types (unknown fields refused)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise fail(key, f"expected an object with {', '.join(fields)}, got {type(raw).__name__}")
    for name, value in raw.items():
        if name not in fields:
            raise fail(f"{key}.{name}", f"unknown field (known: {', '.join(fields)})")
        if not isinstance(value, fields[name]) or isinstance(value, bool):
            kind = getattr(fields[name], "__name__", "a number")
            raise fail(f"{key}.{name}", f"expected {kind}, got {value!r}")
    return raw


def _parse_bootstrap(raw: Any, fail) -> Bootstrap | None:
    data = _object(raw, "bootstrap", {"done_file": str, "failed_file": str, "log_file": str,
                                      "timeout_s": (int, float)}, fail)
    if data is None:
        return None
    for key in ("done_file", "failed_file", "log_file"):
        if key in data and not _HOME_PATH.fullmatch(data[key]):
            raise fail(f"bootstrap.{key}", f"{data[key]!r} is not a plain absolute path (or one under ~/)")
    if "done_file" not in data:
        raise fail("bootstrap.done_file", "missing: the file the host's boot script writes when it is done")
    if data.get("timeout_s", 1) <= 0:
        raise fail("bootstrap.timeout_s", f"expected seconds > 0, got {data['timeout_s']!r}")
    return Bootstrap(**{**data, "timeout_s": float(data.get("timeout_s", Bootstrap.timeout_s))})


def _parse_registry_login(raw: Any, fail) -> RegistryLogin | None:
    data = _object(raw, "registry_login", {"registry": str, "username": str, "password_command": str}, fail)
    if data is None:
        return None
    for key in ("registry", "username", "password_command"):
        if not data.get(key):
            raise fail(f"registry_login.{key}", "missing")
    if not re.fullmatch(r"[A-Za-z0-9.-]+(:\d+)?", data["registry"]):
        raise fail("registry_login.registry", f"{data['registry']!r} is not a registry host[:port]")
    return RegistryLogin(**data)


def _parse_container(raw: Any, fail) -> ContainerOptions:
    data = _object(raw, "container", {"devices": list, "ulimits": list, "env": dict}, fail) or {}
    devices, ulimits, env = data.get("devices", []), data.get("ulimits", []), data.get("env", {})
    for device in devices:
        if not isinstance(device, str) or not all(_ABS_PATH.fullmatch(p) for p in device.split(":", 1)):
            raise fail("container.devices", f"{device!r} is not a plain absolute device path "
                                            "(HOST[:CONTAINER], as `docker run --device` takes it)")
    for ulimit in ulimits:
        if not isinstance(ulimit, str) or not _ULIMIT.fullmatch(ulimit):
            raise fail("container.ulimits", f"{ulimit!r} is not NAME=SOFT[:HARD] (e.g. memlock=-1:-1)")
    for name, value in env.items():
        if not _ENV_NAME.fullmatch(name) or not isinstance(value, str):
            raise fail(f"container.env.{name}", "expected a variable name and a string value")
    return ContainerOptions(tuple(devices), tuple(ulimits), tuple(sorted(env.items())))


def _opt_str(data: dict, key: str, fail) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise fail(key, f"expected a string, got {type(value).__name__}")
    return value or None


def _parse_host(raw: Any, index: int, fail) -> Host:
    where = f"hosts[{index}]"
    if not isinstance(raw, dict):
        raise fail(where, f"expected an object, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not HOST_NAME.fullmatch(name):
        raise fail(f"{where}.name", f"{name!r} is not a plain host name (letters, digits, . _ -; at most 63; "
                                    "it becomes a directory under results/RUN_ID/)")
    address = raw.get("address")
    if not isinstance(address, str) or not address:
        raise fail(f"{where}.address", "missing: the address ernie connects to")
    private = raw.get("private_address") or address
    if not isinstance(private, str):
        raise fail(f"{where}.private_address", f"expected a string, got {private!r}")
    ints = {}
    for key, default, low in (("worker", None, 0), ("chips", 1, 1), ("port", 22, 1)):
        value = raw.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise fail(f"{where}.{key}", f"expected a whole number >= {low}, got {value!r}")
        ints[key] = value
    accelerator = raw.get("accelerator", "cpu")
    if not isinstance(accelerator, str):
        raise fail(f"{where}.accelerator", f"expected a string, got {accelerator!r}")
    return Host(name=name, address=address, private_address=private, accelerator=accelerator, **ints)


def resolve_inventory(stack: str | None, inventory_file: Path | None, local: bool) -> Inventory:
    """The inventory chosen on the command line: exactly one of `-s STACK`, `--inventory FILE`, `--local`."""
    chosen = [flag for flag, on in (("-s", stack), ("--inventory", inventory_file), ("--local", local)) if on]
    if len(chosen) != 1:
        raise ErnieError("choose the hosts with exactly one of -s STACK, --inventory FILE or --local"
                         + (f" (got {' and '.join(chosen)})" if chosen else ""))
    if local:
        return local_inventory()
    if inventory_file is not None:
        return load_inventory_file(inventory_file)
    from ernie.pulumi_cli import PulumiCli  # only a stack inventory needs the Pulumi CLI

    return parse_inventory(PulumiCli().inventory(stack), source=f"stack {stack}")
