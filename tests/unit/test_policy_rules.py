"""Every guardrail rule on resources the program really declares under mocks: the declared resource passes,
the same resource with one property changed fails. `ernie check` and the policy pack run these same functions.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from testing.policy_programs import MUTATIONS, PROGRAMS, program_plan, props, set_path, stack_values, triples

from ernie.check import Plan
from infra.config import ConfigError, parse
from policy import rules
from policy.rules import BILLABLE_TTL_FIELDS, RULES, STACK_RULES, Limits, evaluate
from catalog.teardown import render_teardown_workflow, tpu_node_url, workflow_executions_url


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Plan]:
    workdir = tmp_path_factory.mktemp("programs")
    return {name: program_plan(name, workdir) for name in PROGRAMS}


def check_of(name: str) -> Callable[[str, Any], list[str]]:
    (rule,) = [r for r in RULES if r.name == name]
    return rule.check


def stack_rule(name: str) -> rules.StackRule:
    (rule,) = [r for r in STACK_RULES if r.name == name]
    return rule


@pytest.mark.parametrize(("rule", "program", "typ", "name", "path", "bad", "fragment"), MUTATIONS,
                         ids=[f"{m[0]}:{m[4]}={m[5]!r:.20}" for m in MUTATIONS])
def test_declared_resource_passes_and_one_changed_property_fails(plans, rule, program, typ, name, path, bad,
                                                                  fragment) -> None:
    check = check_of(rule)
    declared = props(plans[program], typ, name)
    assert check(typ, declared) == []
    set_path(declared, path, bad)
    findings = check(typ, declared)
    assert len(findings) == 1 and fragment in findings[0], findings


def test_every_rule_has_a_failing_case_from_the_program() -> None:
    assert {m[0] for m in MUTATIONS} == {r.name for r in RULES}


def test_committed_programs_have_no_findings(plans) -> None:
    """Every configuration the tests plan, serving and EFA fleets included, passes every rule."""
    for name, result in plans.items():
        assert result.findings == [], name


def billable(plans: dict[str, Plan]) -> list[tuple[str, str, str]]:
    return [(program, r.type, r.name) for program, result in plans.items() for r in result.resources
            if r.type in BILLABLE_TTL_FIELDS]


def test_every_billable_resource_loses_its_ttl_and_is_flagged(plans) -> None:
    """Each billable resource the programs declare, with its TTL label, tag or description entry removed."""
    found = billable(plans)
    declared_types = {typ for _, typ, _ in found}
    # Everything in the table the stacks declare (a bare EBS volume is in the table for volumes made by hand).
    assert declared_types == set(BILLABLE_TTL_FIELDS) - {rules.AWS_EBS_VOLUME}
    for program, typ, name in found:
        declared = props(plans[program], typ, name)
        for field in BILLABLE_TTL_FIELDS[typ]:
            stripped = dict(declared)
            if field == "description":
                stripped[field] = declared[field].replace("ernie-ttl=", "ttl:")
            else:
                stripped[field] = {k: v for k, v in declared[field].items() if k != "ernie-ttl"}
            (finding,) = rules.ttl_label_missing(typ, stripped)
            assert field in finding, (program, name, finding)


def test_non_billable_resources_need_no_ttl(plans) -> None:
    """Networks, firewalls, roles and keys cost nothing: the GCP network carries no labels and passes."""
    network = props(plans["gcp"], "gcp:compute/network:Network")
    assert "labels" not in network and rules.ttl_label_missing("gcp:compute/network:Network", network) == []


def test_stack_cost_is_priced_from_the_catalog(plans) -> None:
    """gcp: 16 v4 chips at 3.22; aws: one g5.xlarge at 1.006 and its gp3 root volume."""
    gcp = triples(plans["gcp"])
    assert sum(rules.hourly_usd(t, p) for t, _, p in gcp) == pytest.approx(51.52)
    (instance,) = [p for t, _, p in triples(plans["aws"]) if t == rules.AWS_INSTANCE]
    gib = instance["rootBlockDevice"]["volumeSize"]
    assert rules.hourly_usd(rules.AWS_INSTANCE, instance) == pytest.approx(1.006 + gib * 0.000110)


@pytest.mark.parametrize(("program", "typ", "path", "bad", "fragment"), [
    ("gcp", rules.GCP_TPU_VM, "acceleratorType", "v4-128", "206.08 USD/hour on demand, over ernie:maxUsdPerHour 60"),
    ("aws", rules.AWS_INSTANCE, "instanceType", "p4d.24xlarge", "over ernie:maxUsdPerHour 5"),
    ("aws", rules.AWS_INSTANCE, "rootBlockDevice.volumeSize", 50000.0, "over ernie:maxUsdPerHour 5"),
    ("aws", rules.AWS_INSTANCE, "instanceType", "x9.hyper", "has no price for gpu-0"),
    ("aws", rules.AWS_INSTANCE, "rootBlockDevice.volumeType", "io2", "has no price for gpu-0"),
])
def test_stack_cost_ceiling(plans, program, typ, path, bad, fragment) -> None:
    cost_rule = stack_rule("cost-ceiling")
    limits = plans[program].limits
    resources = triples(plans[program])
    assert cost_rule.check(resources, limits) == []
    (declared,) = [p for t, _, p in resources if t == typ]
    set_path(declared, path, bad)
    (finding,) = cost_rule.check(resources, limits)
    assert fragment in finding


def test_ceiling_is_the_configured_one(plans) -> None:
    """The same two p4d instances pass under their stack's ceiling of 70 and fail under the committed 5."""
    resources = triples(plans["aws-efa"])
    assert plans["aws-efa"].limits == Limits(max_usd_per_hour=70)
    cost_rule = stack_rule("cost-ceiling")
    assert cost_rule.check(resources, Limits(max_usd_per_hour=70)) == []
    (finding,) = cost_rule.check(resources, plans["aws"].limits)
    assert "65.5" in finding and "over ernie:maxUsdPerHour 5" in finding


