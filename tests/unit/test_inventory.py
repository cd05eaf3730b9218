"""The inventory: three sources, one validated shape, and errors that name the field and the fix."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ernie.errors import ErnieError
from ernie.inventory import load_inventory_file, local_inventory, parse_inventory, resolve_inventory
from ernie.pulumi_cli import PulumiCli

PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-material\n-----END OPENSSH PRIVATE KEY-----\n"


def good(**overrides: object) -> dict:
    inv = {
        "cloud": "gcp", "stack": "gcp", "ssh_user": "ernie", "ssh_private_key": PEM, "runner": "tpu-vm",
        "hosts": [
            {"name": "w1", "address": "203.0.113.11", "private_address": "10.0.0.11", "worker": 1,
             "accelerator": "v4-16", "chips": 4},
            {"name": "w0", "address": "203.0.113.10", "private_address": "10.0.0.10", "worker": 0,
             "accelerator": "v4-16", "chips": 4},
        ],
        "price_per_hour_usd": 12.88, "price_source": "GCP list price, 2026-11", "ttl_minutes": 180,
    }
    inv.update(overrides)
    return inv


def test_a_valid_inventory_is_ordered_by_worker_and_its_public_copy_holds_no_secret() -> None:
    inv = parse_inventory(good(), source="stack gcp")
    assert [h.name for h in inv.hosts] == ["w0", "w1"]
    assert inv.coordinator.private_address == "10.0.0.10"
    public = json.dumps(inv.public())
    assert "secret-material" not in public and "ssh" not in public
    assert inv.public()["hosts"][1] == {"name": "w1", "worker": 1, "accelerator": "v4-16", "chips": 4}


@pytest.mark.parametrize(("change", "field"), [
    ({"runner": "slurm"}, "runner"),
    ({"cloud": "azure"}, "cloud"),
    ({"hosts": []}, "hosts"),
    ({"ssh_user": None}, "ssh_user"),
    ({"ssh_private_key": None}, "ssh_private_key"),
    ({"runner": "docker"}, "image"),
    ({"price_per_hour_usd": -1}, "price_per_hour_usd"),
    ({"ttl_minutes": 0}, "ttl_minutes"),
    ({"hosts": [{"name": "w0", "address": "a", "worker": 0}, {"name": "w1", "address": "b", "worker": 0}]},
     "hosts[].worker"),
    ({"hosts": [{"name": "w0", "address": "a", "worker": 0}, {"name": "w0", "address": "b", "worker": 1}]},
     "hosts"),
    ({"hosts": [{"name": "../evil", "address": "a", "worker": 0}]}, "hosts[0].name"),
    ({"hosts": [{"name": "w0", "worker": 0}]}, "hosts[0].address"),
    ({"hosts": [{"name": "w0", "address": "a", "worker": 0, "chips": 0}]}, "hosts[0].chips"),
    ({"ssh_private_key": None, "ssh_key_path": "/nonexistent/key"}, "ssh_key_path"),
])
def test_bad_fields_are_named(change: dict, field: str) -> None:
    with pytest.raises(ErnieError) as err:
        parse_inventory(good(**change), source="--inventory inv.json")
    assert str(err.value).startswith(f"--inventory inv.json: {field}:")


def test_malformed_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "inv.json"
    path.write_text('{"runner": "tpu-vm", "hosts": [')
    with pytest.raises(ErnieError, match=r"inv.json: not valid JSON \(line 1"):
        load_inventory_file(path)
    with pytest.raises(ErnieError, match="cannot read it"):
        load_inventory_file(tmp_path / "missing.json")


def test_an_unset_stack_name_defaults_to_the_cloud() -> None:
    """A stack output may leave `stack` blank or null, as a hand-written file may omit it."""
    for value in ("", None):
        assert parse_inventory(good(stack=value), source="stack gcp").stack == "gcp"
    unset = good()
    del unset["stack"]
    assert parse_inventory(unset, source="--inventory f").stack == "gcp"


def test_local_inventory_is_this_machine_alone() -> None:
    inv = local_inventory()
    assert inv.runner == "local" and [h.name for h in inv.hosts] == ["local"]
    assert resolve_inventory(None, None, True) == inv


def test_exactly_one_source_must_be_chosen(tmp_path: Path) -> None:
    with pytest.raises(ErnieError, match="exactly one of -s STACK, --inventory FILE or --local"):
        resolve_inventory(None, None, False)
    with pytest.raises(ErnieError, match="got -s and --local"):
        resolve_inventory("gcp", None, True)


def test_missing_pulumi_cli_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERNIE_PULUMI", "pulumi-not-installed-here")
    with pytest.raises(ErnieError, match=r"Pulumi CLI is not installed.*get\.pulumi\.com"):
        resolve_inventory("gcp", None, False)


def _fake_pulumi(tmp_path: Path, body: str) -> Path:
    exe = tmp_path / "pulumi"
    exe.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/calls\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_stack_inventory_goes_through_the_seam_with_secrets_shown(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "inv.json").write_text(json.dumps(good()))
    monkeypatch.setenv("ERNIE_PULUMI", str(_fake_pulumi(tmp_path, f"cat {tmp_path}/inv.json")))
    inv = resolve_inventory("gcp", None, False)
    assert inv.source == "stack gcp" and inv.ssh_private_key == PEM
    call = (tmp_path / "calls").read_text().split()
    assert call[:6] == ["stack", "output", "inventory", "--json", "--show-secrets", "-s"] and call[6] == "gcp"


def test_pulumi_failures_are_user_errors(tmp_path: Path) -> None:
    cli = PulumiCli(executable=str(_fake_pulumi(tmp_path, "echo 'error: no stack named gcp' >&2; exit 255")))
    with pytest.raises(ErnieError, match="no stack named gcp.*pulumi up -s gcp"):
        cli.inventory("gcp")
    with pytest.raises(ErnieError, match="`pulumi destroy -s gcp` failed with exit status 255"):
        cli.destroy("gcp")
    assert os.path.exists(tmp_path / "calls")


def test_one_schema_words_every_problem_and_the_producer_is_held_to_it() -> None:
    """catalog/schema.py: the path as a user writes it, the closest known key, no coercion; and infra's producer
    refuses what the consumer would (the same models, catalog/inventory.py)."""
    from catalog.pricing import Quote
    from infra.inventory import build_inventory

    cases = [
        ({"bootstrap": {"done_file": "/r", "tmeout_s": 3}},
         "bootstrap.tmeout_s: unknown key; did you mean timeout_s? known: done_file, failed_file, log_file, timeout_s"),
        ({"hosts": [{"name": "w0", "address": "a", "worker": "0"}]}, "hosts[0].worker: expected a whole number, got '0'"),
        ({"price_per_hour_usd": True}, "price_per_hour_usd: expected a number, got True"),
        ({"cloud": "azure"}, "cloud: 'azure' is not one of gcp, aws, local"),
        ({"hosts": [{"name": "w0", "address": "", "worker": 0}]}, "hosts[0].address: required: the address ernie"),
    ]
    for change, message in cases:
        with pytest.raises(ErnieError) as err:
            parse_inventory(good(**change), source="f")
        assert str(err.value).startswith(f"f: {message}")
    hosts = [{"name": "w0", "address": "a", "worker": 0}, {"name": "w1", "address": "b", "worker": 0}]
    with pytest.raises(ValueError, match=r"breaks its contract .*hosts\[\]\.worker: expected each of 0\.\.1 exactly"):
        build_inventory(cloud="gcp", stack="gcp", runner="tpu-vm", ssh_user="ernie", hosts=hosts, bucket="gs://b",
                        price=Quote(1.0, "test"), ttl_minutes=60, ssh_private_key=PEM)
