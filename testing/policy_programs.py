"""The Pulumi program under mocks, run once per session per configuration, for the guardrail tests.

Each plan is `ernie check`'s: the committed stack file (with some values changed) through infra/. The serving
plan runs the whole aws program with `ernie:serving` and `ernie:servingEmbed` on; the layers of both functions
are small real zips standing in for the ones `ernie layers build` makes (testing/lambda_stand_ins.py), named by
a manifest as the program reads it, one of each function's sized over the direct-upload limit so its private
layer bucket is declared too.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from ernie.check import Plan, plan
from ernie.mocks import RecordedResource
from catalog.limits import MAX_TTL_MINUTES
from lambda_layers.target import Target
from policy import rules
from testing.lambda_stand_ins import use_manifest, write_stand_in_manifest

REPO = Path(__file__).resolve().parents[1]

# name -> (stack file, changes)
PROGRAMS: dict[str, tuple[str, dict[str, Any]]] = {
    "gcp": ("gcp", {}),
    "aws": ("aws", {}),
    # EFA fleet: network interfaces and Elastic IPs; two p4d cost 65.54 USD/hour.
    "aws-efa": ("aws", {"ernie:instanceType": "p4d.24xlarge", "ernie:instanceCount": 2, "ernie:maxUsdPerHour": 70}),
    "aws-serving": ("aws", {"ernie:serving": True, "ernie:servingEmbed": True, "ernie:servingTimeoutSeconds": 20,
                            "ernie:servingReservedConcurrency": 5}),
}


def stack_values(name: str) -> dict[str, Any]:
    """The program's config values, as the stack file holds them."""
    base, changes = PROGRAMS[name]
    values = yaml.safe_load((REPO / f"Pulumi.{base}.yaml").read_text())["config"]
    values.update(changes)
    return values


def pulumi_config_env(name: str) -> str:
    """The config as the Pulumi CLI hands it to a program or a policy pack (PULUMI_CONFIG)."""
    return json.dumps({k: v if isinstance(v, str) else json.dumps(v) for k, v in stack_values(name).items()})


@cache
def program_plan(name: str, workdir: Path) -> Plan:
    """`ernie check` of one configuration in PROGRAMS."""
    path = workdir / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump({"config": stack_values(name)}))
    layers = workdir / "layers"
    if not layers.exists():
        write_stand_in_manifest(layers, [Target.lambda_runtime()], s3_first_layer=True)
    with pytest.MonkeyPatch.context() as patch:
        use_manifest(patch, layers / "manifest.json")
        return plan(config_file=path)


def resource(result: Plan, typ: str, name: str | None = None) -> RecordedResource:
    """The one resource of a type (and name) the program declared."""
    (found,) = [r for r in result.resources if r.type == typ and name in (None, r.name)]
    return found


def props(result: Plan, typ: str, name: str | None = None) -> dict[str, Any]:
    """A deep copy of a declared resource's props, free to mutate."""
    return copy.deepcopy(resource(result, typ, name).inputs)


def triples(result: Plan) -> list[tuple[str, str, dict[str, Any]]]:
    """(type, name, props) of every declared resource, as the rules take them."""
    return [(r.type, r.name, copy.deepcopy(r.inputs)) for r in result.resources]


def set_path(values: dict[str, Any], path: str, value: Any) -> None:
    """Set (or, with value None, remove) a nested property, e.g. "metadataOptions.httpTokens"."""
    *parents, last = path.split(".")
    for part in parents:
        values = values[part]
    if value is None:
        values.pop(last, None)
    else:
        values[last] = value


# (rule, program, type, resource name or None for the only one, property path, bad value, finding fragment)
MUTATIONS = [
    ("ssh-open-to-world", "gcp", rules.GCP_FIREWALL, "tpu-ssh", "sourceRanges", ["0.0.0.0/0"],
     "port 22 from 0.0.0.0/0"),
    ("ssh-open-to-world", "aws", rules.AWS_INGRESS_RULE, "gpu-ssh-0", "cidrIpv4", "0.0.0.0/0",
     "port 22 from 0.0.0.0/0"),
    ("ttl-missing", "aws", rules.AWS_INSTANCE, None, "instanceInitiatedShutdownBehavior", "stop",
     "stops instead of terminating"),
    ("ttl-missing", "aws", rules.AWS_INSTANCE, None, "userData", "#!/bin/bash\necho up\n", "no TTL shutdown"),
    ("ttl-label-missing", "gcp", rules.GCP_TPU_VM, None, "labels.ernie-ttl", None, "no ernie-ttl in its labels"),
    ("ttl-label-missing", "aws", rules.AWS_INSTANCE, None, "volumeTags.ernie-ttl", None,
     "no ernie-ttl in its volumeTags"),
    ("ttl-label-missing", "aws", rules.AWS_INSTANCE, None, "tags.ernie-ttl", str(MAX_TTL_MINUTES + 1),
     f"accepted: 1 to {MAX_TTL_MINUTES}"),
    ("ttl-label-missing", "aws-serving", rules.AWS_LAMBDA_LAYER, "serving-model", "description", "joblib 1.5",
     "no `ernie-ttl=<minutes>` in its description"),
    ("storage-unencrypted", "aws", rules.AWS_INSTANCE, None, "rootBlockDevice.encrypted", False,
     "root volume is not encrypted"),
    ("storage-unencrypted", "aws", rules.AWS_S3_SSE, None, "rules", [{"bucketKeyEnabled": True}],
     "names no algorithm"),
    ("storage-public", "gcp", rules.GCP_BUCKET, None, "publicAccessPrevention", "inherited",
     "does not enforce public access prevention"),
    ("storage-public", "aws", rules.AWS_S3_PUBLIC_ACCESS_BLOCK, None, "blockPublicPolicy", False,
     "leaves blockPublicPolicy off"),
    ("imdsv2-required", "aws", rules.AWS_INSTANCE, None, "metadataOptions.httpTokens", "optional",
     "accepts IMDSv1"),
    ("lambda-bounds", "aws-serving", rules.AWS_LAMBDA_FUNCTION, "serving-function", "timeout", 60.0,
     "timeout is 60 s"),
    ("lambda-bounds", "aws-serving", rules.AWS_LAMBDA_FUNCTION, "embedding-function", "reservedConcurrentExecutions",
     None, "no reserved concurrency"),
    ("lambda-bounds", "aws-serving", rules.AWS_LAMBDA_FUNCTION, "serving-function", "reservedConcurrentExecutions",
     0.0, "0 disables the function"),
    ("lambda-bounds", "aws-serving", rules.AWS_LAMBDA_FUNCTION, "serving-function", "reservedConcurrentExecutions",
     500.0, "reserved concurrency is 500"),
]
