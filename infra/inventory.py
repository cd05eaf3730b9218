"""The inventory: the one output every stack exports, and the contract with ernie's remote runs.

Its shape is docs/inventory.md and its schema catalog/inventory.py, which this checks what it builds against and
ernie/inventory.py parses with (tests/unit/test_inventory_contract.py goes from this to that). Built by a pure function so the same shape comes from every stack, and tests can read it without Pulumi.
"""

from __future__ import annotations

from typing import Any

from catalog.inventory import Inventory, Runner
from catalog.pricing import Quote
from catalog.schema import SchemaError, read


def build_inventory(*, cloud: str, stack: str, runner: Runner, ssh_user: str, hosts: list[dict[str, Any]],
                    bucket: str, price: Quote, ttl_minutes: int,
                    ssh_private_key: str | None = None, ssh_key_path: str | None = None,
                    image: str | None = None, serving_url: str | None = None,
                    embed_url: str | None = None, bootstrap: dict[str, Any] | None = None,
                    registry_login: dict[str, str] | None = None,
                    container: dict[str, Any] | None = None) -> dict[str, Any]:
    """The inventory document. Exactly one of `ssh_private_key` (made by the stack) and `ssh_key_path`."""
    if (ssh_private_key is None) == (ssh_key_path is None):
        raise ValueError("an inventory names exactly one of ssh_private_key and ssh_key_path")
    inventory: dict[str, Any] = {"cloud": cloud, "stack": stack, "ssh_user": ssh_user}
    inventory.update({"ssh_private_key": ssh_private_key} if ssh_private_key is not None
                     else {"ssh_key_path": ssh_key_path})
    inventory["runner"] = runner
    if image is not None:
        inventory["image"] = image
    # How ernie knows the host's boot script is done, signs the login user in, and runs containers.
    for key, value in (("bootstrap", bootstrap), ("registry_login", registry_login), ("container", container)):
        if value is not None:
            inventory[key] = value
    inventory.update({"hosts": sorted(hosts, key=lambda h: h["worker"]), "bucket": bucket,
                      "price_per_hour_usd": price.usd_per_hour, "price_source": price.source,
                      "ttl_minutes": ttl_minutes})
    if serving_url is not None:
        inventory["serving_url"] = serving_url
    if embed_url is not None:
        inventory["embed_url"] = embed_url
    try:  # the consumer's own schema: what it would refuse fails here, in the program, before any host waits
        read(Inventory, inventory)
    except SchemaError as exc:
        raise ValueError(f"the program's inventory breaks its contract (docs/inventory.md): {exc}") from None
    return inventory
