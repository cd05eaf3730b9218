"""The inventory: which hosts a run uses and how to reach them (docs/inventory.md, the contract).

Three sources, one validated shape: a Pulumi stack's `inventory` output (through `ernie.pulumi_cli`),
a hand-written JSON file, or this machine alone (`--local`). Every field is checked before anything
connects, and an error names the field and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from catalog.inventory import (  # noqa: F401 - the inventory's types the driver imports from here
    Bootstrap, ContainerOptions, Host, Inventory, RegistryLogin, Runner)
from catalog.schema import SchemaError, read
from ernie.errors import ErnieError


def local_inventory() -> Inventory:
    """This machine as the only host, started by the local runner (no SSH)."""
    return parse_inventory({
        "cloud": "local", "stack": "local", "runner": "local", "price_per_hour_usd": 0.0,
        "price_source": "this machine: no charge",
        "hosts": [{"name": "local", "address": "127.0.0.1", "private_address": "127.0.0.1", "worker": 0}],
    }, source="--local")


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
    """Validate an inventory document (catalog/inventory.py's schema); every problem names `source`, the field and
    what is accepted."""
    if not isinstance(data, dict):
        raise ErnieError(f"{source}: inventory: expected a JSON object, got {type(data).__name__}")
    try:
        inventory = read(Inventory, data, source=source)
    except SchemaError as exc:
        raise ErnieError(f"{source}: {exc}") from None
    key_path = inventory.ssh_key_path
    if inventory.runner != "local" and key_path and not inventory.ssh_private_key \
            and not Path(key_path).expanduser().is_file():
        raise ErnieError(f"{source}: ssh_key_path: {key_path} is not a file")
    return inventory


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
