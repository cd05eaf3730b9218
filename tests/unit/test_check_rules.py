"""Guardrail rules (policy/rules.py) on resources as the engine sees them: each fires on the bad shape only."""

from __future__ import annotations

import json

import pytest

from catalog.teardown import render_teardown_workflow, workflow_executions_url
from policy import rules
from policy.rules import RULES, Limits, evaluate

@pytest.mark.parametrize(("typ", "props", "fires"), [
    (rules.GCP_FIREWALL, {"sourceRanges": ["0.0.0.0/0"], "allows": [{"protocol": "tcp", "ports": ["22"]}]}, True),
    (rules.GCP_FIREWALL, {"sourceRanges": ["0.0.0.0/0"], "allows": [{"protocol": "tcp", "ports": ["20-30"]}]}, True),
    (rules.GCP_FIREWALL, {"sourceRanges": ["0.0.0.0/0"], "allows": [{"protocol": "all"}]}, True),
    (rules.GCP_FIREWALL, {"sourceRanges": ["0.0.0.0/0"], "allows": [{"protocol": "tcp", "ports": ["443"]}]}, False),
    (rules.GCP_FIREWALL, {"sourceRanges": ["203.0.113.7/32"], "allows": [{"protocol": "tcp", "ports": ["22"]}]}, False),
    (rules.GCP_FIREWALL, {"direction": "EGRESS", "destinationRanges": ["0.0.0.0/0"],
                          "allows": [{"protocol": "tcp", "ports": ["22"]}]}, False),
    (rules.AWS_INGRESS_RULE, {"cidrIpv4": "0.0.0.0/0", "ipProtocol": "tcp", "fromPort": 22.0, "toPort": 22.0}, True),
    (rules.AWS_INGRESS_RULE, {"cidrIpv6": "::/0", "ipProtocol": "-1"}, True),
    (rules.AWS_INGRESS_RULE, {"cidrIpv4": "0.0.0.0/0", "ipProtocol": "tcp", "fromPort": 443.0, "toPort": 443.0}, False),
    (rules.AWS_INGRESS_RULE, {"referencedSecurityGroupId": "sg-1", "ipProtocol": "-1"}, False),
    (rules.AWS_SECURITY_GROUP, {"ingress": [{"cidrBlocks": ["0.0.0.0/0"], "protocol": "tcp", "fromPort": 0,
                                             "toPort": 65535}]}, True),
    # The whole internet in halves, or in one range a little narrower than /0, is still the whole internet.
    (rules.GCP_FIREWALL, {"sourceRanges": ["0.0.0.0/1", "128.0.0.0/1"], "allows": [{"protocol": "tcp"}]}, True),
    (rules.AWS_INGRESS_RULE, {"cidrIpv4": "128.0.0.0/1", "ipProtocol": "tcp", "fromPort": 22, "toPort": 22}, True),
    (rules.AWS_INGRESS_RULE, {"cidrIpv6": "2000::/3", "ipProtocol": "tcp", "fromPort": 22, "toPort": 22}, True),
    (rules.AWS_SECURITY_GROUP, {"ingress": [{"cidrBlocks": ["0.0.0.0/1", "128.0.0.0/1"], "protocol": "tcp",
                                             "fromPort": 22, "toPort": 22}]}, True),
    (rules.GCP_FIREWALL, {"sourceRanges": ["10.0.0.0/8", "172.16.0.0/12"], "allows": [{"protocol": "tcp"}]}, False),
])
def test_ssh_open_to_world(typ, props, fires) -> None:
    assert bool(rules.ssh_open_to_world(typ, props)) is fires


@pytest.mark.parametrize(("typ", "props", "findings"), [
    # A TPU node is deleted from outside itself: tpu-teardown-bounded (a stack rule) checks that, not its script.
    (rules.GCP_TPU_VM, {"labels": {"ernie-ttl": "60m"}}, 0),
    (rules.AWS_INSTANCE, {"instanceInitiatedShutdownBehavior": "terminate", "userData": "shutdown -h +60"}, 0),
    (rules.AWS_INSTANCE, {"userData": "shutdown -h +60"}, 1),
    (rules.AWS_INSTANCE, {"instanceInitiatedShutdownBehavior": "stop"}, 2),
])
def test_ttl_missing(typ, props, findings) -> None:
    assert len(rules.ttl_missing(typ, props)) == findings


