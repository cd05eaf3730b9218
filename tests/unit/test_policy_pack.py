"""The policy pack (policy/): one policy per rule, the same findings as the rules, and the pack served over
gRPC exactly as `pulumi up --policy-pack policy` starts it (`python -m pulumi.policy`), with the stack's config.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pulumi
import pytest
from google.protobuf import empty_pb2, struct_pb2
from testing.policy_programs import MUTATIONS, PROGRAMS, program_plan, props, pulumi_config_env, set_path, triples
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import unknown_checking_proxy

from ernie.check import Plan
from policy import pack, rules
from policy.rules import RULES, STACK_RULES

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Plan]:
    workdir = tmp_path_factory.mktemp("programs")
    return {name: program_plan(name, workdir) for name in PROGRAMS}


def test_policies_map_one_to_one_to_rules() -> None:
    policies = pack.build_policies()
    assert [(p.name, p.description) for p in policies] == \
        [(r.name, r.description) for r in (*RULES, *STACK_RULES)]
    assert all(isinstance(p, ResourceValidationPolicy) for p in policies[:len(RULES)])
    assert all(isinstance(p, StackValidationPolicy) for p in policies[len(RULES):])
    assert {p.enforcement_level for p in policies} == {EnforcementLevel.MANDATORY}


def _options() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def violations(policy: Any, args: Any) -> list[str]:
    reported: list[str] = []
    policy.validate(args, lambda message, urn=None: reported.append(message))
    return reported


def resource_args(typ: str, name: str, values: dict[str, Any]) -> ResourceValidationArgs:
    """What the pack's server hands a validate function: props behind the unknown-checking proxy."""
    return ResourceValidationArgs(typ, unknown_checking_proxy(values), f"urn:pulumi:test::ernie::{typ}::{name}", name,
                                  _options(), None)


def test_resource_policies_report_what_the_rules_find(plans) -> None:
    policies = {p.name: p for p in pack.build_policies()}
    for program in PROGRAMS:
        for typ, name, values in triples(plans[program]):
            for rule in RULES:
                assert violations(policies[rule.name], resource_args(typ, name, values)) == []
    for rule, program, typ, name, path, bad, fragment in MUTATIONS:
        values = props(plans[program], typ, name)
        set_path(values, path, bad)
        (message,) = violations(policies[rule], resource_args(typ, name or typ, values))
        assert fragment in message, (rule, message)


def stack_args(resources: list[tuple[str, str, dict[str, Any]]]) -> StackValidationArgs:
    return StackValidationArgs([PolicyResource(typ, unknown_checking_proxy(values), f"urn:{name}", name, _options(),
                                               None, None, [], {}) for typ, name, values in resources])


def test_stack_policy_takes_the_ceiling_from_the_stack_config(plans, pulumi_mocks) -> None:
    """Two p4d with their disks (65.59 USD/hour) pass under their stack's ernie:maxUsdPerHour of 70, not under the
    committed aws stack's 5."""
    (cost,) = [p for p in pack.build_policies() if isinstance(p, StackValidationPolicy) and p.name == "cost-ceiling"]
    efa = triples(plans["aws-efa"])
    pulumi.runtime.set_all_config(json.loads(pulumi_config_env("aws-efa")))
    assert pack.stack_limits().max_usd_per_hour == 70
    assert violations(cost, stack_args(efa)) == []
    pulumi.runtime.set_all_config(json.loads(pulumi_config_env("aws")))
    (message,) = violations(cost, stack_args(efa))
    assert "65.59 USD/hour on demand, over ernie:maxUsdPerHour 5" in message


def test_stack_policy_refuses_an_s3_bucket_without_its_tls_policy(plans) -> None:
    (tls,) = [p for p in pack.build_policies() if p.name == "storage-tls-only"]
    resources = triples(plans["aws-serving"])
    assert violations(tls, stack_args(resources)) == []
    without = [r for r in resources if not (r[0] == rules.AWS_S3_BUCKET_POLICY and r[1] == "serving-layers-tls")]
    (message,) = violations(tls, stack_args(without))
    assert "S3 bucket serving-layers (" in message and "accepts requests without TLS" in message