def test_evaluate_reports_stack_findings_against_the_stack(plans) -> None:
    resources = triples(plans["aws-efa"])
    findings = evaluate(resources, Limits(max_usd_per_hour=10), "aws-efa")
    assert [(f.rule, f.resource_type, f.resource_name) for f in findings] == \
        [("cost-ceiling", rules.STACK_TYPE, "aws-efa")]


def test_a_declared_resource_with_unknown_outputs_still_prices(plans) -> None:
    """During a preview the AMI's size is not known yet: the instance is priced without its root volume."""
    instance = props(plans["aws"], rules.AWS_INSTANCE)
    del instance["rootBlockDevice"]["volumeSize"]
    assert rules.hourly_usd(rules.AWS_INSTANCE, instance) == pytest.approx(1.006)


@pytest.mark.parametrize(("key", "value", "fragments"), [
    ("ernie:maxUsdPerHour", None, ["ernie:maxUsdPerHour: missing", "USD per hour", "pulumi config set"]),
    ("ernie:maxUsdPerHour", "sixty", ["ernie:maxUsdPerHour: 'sixty'", "a number above 0, e.g. 60"]),
    ("ernie:maxUsdPerHour", "0", ["ernie:maxUsdPerHour: '0'", "a number above 0"]),
    ("ernie:maxUsdPerHour", "inf", ["ernie:maxUsdPerHour: 'inf'", "a number above 0"]),
    ("ernie:servingReservedConcurrency", "0", ["ernie:servingReservedConcurrency: 0", "from 1 to 100"]),
    ("ernie:servingReservedConcurrency", "500", ["ernie:servingReservedConcurrency: 500", "from 1 to 100"]),
])
def test_limits_in_the_config_are_validated_before_any_resource(key, value, fragments) -> None:
    raw = {k: v if isinstance(v, str) else json.dumps(v) for k, v in stack_values("aws-serving").items()}
    if value is None:
        del raw[key]
    else:
        raw[key] = value
    with pytest.raises(ConfigError) as error:
        parse(raw, "aws")
    assert all(f in str(error.value) for f in fragments), str(error.value)


def test_configured_limits_reach_the_program(plans) -> None:
    assert plans["gcp"].limits == Limits(max_usd_per_hour=60) and plans["aws"].limits == Limits(max_usd_per_hour=5)
    functions = [r.inputs for r in plans["aws-serving"].resources if r.type == rules.AWS_LAMBDA_FUNCTION]
    assert [f["reservedConcurrentExecutions"] for f in functions] == [5, 5]