@pytest.mark.parametrize(("typ", "props", "fires"), [
    (rules.AWS_INSTANCE, {"rootBlockDevice": {"encrypted": True}}, False),
    (rules.AWS_INSTANCE, {"rootBlockDevice": {"volumeSize": 100.0}}, True),
    (rules.AWS_INSTANCE, {}, True),
    (rules.AWS_EBS_VOLUME, {"encrypted": False}, True),
    (rules.AWS_S3_SSE, {"rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}]}, False),
    (rules.AWS_S3_SSE, {"rules": [{}]}, True),
])
def test_storage_unencrypted(typ, props, fires) -> None:
    assert bool(rules.storage_unencrypted(typ, props)) is fires


@pytest.mark.parametrize(("typ", "props", "findings"), [
    (rules.GCP_BUCKET, {"publicAccessPrevention": "enforced", "uniformBucketLevelAccess": True}, 0),
    (rules.GCP_BUCKET, {"publicAccessPrevention": "inherited", "uniformBucketLevelAccess": True}, 1),
    (rules.GCP_BUCKET, {}, 2),
    (rules.AWS_S3_PUBLIC_ACCESS_BLOCK, {"blockPublicAcls": True, "blockPublicPolicy": True,
                                        "ignorePublicAcls": True, "restrictPublicBuckets": True}, 0),
    (rules.AWS_S3_PUBLIC_ACCESS_BLOCK, {"blockPublicAcls": True}, 1),
])
def test_storage_public(typ, props, findings) -> None:
    assert len(rules.storage_public(typ, props)) == findings


def test_imdsv2() -> None:
    assert not rules.imdsv2_not_required(rules.AWS_INSTANCE, {"metadataOptions": {"httpTokens": "required"}})
    assert rules.imdsv2_not_required(rules.AWS_INSTANCE, {"metadataOptions": {"httpTokens": "optional"}})
    assert rules.imdsv2_not_required(rules.AWS_INSTANCE, {})


def test_rules_ignore_other_types() -> None:
    assert all(rule.check("aws:ec2/vpc:Vpc", {}) == [] for rule in RULES)


def test_evaluate_names_rule_and_resource() -> None:
    ttl = {"ernie-ttl": "5"}
    (finding,) = evaluate([(rules.AWS_INSTANCE, "gpu-0", {"metadataOptions": {"httpTokens": "optional"},
                                                           "rootBlockDevice": {"encrypted": True},
                                                           "instanceInitiatedShutdownBehavior": "terminate",
                                                           "userData": "shutdown -h +5", "instanceType": "g5.xlarge",
                                                           "tags": ttl, "volumeTags": ttl})],
                          Limits(max_usd_per_hour=5), "aws")
    assert (finding.rule, finding.resource_name) == ("imdsv2-required", "gpu-0")


def _tls_statement(**changes) -> dict:
    statement = {"Effect": "Deny", "Principal": "*", "Action": "s3:*",
                 "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"],
                 "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    statement.update(changes)
    return statement


@pytest.mark.parametrize(("statement", "tls_only"), [
    (_tls_statement(), True),
    (_tls_statement(Principal={"AWS": "*"}, Action=["s3:*"]), True),
    (_tls_statement(Condition={"Bool": {"aws:SecureTransport": False}}), True),  # a JSON boolean reads the same
    (_tls_statement(Resource="arn:aws:s3:::b"), False),  # objects still answer plain HTTP
    (_tls_statement(Action="s3:PutObject"), False),  # reads still answer plain HTTP
    (_tls_statement(Principal={"AWS": "arn:aws:iam::123456789012:root"}), False),
    (_tls_statement(Effect="Allow"), False),
    (_tls_statement(Condition={"Bool": {"aws:SecureTransport": "true"}}), False),
    (_tls_statement(Resource=["arn:aws:s3:::other", "arn:aws:s3:::other/*"]), False),
])
def test_s3_bucket_is_tls_only_only_with_a_deny_of_plain_http(statement, tls_only) -> None:
    (tls,) = [r for r in rules.STACK_RULES if r.name == "storage-tls-only"]
    policy = {"Version": "2012-10-17", "Statement": [statement]}
    resources = [(rules.AWS_S3_BUCKET, "gpu-bucket", {"bucket": "b"}),
                 (rules.AWS_S3_BUCKET_POLICY, "gpu-bucket-tls", {"bucket": "b", "policy": json.dumps(policy)})]
    assert rules.denies_plain_http(policy, "b") is tls_only
    assert bool(tls.check(resources, Limits(max_usd_per_hour=1))) is not tls_only
    # A bucket with no policy at all is flagged by name.
    (finding,) = tls.check(resources[:1], Limits(max_usd_per_hour=1))
    assert "gpu-bucket (b) accepts requests without TLS" in finding


NODE_URL = "https://tpu.googleapis.com/v2/projects/p/locations/us-central2-b/nodes/n"
NODE = (rules.GCP_TPU_VM, "tpu", {"project": "p", "zone": "us-central2-b", "name": "n",
                                  "serviceAccount": {"email": "n-sa@p.iam.gserviceaccount.com"}})
TEARDOWN_ROLE = (rules.GCP_CUSTOM_ROLE, "td-role", {"project": "p", "roleId": "td",
                                                   "permissions": ["tpu.nodes.delete"]})
WORKFLOW = (rules.GCP_WORKFLOW, "wf", {"project": "p", "region": "us-central1", "name": "n",
                                       "serviceAccount": "n-td@p.iam.gserviceaccount.com",
                                       "sourceContents": render_teardown_workflow(NODE_URL)})
JOB = (rules.GCP_SCHEDULER_JOB, "ttl", {"httpTarget": {
    "uri": workflow_executions_url("p", "us-central1", "n"), "httpMethod": "POST",
    "oauthToken": {"serviceAccountEmail": "n-tc@p.iam.gserviceaccount.com"}}})


def _workflow(source: str) -> tuple[str, str, dict]:
    return (WORKFLOW[0], WORKFLOW[1], {**WORKFLOW[2], "sourceContents": source})


_SOURCE = WORKFLOW[2]["sourceContents"]
_NO_DEADLINE = _SOURCE[:_SOURCE.index("    - give_up:")] + _SOURCE[_SOURCE.index("    - wait:"):]


def _grant(member: str, role: str = "projects/p/roles/td", **extra) -> tuple[str, str, dict]:
    return (rules.GCP_PROJECT_MEMBER, f"grant-{role.rsplit('/', 1)[-1]}", {"project": "p", "role": role,
                                                                        "member": member, **extra})


@pytest.mark.parametrize(("resources", "findings"), [
    # The bound: the teardown account holds tpu.nodes.delete and only the scheduler job signs in as it.
    ([NODE, TEARDOWN_ROLE, _grant("serviceAccount:n-td@p.iam.gserviceaccount.com"), WORKFLOW, JOB], 0),
    # The node holds it itself, with or without a condition naming its own node (Cloud TPU never evaluates it).
    ([NODE, TEARDOWN_ROLE, _grant("serviceAccount:n-sa@p.iam.gserviceaccount.com"), WORKFLOW, JOB], 2),
    ([NODE, TEARDOWN_ROLE, _grant("serviceAccount:n-sa@p.iam.gserviceaccount.com", condition={
        "title": "own node", "expression": 'resource.name == "projects/p/locations/us-central2-b/nodes/n"'}), WORKFLOW, JOB], 2),
    # Predefined roles that delete nodes, through a binding or a whole project policy.
    ([NODE, TEARDOWN_ROLE, _grant("serviceAccount:n-td@p.iam.gserviceaccount.com"), WORKFLOW, JOB,
      (rules.GCP_PROJECT_BINDING, "b", {"role": "roles/editor",
                                        "members": ["serviceAccount:n-sa@p.iam.gserviceaccount.com"]})],
     2),  # it deletes nodes, and it may act as other accounts
    ([NODE, TEARDOWN_ROLE, _grant("serviceAccount:n-td@p.iam.gserviceaccount.com"), WORKFLOW, JOB,
      (rules.GCP_PROJECT_POLICY, "pol", {"policyData": json.dumps({"bindings": [
          {"role": "roles/tpu.admin", "members": ["serviceAccount:n-sa@p.iam.gserviceaccount.com"]}]})})], 1),
    # A custom role that lets the node's account mint tokens for others.
    ([NODE, TEARDOWN_ROLE, _grant("serviceAccount:n-td@p.iam.gserviceaccount.com"), WORKFLOW, JOB,
      (rules.GCP_CUSTOM_ROLE, "mint", {"project": "p", "roleId": "mint",
                                       "permissions": ["iam.serviceAccounts.getAccessToken"]}),
      _grant("serviceAccount:n-sa@p.iam.gserviceaccount.com", "projects/p/roles/mint")], 1),
    # The workflow runs as the teardown account but deletes another node, or never gives up.
    ([NODE, TEARDOWN_ROLE, _grant("serviceAccount:n-td@p.iam.gserviceaccount.com"),
      _workflow(render_teardown_workflow(NODE_URL.replace("/nodes/n", "/nodes/other"))), JOB], 2),
    ([NODE, TEARDOWN_ROLE, _grant("serviceAccount:n-td@p.iam.gserviceaccount.com"), _workflow(_NO_DEADLINE), JOB], 2),
    # The workflow is there but no scheduler job starts it, or the job signs in as the teardown account itself.
    ([NODE, TEARDOWN_ROLE, _grant("serviceAccount:n-td@p.iam.gserviceaccount.com"), WORKFLOW], 1),
    ([NODE, TEARDOWN_ROLE, _grant("serviceAccount:n-td@p.iam.gserviceaccount.com"), WORKFLOW,
      (rules.GCP_SCHEDULER_JOB, "ttl", {"httpTarget": {**JOB[2]["httpTarget"], "oauthToken": {
          "serviceAccountEmail": "n-td@p.iam.gserviceaccount.com"}}})], 1),
    # No workflow at all: nothing deletes the node, and the holder is no teardown account.
    ([NODE, TEARDOWN_ROLE, _grant("serviceAccount:n-td@p.iam.gserviceaccount.com")], 2),
    ([NODE], 1),
])
def test_tpu_teardown_bounded(resources, findings) -> None:
    (rule,) = [r for r in rules.STACK_RULES if r.name == "tpu-teardown-bounded"]
    found = rule.check(resources, Limits(max_usd_per_hour=1))
    assert len(found) == findings, found
