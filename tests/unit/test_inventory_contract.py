"""The inventory contract (docs/inventory.md), end to end: what the program exports (infra/inventory.py, run under
Pulumi's mocks as `ernie check` runs it) parsed by the driver (ernie/inventory.py) gives the same hosts and
every field; a field the producer exports and the consumer drops fails here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from catalog.pricing import Quote
from ernie.check import plan
from ernie.inventory import ContainerOptions, Inventory, parse_inventory
from infra.inventory import build_inventory

REPO = Path(__file__).resolve().parents[2]


def stack_inventory(tmp_path: Path, stack: str, changes: dict[str, Any]) -> dict[str, Any]:
    """The `inventory` output of a committed stack file with some values changed, under mocks."""
    config = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    config.update(changes)
    path = tmp_path / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return plan(config_file=path).inventory


def exported_as_parsed(parsed: Inventory) -> dict[str, Any]:
    """The parsed inventory written back in the exported shape (the fields the producer can set)."""
    hosts = [{"name": h.name, "address": h.address, "private_address": h.private_address, "worker": h.worker,
              "accelerator": h.accelerator, "chips": h.chips} for h in parsed.hosts]
    container = parsed.container
    back = {"cloud": parsed.cloud, "stack": parsed.stack, "runner": parsed.runner, "ssh_user": parsed.ssh_user,
            "ssh_private_key": parsed.ssh_private_key, "ssh_key_path": parsed.ssh_key_path, "image": parsed.image,
            "hosts": hosts, "bucket": parsed.bucket, "price_per_hour_usd": parsed.price_per_hour_usd,
            "price_source": parsed.price_source, "ttl_minutes": parsed.ttl_minutes,
            "serving_url": parsed.serving_url, "embed_url": parsed.embed_url,
            "bootstrap": parsed.bootstrap and {k: v for k, v in vars(parsed.bootstrap).items() if v is not None},
            "registry_login": parsed.registry_login and vars(parsed.registry_login),
            "container": {"devices": list(container.devices), "ulimits": list(container.ulimits),
                          "env": dict(container.env)} if container != ContainerOptions() else None}
    return {k: v for k, v in back.items() if v is not None}


def assert_round_trip(exported: dict[str, Any]) -> Inventory:
    parsed = parse_inventory(exported, source="test")
    back = exported_as_parsed(parsed)
    if "bootstrap" in exported:  # the consumer fills in the default wait; the rest must be what was exported
        back["bootstrap"] = {k: v for k, v in back["bootstrap"].items() if k in exported["bootstrap"]}
    assert set(back) == set(exported), f"exported but not parsed: {sorted(set(exported) - set(back))}"
    assert back == exported
    return parsed


@pytest.mark.parametrize(("stack", "changes", "workers"), [
    ("gcp", {"ernie:tpuType": "v4-32", "gcp:zone": "us-central2-b",
             "ernie:runtimeVersion": "tpu-vm-tf-2.20.0-pod-pjrt"}, 4),
    ("aws", {"ernie:instanceType": "p4d.24xlarge", "ernie:instanceCount": 2}, 2),  # EFA: container options too
])
def test_the_programs_inventory_parses_to_the_same_hosts_and_fields(tmp_path, stack, changes, workers) -> None:
    exported = stack_inventory(tmp_path, stack, changes)
    parsed = assert_round_trip(exported)
    assert [h.worker for h in parsed.hosts] == list(range(workers))
    assert [(h.name, h.address, h.private_address, h.accelerator, h.chips) for h in parsed.hosts] == \
        [(h["name"], h["address"], h["private_address"], h["accelerator"], h["chips"]) for h in exported["hosts"]]
    assert parsed.coordinator.private_address == exported["hosts"][0]["private_address"]


def test_every_optional_field_the_producer_has_is_parsed() -> None:
    """build_inventory with everything set, serving_url and embed_url included (the serving stack's pip build
    is what the mocks would cost to get them from the program)."""
    exported = build_inventory(
        cloud="aws", stack="aws", runner="docker", ssh_user="ubuntu", ssh_key_path=__file__,
        hosts=[{"name": "gpu-1", "address": "198.51.100.2", "private_address": "10.0.0.2", "worker": 1,
                "accelerator": "A100", "chips": 8},
               {"name": "gpu-0", "address": "198.51.100.1", "private_address": "10.0.0.1", "worker": 0,
                "accelerator": "A100", "chips": 8}],
        bucket="s3://b/aws/", price=Quote(65.5, "prices.csv: 2 x p4d"), ttl_minutes=180, image="img:tag",
        serving_url="https://s.example/", embed_url="https://e.example/",
        bootstrap={"done_file": "/var/lib/ernie/done", "failed_file": "/var/lib/ernie/failed",
                   "log_file": "/var/log/user-data.log", "timeout_s": 900.0},
        registry_login={"registry": "1.dkr.ecr.us-east-1.amazonaws.com", "username": "AWS",
                        "password_command": "aws ecr get-login-password --region us-east-1"},
        container={"devices": ["/dev/infiniband/uverbs0"], "ulimits": ["memlock=-1:-1"],
                   "env": {"FI_PROVIDER": "efa"}})
    parsed = assert_round_trip(exported)
    assert (parsed.serving_url, parsed.embed_url) == ("https://s.example/", "https://e.example/")
    assert [h.name for h in parsed.hosts] == ["gpu-0", "gpu-1"]