@pytest.mark.parametrize("program", ["aws", "aws-serving"])
def test_every_declared_s3_bucket_is_tls_only_and_loses_it_when_its_policy_goes(plans, program) -> None:
    """The GPU hosts' bucket and the serving layers' bucket each carry the TLS-only policy; without it, or with a
    policy that no longer denies plain HTTP, the bucket is named in a finding."""
    tls = stack_rule("storage-tls-only")
    resources = triples(plans[program])
    buckets = [(name, p["bucket"]) for t, name, p in resources if t == rules.AWS_S3_BUCKET]
    assert buckets and tls.check(resources, plans[program].limits) == []
    for name, bucket in buckets:
        (policy_index,) = [i for i, (t, _, p) in enumerate(resources)
                           if t == rules.AWS_S3_BUCKET_POLICY and p["bucket"] == bucket]
        without = resources[:policy_index] + resources[policy_index + 1:]
        (finding,) = tls.check(without, plans[program].limits)
        assert f"S3 bucket {name} ({bucket}) accepts requests without TLS" in finding
        for path, bad in (("Condition.Bool.aws:SecureTransport", "true"), ("Effect", "Allow"),
                          ("Resource", [f"arn:aws:s3:::{bucket}"]), ("Principal", {"AWS": "arn:aws:iam::1:root"})):
            changed = copy.deepcopy(resources)
            document = json.loads(changed[policy_index][2]["policy"])
            statement = document["Statement"][0]
            *parents, last = path.split(".")
            for part in parents:
                statement = statement[part]
            statement[last] = bad
            changed[policy_index][2]["policy"] = json.dumps(document)
            (finding,) = tls.check(changed, plans[program].limits)
            assert name in finding, path


def _gcp_resources(plans) -> tuple[list[tuple[str, str, dict[str, Any]]], dict[str, Any], dict[str, Any]]:
    """The gcp program's resources, its TPU node and its teardown workflow (props free to mutate)."""
    resources = triples(plans["gcp"])
    (node,) = [p for t, _, p in resources if t == rules.GCP_TPU_VM]
    (wf,) = [p for t, _, p in resources if t == rules.GCP_WORKFLOW]
    return resources, node, wf


def _member_of(props: dict[str, Any]) -> str:
    return f"serviceAccount:{props['serviceAccount']['email']}"


def _node_url(node: dict[str, Any]) -> str:
    return tpu_node_url(node["project"], node["zone"], node["name"])


def test_the_declared_tpu_teardown_is_bounded(plans) -> None:
    """The node's own account holds no TPU permission; the teardown account, which only the teardown workflow runs
    as, does; the scheduler job only starts that workflow, as a caller account that may only invoke workflows."""
    resources, node, wf = _gcp_resources(plans)
    assert stack_rule("tpu-teardown-bounded").check(resources, plans["gcp"].limits) == []
    teardown = wf["serviceAccount"]
    assert teardown != node["serviceAccount"]["email"]
    (job,) = [p for t, _, p in resources if t == rules.GCP_SCHEDULER_JOB]
    caller = job["httpTarget"]["oauthToken"]["serviceAccountEmail"]
    assert caller not in (teardown, node["serviceAccount"]["email"])
    assert job["httpTarget"]["httpMethod"] == "POST"
    assert job["httpTarget"]["uri"].startswith("https://workflowexecutions.googleapis.com/v1/")
    assert job["httpTarget"]["uri"] == workflow_executions_url(wf["project"], wf["region"], wf["name"])
    teardown_grants = sorted((p["role"].startswith("projects/") and "custom" or p["role"], p["member"])
                             for t, _, p in resources if t == rules.GCP_PROJECT_MEMBER
                             and p["member"] in (f"serviceAccount:{teardown}", f"serviceAccount:{caller}"))
    assert teardown_grants == sorted([("custom", f"serviceAccount:{teardown}"),
                                      ("roles/workflows.invoker", f"serviceAccount:{caller}")])
    (role,) = [p for t, _, p in resources if t == rules.GCP_CUSTOM_ROLE and "Teardown" in str(p.get("roleId"))]
    assert sorted(role["permissions"]) == ["tpu.nodes.delete", "tpu.nodes.get"]


def _node_may_delete(resources, node, wf) -> None:
    """The self-delete shape ernie had before: the teardown role granted to the node's own account (with a
    condition naming the node, which Cloud TPU never evaluates: it bounds nothing)."""
    (role,) = [p for t, _, p in resources if t == rules.GCP_PROJECT_MEMBER and "roles/ernieTpu" in p["role"]]
    resources.append((rules.GCP_PROJECT_MEMBER, "tpu-self-delete", {
        "project": node["project"], "role": role["role"], "member": _member_of(node),
        "condition": {"title": "own node", "expression": f'resource.name == "{_node_url(node)}"'}}))