def test_stack_policy_refuses_a_tpu_node_that_may_delete_nodes(plans) -> None:
    """The pack refuses what the slice declared before its teardown moved off the node: the node's own account
    granted the teardown role."""
    pulumi.runtime.set_all_config(json.loads(pulumi_config_env("gcp")))  # the pack reads the stack's limits
    (teardown,) = [p for p in pack.build_policies() if p.name == "tpu-teardown-bounded"]
    resources = triples(plans["gcp"])
    assert violations(teardown, stack_args(resources)) == []
    (node,) = [p for t, _, p in resources if t == rules.GCP_TPU_VM]
    (grant,) = [p for t, name, p in resources if t == rules.GCP_PROJECT_MEMBER and name == "tpu-teardown"]
    grant["member"] = f"serviceAccount:{node['serviceAccount']['email']}"
    messages = violations(teardown, stack_args(resources))
    assert any(m.startswith("TPU node tpu-tpu runs as ernie-gcp-sa@") and "metadata token" in m for m in messages)
    assert any(m.startswith("TPU node tpu-tpu has no teardown") for m in messages)


@pytest.fixture
def served_pack() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """policy/ started as the Pulumi CLI starts a Python policy pack for `pulumi preview -s aws`."""
    env = {"PATH": os.environ["PATH"], "PULUMI_CONFIG": pulumi_config_env("aws"), "PULUMI_PROJECT": "ernie",
           "PULUMI_STACK": "aws", "PULUMI_DRY_RUN": "true", "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-m", "pulumi.policy", "127.0.0.1:1", "."], cwd=REPO / "policy",
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = server.stdout.readline().strip()
        assert port.isdigit(), server.stderr.read() if server.poll() is not None else port
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = analyzer_pb2_grpc.AnalyzerStub(channel)
            stub.ConfigureStack(analyzer_pb2.AnalyzerStackConfigureRequest(stack="aws", project="ernie",
                                                                           dry_run=True), timeout=30)
            yield stub
    finally:
        server.kill()
        server.wait(timeout=30)


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def test_served_pack_enforces_every_rule(plans, served_pack) -> None:
    info = served_pack.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    assert info.name == pack.PACK_NAME
    assert [p.name for p in info.policies] == [r.name for r in (*RULES, *STACK_RULES)]
    assert {p.enforcementLevel for p in info.policies} == {analyzer_pb2.MANDATORY}

    instance = props(plans["aws"], rules.AWS_INSTANCE)
    request = analyzer_pb2.AnalyzeRequest(type=rules.AWS_INSTANCE, properties=_struct(instance), name="gpu-0",
                                          urn="urn:pulumi:aws::ernie::aws:ec2/instance:Instance::gpu-0")
    assert list(served_pack.Analyze(request, timeout=30).diagnostics) == []
    set_path(instance, "metadataOptions.httpTokens", "optional")
    request.properties.CopyFrom(_struct(instance))
    (diagnostic,) = served_pack.Analyze(request, timeout=30).diagnostics
    assert (diagnostic.policyName, diagnostic.enforcementLevel) == ("imdsv2-required", analyzer_pb2.MANDATORY)
    assert "accepts IMDSv1" in diagnostic.message

    def stack(resources: list[tuple[str, str, dict[str, Any]]]) -> analyzer_pb2.AnalyzeStackRequest:
        return analyzer_pb2.AnalyzeStackRequest(resources=[
            analyzer_pb2.AnalyzerResource(type=typ, properties=_struct(values), name=name, urn=f"urn:{name}")
            for typ, name, values in resources])

    assert list(served_pack.AnalyzeStack(stack(triples(plans["aws"])), timeout=30).diagnostics) == []
    # The aws stack's config (ernie:maxUsdPerHour 5) reached the pack: the EFA fleet is over it.
    (diagnostic,) = served_pack.AnalyzeStack(stack(triples(plans["aws-efa"])), timeout=30).diagnostics
    assert diagnostic.policyName == "cost-ceiling"
    assert "over ernie:maxUsdPerHour 5" in diagnostic.message
