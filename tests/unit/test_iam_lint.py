"""Every IAM document the stacks render passes parliament (the IAM policy linter) with no findings.

The documents are taken from the program under mocks, as `pulumi up` would send them: the GPU hosts' role and
inline policy, and the serving function's role and logs policy. A trust policy is the role's own resource
policy and has no Resource element, which parliament (an identity-policy linter) needs before it checks the
actions: it is linted with the role it guards as its Resource.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from parliament import analyze_policy_string
from testing.policy_programs import program_plan

from ernie.check import Plan

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
POLICY = "aws:iam/policy:Policy"
PROGRAMS = ("aws", "aws-efa", "aws-serving")


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Plan]:
    workdir: Path = tmp_path_factory.mktemp("programs")
    return {name: program_plan(name, workdir) for name in PROGRAMS}


def documents(result: Plan) -> dict[str, str]:
    """name -> every IAM document the plan declares: trust policies (with their role as Resource), inline and
    managed policies."""
    found = {}
    for r in result.resources:
        if r.type == ROLE:
            trust = json.loads(r.inputs["assumeRolePolicy"])
            for statement in trust["Statement"]:
                statement["Resource"] = r.outputs["arn"]
            found[f"{r.name} trust"] = json.dumps(trust, indent=2)
        elif r.type in (ROLE_POLICY, POLICY):
            found[r.name] = r.inputs["policy"]
    return found


def lint(document: str) -> list[str]:
    return [f"{f.issue}: {f.detail} at {f.location}" for f in analyze_policy_string(document).findings]


def test_every_rendered_document_passes_parliament(plans) -> None:
    linted = {}
    for program, result in plans.items():
        for name, document in documents(result).items():
            linted[f"{program}/{name}"] = lint(document)
    # Both roles, both inline policies: the GPU hosts' and the serving function's.
    assert {"aws/gpu-role trust", "aws/gpu-policy", "aws-serving/serving-role trust",
            "aws-serving/serving-logs-policy"} <= set(linted)
    assert {name: findings for name, findings in linted.items() if findings} == {}


@pytest.mark.parametrize(("document", "statement", "change", "issue"), [
    # Widening the hosts' object access to every bucket is what parliament must catch.
    ("aws/gpu-policy", "RunResults", {"Resource": "*"}, "RESOURCE_STAR"),
    ("aws-serving/serving-logs-policy", "OwnLogGroup", {"Resource": "*"}, "RESOURCE_STAR"),
    ("aws/gpu-policy", "PullTrainingImage", {"Action": ["ecr:BatchGetImages"]}, "UNKNOWN_ACTION"),
    ("aws-serving/serving-logs-policy", "OwnLogGroup",
     {"Resource": "arn:aws:s3:::ernie-results/*"}, "RESOURCE_MISMATCH"),
])
def test_parliament_catches_a_widened_document(plans, document, statement, change, issue) -> None:
    """The same documents, one statement changed: the lint is live, not vacuous."""
    program, name = document.split("/")
    policy = json.loads(documents(plans[program])[name])
    (target,) = [s for s in policy["Statement"] if s.get("Sid") == statement]
    target.update(change)
    assert issue in {finding.split(":")[0] for finding in lint(json.dumps(policy))}