def _node_is_tpu_admin(resources, node, wf) -> None:
    resources.append((rules.GCP_PROJECT_BINDING, "tpu-admins", {
        "project": node["project"], "role": "roles/tpu.admin", "members": ["user:a@example.com", _member_of(node)]}))


def _node_may_mint_teardown_tokens(resources, node, wf) -> None:
    resources.append((rules.GCP_ACCOUNT_MEMBER, "tpu-borrow", {
        "serviceAccountId": f"projects/{node['project']}/serviceAccounts/{wf['serviceAccount']}",
        "role": "roles/iam.serviceAccountTokenCreator", "member": _member_of(node)}))


def _someone_may_act_as_teardown(resources, node, wf) -> None:
    resources.append((rules.GCP_ACCOUNT_MEMBER, "td-user", {
        "serviceAccountId": f"projects/{node['project']}/serviceAccounts/{wf['serviceAccount']}",
        "role": "roles/iam.serviceAccountUser", "member": "user:a@example.com"}))


def _workflow_deletes_another_node(resources, node, wf) -> None:
    wf["sourceContents"] = render_teardown_workflow(_node_url(node).rsplit("/", 1)[0] + "/someone-elses-node")


def _workflow_never_gives_up(resources, node, wf) -> None:
    """An unbounded variant: the same loop without its deadline."""
    source = wf["sourceContents"]
    start = source.index("    - give_up:")
    wf["sourceContents"] = source[:start] + source[source.index("    - wait:"):]


def _workflow_runs_as_the_node(resources, node, wf) -> None:
    wf["serviceAccount"] = node["serviceAccount"]["email"]


def _no_workflow(resources, node, wf) -> None:
    resources[:] = [r for r in resources if r[0] != rules.GCP_WORKFLOW]


def _no_job(resources, node, wf) -> None:
    resources[:] = [r for r in resources if r[0] != rules.GCP_SCHEDULER_JOB]


def _job_starts_as_the_teardown_account(resources, node, wf) -> None:
    (job,) = [p for t, _, p in resources if t == rules.GCP_SCHEDULER_JOB]
    job["httpTarget"]["oauthToken"]["serviceAccountEmail"] = wf["serviceAccount"]


def _node_on_the_default_account(resources, node, wf) -> None:
    del node["serviceAccount"]


@pytest.mark.parametrize(("change", "fragments"), [
    (_node_may_delete, ["TPU node tpu-tpu runs as ernie-gcp-sa@", "tpu-self-delete lets delete every TPU node",
                        "no IAM condition narrows it"]),
    (_node_is_tpu_admin, ["tpu-admins lets delete every TPU node in the project (roles/tpu.admin",
                          "tpu-admins gives user:a@example.com roles/tpu.admin", "is no teardown account"]),
    (_node_may_mint_teardown_tokens, ["tpu-borrow lets act as service account ernie-gcp-td@",
                                      "could borrow the teardown account"]),
    (_someone_may_act_as_teardown, ["td-user lets user:a@example.com act as ernie-gcp-td@"]),
    (_workflow_deletes_another_node, ["workflow tpu-teardown-wf runs as ernie-gcp-td@", "not the bounded teardown",
                                      "TPU node tpu-tpu has no teardown"]),
    (_workflow_never_gives_up, ["workflow tpu-teardown-wf runs as ernie-gcp-td@", "not the bounded teardown",
                                "TPU node tpu-tpu has no teardown"]),
    (_workflow_runs_as_the_node, ["TPU node tpu-tpu has no teardown",
                                  "tpu-teardown gives serviceAccount:ernie-gcp-td@", "is no teardown account"]),
    (_no_workflow, ["TPU node tpu-tpu has no teardown", "is no teardown account"]),
    (_no_job, ["TPU node tpu-tpu has no teardown"]),
    (_job_starts_as_the_teardown_account, ["TPU node tpu-tpu has no teardown"]),
    (_node_on_the_default_account, ["runs as the project's default compute service account"]),
])
def test_an_unbounded_or_missing_tpu_teardown_is_refused(plans, change, fragments) -> None:
    resources, node, wf = _gcp_resources(plans)
    change(resources, node, wf)
    findings = stack_rule("tpu-teardown-bounded").check(resources, plans["gcp"].limits)
    for fragment in fragments:
        assert any(fragment in f for f in findings), (fragment, findings)
