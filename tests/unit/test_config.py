"""Config validation, the TPU/GPU catalogs and the price catalog: the facts ernie checks configs against."""

from __future__ import annotations

import csv
import json
import runpy
from pathlib import Path

import pulumi
import pytest
import yaml

from infra import config
from infra.config import ConfigError, parse
from catalog.gpu_catalog import DLC_TAGS, INSTANCE_TYPES, dlc_image
from catalog.pricing import PRICES_CSV, catalog, quote
from catalog.tpu_catalog import GENERATIONS, framework_problem, lookup_tpu, runtime_problem

REPO = Path(__file__).resolve().parents[2]


def committed(stack: str) -> dict[str, str]:
    """A committed stack file's values as Pulumi hands them to the program."""
    values = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def test_committed_stack_files_are_valid() -> None:
    gcp = parse(committed("gcp"), "gcp")
    assert (gcp.cloud, gcp.tpu.tpu.name, gcp.tpu.region, gcp.gpu) == ("gcp", "v4-32", "us-central2", None)
    aws = parse(committed("aws"), "aws")
    assert (aws.cloud, aws.gpu.instance.name, aws.gpu.instance_count, aws.tpu) == ("aws", "g5.xlarge", 1, None)
    assert aws.access.ssh_allowed_cidrs == ("203.0.113.7/32",) and aws.ttl_minutes == 180


@pytest.mark.parametrize(("name", "chips", "hosts"), [
    ("v2-8", 4, 1), ("v3-8", 4, 1), ("v3-32", 16, 4), ("v4-8", 4, 1), ("v4-32", 16, 4), ("v4-128", 64, 16),
    ("v5litepod-8", 8, 1), ("v5litepod-16", 16, 4), ("v5p-8", 4, 1), ("v5p-32", 16, 4), ("v6e-8", 8, 1),
    ("v6e-16", 16, 4),
])
def test_tpu_types_resolve_to_chips_and_hosts(name, chips, hosts) -> None:
    tpu = lookup_tpu(name)
    assert (tpu.chips, tpu.hosts, tpu.multi_host) == (chips, hosts, hosts > 1)


@pytest.mark.parametrize("name", ["v4-12", "v2-32", "v5litepod-2", "v7-8", "v4", "tpu-v4-32", ""])
def test_unknown_tpu_types_do_not_resolve(name) -> None:
    assert lookup_tpu(name) is None


@pytest.mark.parametrize(("tpu_type", "runtime", "problem"), [
    ("v4-32", "tpu-ubuntu2204-base", None),
    ("v4-32", "tpu-vm-tf-2.20.0-pod-pjrt", None),
    ("v4-8", "tpu-vm-tf-2.20.0-pjrt", None),
    ("v5litepod-16", "v2-alpha-tpuv5-lite", None),
    ("v6e-8", "v2-alpha-tpuv6e", None),
    ("v4-8", "tpu-vm-tf-2.17.0", "end in -pjrt or -se"),
    ("v4-8", "tpu-vm-tf-2.17.0-pod-pjrt", "single host"),
    ("v3-32", "tpu-vm-tf-2.20.0-pjrt", "needs a -pod runtime"),
    # The runtime's TensorFlow must be the one workloads/bert/requirements-tf.txt pins (2.20.0).
    ("v4-32", "tpu-vm-tf-2.17.0-pod-pjrt", "not the release the TensorFlow workload pins"),
    ("v4-8", "tpu-vm-tf-2.16.1-pjrt", "requirements-tf.txt: 2.20.0"),
    ("v4-8", "tpu-vm-tf-2.99.0-pjrt", "has no TPU VM runtime"),
    ("v5p-8", "v2-alpha-tpuv5-lite", "runtime for TPU v5e, not v5p"),
    ("v6e-8", "tpu-ubuntu2204-base", "not v6e"),
    ("v4-8", "ubuntu-22.04", "not a TPU VM runtime"),
])
def test_runtime_must_fit_the_tpu(tpu_type, runtime, problem) -> None:
    found = runtime_problem(lookup_tpu(tpu_type), runtime)
    assert (found is None) if problem is None else (problem in found)


@pytest.mark.parametrize(("tpu_type", "runtime", "framework", "problem"), [
    ("v4-32", "tpu-ubuntu2204-base", "jax", None),
    ("v5litepod-8", "v2-alpha-tpuv5-lite", "pytorch", None),
    ("v4-32", "tpu-vm-tf-2.20.0-pod-pjrt", "tensorflow", None),
    # JAX and PyTorch/XLA bring their own libtpu: a TensorFlow image's TPU server would hold the chips.
    ("v4-32", "tpu-vm-tf-2.20.0-pod-pjrt", "jax", "jax installs on the base image tpu-ubuntu2204-base"),
    ("v6e-8", "tpu-vm-tf-2.20.0-pjrt", "pytorch", "pytorch installs on the base image v2-alpha-tpuv6e"),
    # TensorFlow needs its own image, -pod on a multi-host slice.
    ("v4-32", "tpu-ubuntu2204-base", "tensorflow", "use tpu-vm-tf-2.20.0-pod-pjrt"),
    ("v4-8", "tpu-ubuntu2204-base", "tensorflow", "use tpu-vm-tf-2.20.0-pjrt "),
])
def test_framework_must_fit_the_runtime(tpu_type, runtime, framework, problem) -> None:
    found = framework_problem(lookup_tpu(tpu_type), runtime, framework)
    assert found is None if problem is None else (found is not None and problem in found), found


def test_every_zone_in_the_catalog_is_a_zone_name() -> None:
    for gen in GENERATIONS:
        for zone in (*gen.zones, *gen.pod_zones):
            region, _, letter = zone.rpartition("-")
            assert region.count("-") == 1 and len(letter) == 1, zone


def test_every_price_row_names_its_source_and_date() -> None:
    with PRICES_CSV.open() as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    assert rows
    for row in rows:
        assert row["source"].strip() and len(row["date"]) >= 7 and float(row["usd_per_hour"]) > 0, row
    assert len(rows) == len(catalog()), "one row per (cloud, accelerator)"


def test_every_catalog_accelerator_has_a_price() -> None:
    for gen in GENERATIONS:
        assert catalog()[("gcp", gen.name)].unit == "chip"
    for instance in INSTANCE_TYPES:
        assert catalog()[("aws", instance.name)].unit == "instance"


def test_quote_multiplies_and_cites() -> None:
    q = quote("gcp", "v5e", 16)
    assert q.usd_per_hour == pytest.approx(19.2)
    assert "1.2 USD/chip-hour" in q.source and "2025-06" in q.source


def test_dlc_image_uri() -> None:
    assert dlc_image("us-west-2", "pytorch", DLC_TAGS["pytorch"][0]) == \
        f"763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-training:{DLC_TAGS['pytorch'][0]}"


def _with(stack: str, **changes: str | None) -> dict[str, str]:
    values = committed(stack)
    for key, value in changes.items():
        full = key.replace("__", ":")
        if value is None:
            values.pop(full, None)
        else:
            values[full] = value
    return values


def test_ssh_from_anywhere_needs_the_opt_in() -> None:
    world = json.dumps(["0.0.0.0/0"])
    with pytest.raises(ConfigError, match="allowSshFromAnywhere"):
        parse(_with("aws", ernie__sshAllowedCidrs=world), "aws")
    opted = parse(_with("aws", ernie__sshAllowedCidrs=world, ernie__allowSshFromAnywhere="true"), "aws")
    assert opted.access.ssh_allowed_cidrs == ("0.0.0.0/0",)


@pytest.mark.parametrize("cidrs", [["0.0.0.0/1", "128.0.0.0/1"], ["64.0.0.0/2"], ["2000::/3"], ["::ffff:0:0/96"],
                                   [f"{i}.0.0.0/8" for i in range(256)]])
def test_ssh_from_ranges_as_wide_as_the_internet_needs_the_opt_in(cidrs: list[str]) -> None:
    with pytest.raises(ConfigError, match="opens SSH to the internet.*allowSshFromAnywhere"):
        parse(_with("aws", ernie__sshAllowedCidrs=json.dumps(cidrs)), "aws")


def test_ssh_from_own_networks_needs_no_opt_in() -> None:
    own = ["10.0.0.0/8", "172.16.0.0/12", "203.0.113.7/32", "2001:db8::/32"]
    assert parse(_with("aws", ernie__sshAllowedCidrs=json.dumps(own)), "aws").access.ssh_allowed_cidrs == tuple(own)


def test_own_key_needs_its_path() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIexample you@laptop"
    with pytest.raises(ConfigError, match="ernie:sshKeyPath: missing; accepted: sshPublicKey and sshKeyPath"):
        parse(_with("gcp", ernie__sshPublicKey=key), "gcp")
    with pytest.raises(ConfigError, match="ernie:sshPublicKey: .*an OpenSSH public key line"):
        parse(_with("gcp", ernie__sshPublicKey="-----BEGIN OPENSSH PRIVATE KEY-----", ernie__sshKeyPath="k"), "gcp")


def test_availability_zone_must_be_in_the_region() -> None:
    with pytest.raises(ConfigError, match="ernie:availabilityZone: 'us-west-2a'; accepted: a zone of us-east-1"):
        parse(_with("aws", ernie__availabilityZone="us-west-2a"), "aws")
    assert parse(_with("aws", ernie__availabilityZone=None), "aws").gpu.availability_zone == "us-east-1a"


def test_other_providers_keys_are_left_to_their_providers() -> None:
    """Only the ernie namespace is closed; gcp:/aws: keys such as a provider's default tags pass through."""
    assert parse(_with("aws", aws__profile="research"), "aws").gpu.region == "us-east-1"


def test_bad_config_stops_the_program_before_any_resource(pulumi_mocks) -> None:
    """Under the mocks, the program raises at its first line: nothing is declared, not even the SSH key."""
    pulumi.runtime.set_all_config(_with("gcp", ernie__tpuType="v4-33"))
    with pytest.raises(ConfigError, match="ernie:tpuType: 'v4-33'"):
        runpy.run_path(str(REPO / "infra"), run_name="__main__")
    assert [r.type for r in pulumi_mocks.resources] == []


def test_load_reads_the_whole_namespace(pulumi_mocks) -> None:
    """load() sees keys the program never asks for by name: that is how a typo is caught."""
    pulumi.runtime.set_all_config(_with("gcp", ernie__runtimeVerison="tpu-ubuntu2204-base"))
    with pytest.raises(ConfigError, match="did you mean ernie:runtimeVersion"):
        config.load()


@pytest.mark.parametrize(("stack", "changes", "message"), [
    # Read by the field types: the value as Pulumi gave it, or the whole number it reads as.
    ("gcp", {"ernie:cloud": "azure"}, "ernie:cloud: 'azure'; accepted: gcp, aws"),
    ("aws", {"ernie:ttlMinutes": "0"}, "ernie:ttlMinutes: 0; accepted: minutes from 1 to 1440"),
    ("aws", {"ernie:instanceCount": "two"}, "ernie:instanceCount: 'two'; accepted: a whole number of instances"),
    ("gcp", {"ernie:spot": "yes"}, "ernie:spot: 'yes'; accepted: true or false"),
    ("aws", {"ernie:serving": "true", "ernie:servingLogRetentionDays": "10"},
     "ernie:servingLogRetentionDays: 10; accepted: a CloudWatch retention period: 1, 3, 5, 7, 14, 30"),
    ("aws", {"ernie:serving": "true", "ernie:servingEmbed": "true", "ernie:servingEmbedMemoryMb": "256"},
     "ernie:servingEmbedMemoryMb: 256; accepted: a whole number of MB .* from 512 to 10240"),
    # Checked against another key or the catalog; a missing key is told what its neighbours accept.
    ("gcp", {"gcp:zone": None}, r"gcp:zone: missing; accepted: a zone offering v4-32: us-central2-b \(`pulumi config "
                                r"set gcp:zone VALUE`"),
    ("aws", {"ernie:dlcTag": None}, "ernie:dlcTag: missing; accepted: a published pytorch training image tag: 2.9.0"),
    ("aws", {"ernie:instanceType": "p3.2xlarge"}, "ernie:instanceType: 'p3.2xlarge'; not offered: "),
    ("aws", {"ernie:serving": "yes"}, "ernie:serving: 'yes'; accepted: true or false"),
    ("aws", {"ernie:serving": "true", "ernie:servingEmbedMemoryMb": "2048"},
     "ernie:servingEmbedMemoryMb: '2048'; set it only with `ernie:servingEmbed: true`"),
    ("gcp", {"ernie:serving": "true"}, "ernie:serving: 'true'; it applies to the other cloud, not gcp"),
    ("aws", {"ernie:tpuType": "v4-8"}, "ernie:tpuType: 'v4-8'; it applies to the other cloud, not aws"),
    # A framework is checked against the runtime only once the TPU type is known (it raised KeyError before).
    ("gcp", {"ernie:tpuType": "v9-8", "ernie:framework": "jax"}, "ernie:tpuType: 'v9-8'; accepted: v2-8, "),
    ("gcp", {"ernie:tpuType": None, "ernie:framework": "jax"}, "ernie:tpuType: missing; accepted: v2-8, "),
    # A blank value is unset, but its key is still read: a misspelt or other cloud's key is refused even when empty.
    ("gcp", {"ernie:tpuTyp": ""}, "ernie:tpuTyp: unknown key ''; did you mean ernie:tpuType\\?"),
    ("gcp", {"ernie:instanceType": ""}, "ernie:instanceType: ''; it applies to the other cloud, not gcp"),
    ("aws", {"ernie:servingMemory": "2048"}, "ernie:servingMemory: unknown key '2048'; did you mean "
                                             "ernie:servingMemoryMb\\? the ernie keys for aws are allowSshFromAnywhere"),
])
def test_each_error_names_the_key_the_value_and_what_is_accepted(stack, changes, message) -> None:
    with pytest.raises(ConfigError, match=f"^{message}"):
        parse(_with(stack, **{k.replace(":", "__"): v for k, v in changes.items()}), stack)


def test_serving_defaults_and_the_embedding_function() -> None:
    serving = parse(_with("aws", ernie__serving="true"), "aws").serving
    assert (serving.python_version, serving.architecture, serving.memory_mb, serving.log_retention_days,
            serving.reserved_concurrency, serving.embed_memory_mb) == ("3.12", "x86_64", 1024, 14, 10, None)
    embed = parse(_with("aws", ernie__serving="true", ernie__servingEmbed="TRUE"), "aws").serving
    assert embed.embed_memory_mb == config.SERVING_EMBED_DEFAULT_MEMORY_MB
    assert parse(_with("aws"), "aws").serving is None
