"""Guardrail rules: plain functions over the resources a stack declares.

A resource rule takes `(resource_type, props)` as the Pulumi engine sees them (camelCase keys, numbers possibly
as floats) and returns a list of findings, empty when the resource is fine. A stack rule takes every resource
as `(resource_type, name, props)` with the stack's `Limits` (from its config). `ernie check` runs `RULES` and
`STACK_RULES` over the resources the program declares under mocks; the policy pack (policy/pack.py, used as
`pulumi up --policy-pack policy`) wraps the same functions, so both report the same findings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from catalog import pricing
from catalog.limits import MAX_TTL_MINUTES, SERVING_MAX_RESERVED_CONCURRENCY, SERVING_MAX_TIMEOUT_SECONDS
from catalog.reach import world_ranges
from catalog.teardown import render_teardown_workflow, tpu_node_url, workflow_executions_url
from catalog.tpu_catalog import lookup_tpu

SSH_PORT = 22
TTL_LABEL = "ernie-ttl"

GCP_FIREWALL = "gcp:compute/firewall:Firewall"
GCP_TPU_VM = "gcp:tpu/v2Vm:V2Vm"
GCP_BUCKET = "gcp:storage/bucket:Bucket"
GCP_SERVICE_ACCOUNT = "gcp:serviceaccount/account:Account"
GCP_CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
GCP_PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"
GCP_PROJECT_BINDING = "gcp:projects/iAMBinding:IAMBinding"
GCP_PROJECT_POLICY = "gcp:projects/iAMPolicy:IAMPolicy"
GCP_ACCOUNT_MEMBER = "gcp:serviceaccount/iAMMember:IAMMember"
GCP_ACCOUNT_BINDING = "gcp:serviceaccount/iAMBinding:IAMBinding"
GCP_SCHEDULER_JOB = "gcp:cloudscheduler/job:Job"
GCP_WORKFLOW = "gcp:workflows/workflow:Workflow"
AWS_INSTANCE = "aws:ec2/instance:Instance"
AWS_SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
AWS_INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
AWS_EBS_VOLUME = "aws:ebs/volume:Volume"
AWS_S3_SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
AWS_S3_PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
AWS_EIP = "aws:ec2/eip:Eip"
AWS_S3_BUCKET = "aws:s3/bucket:Bucket"
AWS_S3_BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
AWS_S3_OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
AWS_LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
AWS_LAMBDA_FUNCTION = "aws:lambda/function:Function"
AWS_LAMBDA_LAYER = "aws:lambda/layerVersion:LayerVersion"
AWS_HTTP_API = "aws:apigatewayv2/api:Api"

# What bills while it exists or per use, and where it carries ernie's TTL: its labels (GCP), its tags (AWS; an
# instance's root volume bills too, so its volume tags as well), or, for a Lambda layer version, which takes no
# tags, its description as `ernie-ttl=<minutes>`. `ernie sweep` reads the TTL from the same places.
BILLABLE_TTL_FIELDS: dict[str, tuple[str, ...]] = {
    GCP_TPU_VM: ("labels",),
    GCP_BUCKET: ("labels",),
    AWS_INSTANCE: ("tags", "volumeTags"),
    AWS_EBS_VOLUME: ("tags",),
    AWS_EIP: ("tags",),
    AWS_S3_BUCKET: ("tags",),
    AWS_S3_OBJECT: ("tags",),
    AWS_LOG_GROUP: ("tags",),
    AWS_LAMBDA_FUNCTION: ("tags",),
    AWS_HTTP_API: ("tags",),
    AWS_LAMBDA_LAYER: ("description",),
}
_TTL_VALUE = re.compile(r"(\d+)m?")  # "180" (AWS tags) or "180m" (GCP label values)
_TTL_IN_DESCRIPTION = re.compile(rf"{TTL_LABEL}=(\d+)")

Check = Callable[[str, Mapping[str, Any]], list[str]]


def _port_range_has(low: Any, high: Any, port: int) -> bool:
    return low is None or high is None or int(low) <= port <= int(high)


def _gcp_allows_port(allow: Mapping[str, Any], port: int) -> bool:
    if str(allow.get("protocol", "")).lower() not in ("tcp", "all", "6"):
        return False
    ports = allow.get("ports") or []
    if not ports:
        return True
    for spec in ports:
        low, _, high = str(spec).partition("-")
        if int(low) <= port <= int(high or low):
            return True
    return False


def _aws_allows_port(protocol: Any, from_port: Any, to_port: Any, port: int) -> bool:
    if str(protocol).lower() in ("-1", "all"):
        return True
    return str(protocol).lower() in ("tcp", "6") and _port_range_has(from_port, to_port, port)


def ssh_open_to_world(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Port 22 admitted from the internet: 0.0.0.0/0, ::/0, or ranges as broad (catalog/reach.py)."""
    if resource_type == GCP_FIREWALL and props.get("direction", "INGRESS") == "INGRESS":
        world = world_ranges(props.get("sourceRanges") or [])
        if world and any(_gcp_allows_port(a, SSH_PORT) for a in props.get("allows") or []):
            return [f"firewall admits port 22 from {', '.join(world)}"]
    if resource_type == AWS_INGRESS_RULE:
        world = world_ranges(c for c in (props.get("cidrIpv4"), props.get("cidrIpv6")) if c)
        if world and _aws_allows_port(props.get("ipProtocol"), props.get("fromPort"), props.get("toPort"), SSH_PORT):
            return [f"ingress rule admits port 22 from {', '.join(world)}"]
    if resource_type == AWS_SECURITY_GROUP:
        findings = []
        for rule in props.get("ingress") or []:
            world = world_ranges([*(rule.get("cidrBlocks") or []), *(rule.get("ipv6CidrBlocks") or [])])
            if world and _aws_allows_port(rule.get("protocol"), rule.get("fromPort"), rule.get("toPort"), SSH_PORT):
                findings.append(f"inline ingress admits port 22 from {', '.join(world)}")
        return findings
    return []


def ttl_missing(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """An accelerator host with nothing that ends it: a forgotten one bills until someone notices. (A TPU node is
    deleted from outside itself: the stack rule tpu-teardown-bounded checks its teardown.)"""
    if resource_type == AWS_INSTANCE:
        findings = []
        if props.get("instanceInitiatedShutdownBehavior") != "terminate":
            findings.append("instance stops instead of terminating when it shuts down (its disks keep billing)")
        if "shutdown -h" not in (props.get("userData") or ""):
            findings.append("instance's user data schedules no TTL shutdown")
        return findings
    return []


def storage_unencrypted(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Disks and buckets without encryption at rest."""
    if resource_type == AWS_INSTANCE and not (props.get("rootBlockDevice") or {}).get("encrypted"):
        return ["instance root volume is not encrypted"]
    if resource_type == AWS_EBS_VOLUME and not props.get("encrypted"):
        return ["EBS volume is not encrypted"]
    if resource_type == AWS_S3_SSE:
        algorithms = [(r.get("applyServerSideEncryptionByDefault") or {}).get("sseAlgorithm")
                      for r in props.get("rules") or []]
        if not any(algorithms):
            return ["bucket encryption configuration names no algorithm"]
    return []


def storage_public(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Buckets that could be made readable by anyone."""
    if resource_type == GCP_BUCKET:
        findings = []
        if props.get("publicAccessPrevention") != "enforced":
            findings.append("bucket does not enforce public access prevention")
        if not props.get("uniformBucketLevelAccess"):
            findings.append("bucket allows per-object ACLs (uniform bucket-level access is off)")
        return findings
    if resource_type == AWS_S3_PUBLIC_ACCESS_BLOCK:
        keys = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
        off = [k for k in keys if not props.get(k)]
        return [f"bucket public access block leaves {', '.join(off)} off"] if off else []
    return []


def _ttl_minutes(field: str, value: Any) -> int | None:
    if field == "description":
        match = _TTL_IN_DESCRIPTION.search(str(value or ""))
    else:
        match = _TTL_VALUE.fullmatch(str((value or {}).get(TTL_LABEL, "")))
    return int(match.group(1)) if match else None


def ttl_label_missing(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """A billable resource without a readable TTL: `ernie sweep` cannot tell when it outlived its stack."""
    findings = []
    for field in BILLABLE_TTL_FIELDS.get(resource_type, ()):
        minutes = _ttl_minutes(field, props.get(field))
        if minutes is None:
            where = f"`{TTL_LABEL}=<minutes>` in its description" if field == "description" else \
                f"{TTL_LABEL} in its {field}"
            findings.append(f"billable resource carries no {where}")
        elif not 1 <= minutes <= MAX_TTL_MINUTES:
            findings.append(f"{TTL_LABEL} in its {field} is {minutes} minutes; accepted: 1 to {MAX_TTL_MINUTES}")
    return findings


def lambda_out_of_bounds(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """A function that may run past the HTTP API's patience, or scale without limit, billing every instance."""
    if resource_type != AWS_LAMBDA_FUNCTION:
        return []
    findings = []
    timeout = props.get("timeout")  # unset: Lambda's default of 3 s
    if timeout is not None and not 1 <= timeout <= SERVING_MAX_TIMEOUT_SECONDS:
        findings.append(f"timeout is {timeout:g} s; accepted: 1 to {SERVING_MAX_TIMEOUT_SECONDS} "
                        "(the HTTP API gives up after 30 s while the function runs on, billed)")
    reserved = props.get("reservedConcurrentExecutions")
    if reserved is None or reserved == -1:
        findings.append("no reserved concurrency: the function scales to the account's whole concurrency "
                        f"(1000 by default); set 1 to {SERVING_MAX_RESERVED_CONCURRENCY}")
    elif not 1 <= reserved <= SERVING_MAX_RESERVED_CONCURRENCY:
        findings.append(f"reserved concurrency is {reserved:g}; accepted: 1 to {SERVING_MAX_RESERVED_CONCURRENCY} "
                        "(0 disables the function)")
    return findings


def imdsv2_not_required(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Instances answering IMDSv1, whose credentials a server-side request forgery can read."""
    if resource_type == AWS_INSTANCE and (props.get("metadataOptions") or {}).get("httpTokens") != "required":
        return ["instance metadata accepts IMDSv1 (set metadata_options http_tokens=required)"]
    return []


@dataclass(frozen=True)
class Rule:
    """One guardrail: a name, what it protects against, and its check."""

    name: str
    description: str
    check: Check


RULES: tuple[Rule, ...] = (
    Rule("ssh-open-to-world", "SSH must not be reachable from the whole internet", ssh_open_to_world),
    Rule("ttl-missing", "Accelerator hosts must end themselves at their TTL", ttl_missing),
    Rule("ttl-label-missing", f"Every billable resource must carry the {TTL_LABEL} label or tag",
         ttl_label_missing),
    Rule("storage-unencrypted", "Disks and buckets must be encrypted at rest", storage_unencrypted),
    Rule("storage-public", "Buckets must not be publicly accessible", storage_public),
    Rule("imdsv2-required", "EC2 instances must require IMDSv2", imdsv2_not_required),
    Rule("lambda-bounds", "Lambda functions must have a bounded timeout and reserved concurrency",
         lambda_out_of_bounds),
)


@dataclass(frozen=True)
class Limits:
    """What a whole stack may add up to, from its config (infra/config.py)."""

    max_usd_per_hour: float
    """ernie:maxUsdPerHour: the most the stack's hosts and disks may cost per hour on demand."""


Resource = tuple[str, str, Mapping[str, Any]]
"""(type token, name, props) of one declared resource."""
StackCheck = Callable[[Sequence[Resource], Limits], list[str]]


def _disk(props: Mapping[str, Any]) -> dict[str, Any]:
    # No size: the AMI's own, only known once the image is looked up (not during a preview).
    return {"disk_gib": float(props.get("volumeSize") or props.get("size") or 0),
            "disk_type": props.get("volumeType") or "gp3"}


def hourly_usd(resource_type: str, props: Mapping[str, Any]) -> float | None:
    """On-demand USD/hour of one resource by pricing.quote (the inventory's figure): TPU chips, EC2 instances and
    their disks.

    0.0 for what bills per use or not at all (networks, roles, Lambda, buckets); None for a host or disk the
    catalog has no price for.
    """
    try:
        if resource_type == GCP_TPU_VM:
            tpu = lookup_tpu(str(props.get("acceleratorType", "")))
            return None if tpu is None else pricing.quote("gcp", tpu.generation.name, tpu.chips).usd_per_hour
        if resource_type == AWS_INSTANCE:
            return pricing.quote("aws", str(props.get("instanceType", "")), 1,
                                 **_disk(props.get("rootBlockDevice") or {})).usd_per_hour
        if resource_type == AWS_EBS_VOLUME:
            return pricing.quote("aws", None, 0, **_disk(props)).usd_per_hour
    except KeyError:
        return None
    return 0.0


def stack_cost_over_ceiling(resources: Sequence[Resource], limits: Limits) -> list[str]:
    """The stack's hosts and disks cost more per hour than its configured ceiling, or cannot be priced."""
    total, unpriced = 0.0, []
    for typ, name, props in resources:
        usd = hourly_usd(typ, props)
        if usd is None:
            unpriced.append(name)
        else:
            total += usd
    findings = []
    if unpriced:
        findings.append(f"{pricing.PRICES_CSV.name} has no price for {', '.join(unpriced)}: "
                        "the stack's hourly cost cannot be checked against ernie:maxUsdPerHour")
    if total > limits.max_usd_per_hour:
        findings.append(f"hosts and disks cost {total:.2f} USD/hour on demand, over ernie:maxUsdPerHour "
                        f"{limits.max_usd_per_hour:g}; choose fewer or smaller accelerators, or raise the ceiling")
    return findings


def _document(value: Any) -> Mapping[str, Any]:
    """An IAM-style policy document as a resource holds it: JSON text, or already a mapping."""
    if isinstance(value, Mapping):
        return value
    try:
        document = json.loads(value or "{}")
    except (TypeError, ValueError):
        return {}
    return document if isinstance(document, Mapping) else {}


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def denies_plain_http(policy: Any, bucket: str) -> bool:
    """The bucket policy denies every principal every S3 action on `bucket` and its objects without TLS."""
    for statement in _as_list(_document(policy).get("Statement") or []):
        if not isinstance(statement, Mapping) or statement.get("Effect") != "Deny":
            continue
        principal = statement.get("Principal")
        everyone = principal == "*" or (isinstance(principal, Mapping) and "*" in _as_list(principal.get("AWS")))
        every_action = bool({"s3:*", "*"} & set(_as_list(statement.get("Action"))))
        resources = {str(r).split(":::", 1)[-1] for r in _as_list(statement.get("Resource"))}
        condition = ((statement.get("Condition") or {}).get("Bool") or {}).get("aws:SecureTransport")
        without_tls = [str(v).lower() for v in _as_list(condition)] == ["false"]
        if everyone and every_action and {bucket, f"{bucket}/*"} <= resources and without_tls:
            return True
    return False


def s3_accepts_plain_http(resources: Sequence[Resource], limits: Limits) -> list[str]:
    """S3 buckets that answer requests made without TLS: S3 does, unless a bucket policy denies them."""
    tls_only = {str(props.get("bucket")) for typ, _, props in resources
                if typ == AWS_S3_BUCKET_POLICY and denies_plain_http(props.get("policy"), str(props.get("bucket")))}
    return [f"S3 bucket {name} ({props.get('bucket')}) accepts requests without TLS: no bucket policy denies "
            "s3:* on it and its objects to every principal when aws:SecureTransport is false "
            "(infra/aws_storage.py private_bucket declares one)"
            for typ, name, props in resources if typ == AWS_S3_BUCKET and str(props.get("bucket")) not in tls_only]


# Predefined roles holding tpu.nodes.delete, and roles (predefined or by permission) that let their holder act as
# another service account or grant itself more: with either, a host's account could reach the teardown.
TPU_DELETE = "tpu.nodes.delete"
TPU_DELETING_ROLES = frozenset({"roles/owner", "roles/editor", "roles/tpu.admin"})
ACT_AS_ROLES = frozenset({
    "roles/owner", "roles/editor", "roles/iam.serviceAccountTokenCreator", "roles/iam.serviceAccountUser",
    "roles/iam.serviceAccountKeyAdmin", "roles/iam.serviceAccountAdmin", "roles/iam.workloadIdentityUser",
    "roles/iam.securityAdmin", "roles/resourcemanager.projectIamAdmin"})
ACT_AS_PERMISSIONS = frozenset({
    "iam.serviceAccounts.actAs", "iam.serviceAccounts.getAccessToken", "iam.serviceAccounts.implicitDelegation",
    "iam.serviceAccounts.signBlob", "iam.serviceAccounts.signJwt", "iam.serviceAccountKeys.create",
    "iam.serviceAccounts.setIamPolicy", "resourcemanager.projects.setIamPolicy"})


@dataclass(frozen=True)
class _Grant:
    """One role given to one member, by one resource, on the project or on one service account."""

    resource: str
    role: str
    member: str
    on_account: str | None
    """The service account the grant is on (an account-level grant), or None (the project)."""


def _email(member: Any) -> str:
    """`serviceAccount:E`, `projects/P/serviceAccounts/E` or `E` -> E."""
    return str(member or "").rsplit(":", 1)[-1].rsplit("/", 1)[-1]


def _grants(resources: Sequence[Resource]) -> list[_Grant]:
    grants = []
    for typ, name, props in resources:
        if typ in (GCP_PROJECT_MEMBER, GCP_ACCOUNT_MEMBER, GCP_PROJECT_BINDING, GCP_ACCOUNT_BINDING):
            account = _email(props.get("serviceAccountId")) if typ in (GCP_ACCOUNT_MEMBER, GCP_ACCOUNT_BINDING) \
                else None
            members = (props.get("members") or []) if typ in (GCP_PROJECT_BINDING, GCP_ACCOUNT_BINDING) \
                else [props.get("member")]
            grants += [_Grant(name, str(props.get("role")), str(m), account) for m in members]
        elif typ == GCP_PROJECT_POLICY:
            for binding in _as_list(_document(props.get("policyData")).get("bindings") or []):
                grants += [_Grant(name, str(binding.get("role")), str(m), None) for m in binding.get("members") or []]
    return grants


def tpu_teardown_unbounded(resources: Sequence[Resource], limits: Limits) -> list[str]:
    """A TPU teardown that is missing, or whose power to delete reaches beyond its own node.

    `tpu.nodes.delete` granted on the project reaches every TPU node in it, and no IAM condition narrows it to
    one node (Cloud TPU gives conditions no resource name). Bounded means: no TPU node runs as an account that
    holds it or may act as other accounts; whoever holds it is a teardown account, the account of Cloud
    Workflows whose source is exactly the bounded teardown of one of this stack's nodes, and no one is granted to
    act as it; and each node has such a workflow.
    """
    nodes = {tpu_node_url(str(p.get("project")), str(p.get("zone")), str(p.get("name"))): name
             for typ, name, p in resources if typ == GCP_TPU_VM}
    runs_as = {name: (p.get("serviceAccount") or {}).get("email") for typ, name, p in resources if typ == GCP_TPU_VM}
    node_accounts = {str(email): name for name, email in runs_as.items() if email}
    custom = {str(p.get("name") or f"projects/{p.get('project')}/roles/{p.get('roleId')}"):
              set(p.get("permissions") or []) for typ, _, p in resources if typ == GCP_CUSTOM_ROLE}
    deleting = TPU_DELETING_ROLES | {role for role, perms in custom.items() if TPU_DELETE in perms}
    acting = ACT_AS_ROLES | {role for role, perms in custom.items() if perms & ACT_AS_PERMISSIONS}
    grants = _grants(resources)
    holders = {_email(g.member) for g in grants if g.on_account is None and g.role in deleting}
    # A teardown account runs only workflows whose source is exactly the bounded teardown of one of this stack's
    # nodes (delete, wait for 404 with capped backoff, give up at the deadline: catalog/teardown.py).
    workflows = [(name, _email(p.get("serviceAccount")), str(p.get("sourceContents") or ""),
                  workflow_executions_url(str(p.get("project")), str(p.get("region")), str(p.get("name"))))
                 for typ, name, p in resources if typ == GCP_WORKFLOW]
    # Started by a scheduler job (POST to its executions) as an account that may not delete nodes itself.
    started = {str(t.get("uri")) for typ, _, p in resources if typ == GCP_SCHEDULER_JOB
               for t in [p.get("httpTarget") or {}]
               if t.get("httpMethod") == "POST" and _email((t.get("oauthToken") or {}).get("serviceAccountEmail"))
               not in holders | set(node_accounts)}
    sources = {render_teardown_workflow(url): url for url in nodes}
    teardown_accounts = {email for _, email, _, _ in workflows}
    findings = [f"TPU node {name} runs as the project's default compute service account (Editor by default, which "
                "may delete any TPU node): give it an account of its own"
                for name, email in runs_as.items() if not email]
    for g in grants:
        email = _email(g.member)
        deletes = g.on_account is None and g.role in deleting
        if email in node_accounts and deletes:
            findings.append(f"TPU node {node_accounts[email]} runs as {email}, which {g.resource} lets delete every "
                            f"TPU node in the project ({g.role}; no IAM condition narrows it to one node): any "
                            "workload on the node could delete other people's nodes with its metadata token")
        elif deletes and email not in teardown_accounts:
            findings.append(f"{g.resource} gives {g.member} {g.role}, which may delete every TPU node in the project, "
                            "and it is no teardown account: only the account a teardown workflow of this stack runs as "
                            "may hold it")
        if email in node_accounts and g.role in acting:
            target = f"service account {g.on_account}" if g.on_account else "any service account of the project"
            findings.append(f"TPU node {node_accounts[email]} runs as {email}, which {g.resource} lets act as {target} "
                            f"({g.role}): a workload on the node could borrow the teardown account")
        elif g.on_account in holders and g.role in acting:
            findings.append(f"{g.resource} lets {g.member} act as {g.on_account} ({g.role}), which may delete every "
                            "TPU node in the project: only its teardown workflow may run as it")
    torn_down = set()
    for name, email, source, executions in workflows:
        if email not in holders:
            continue
        if source not in sources:
            findings.append(f"workflow {name} runs as {email}, which may delete every TPU node in the project, but "
                            "its source is not the bounded teardown of one of this stack's TPU nodes "
                            "(catalog/teardown.py render_teardown_workflow)")
        elif email not in node_accounts and executions in started:
            torn_down.add(sources[source])
    findings += [f"TPU node {name} has no teardown: no workflow, started by a Cloud Scheduler job, deletes {url} "
                 "until gone as an account that may delete TPU nodes, so a forgotten node bills until someone notices"
                 for url, name in nodes.items() if url not in torn_down]
    return findings


@dataclass(frozen=True)
class StackRule:
    """One guardrail over the stack as a whole."""

    name: str
    description: str
    check: StackCheck


STACK_RULES: tuple[StackRule, ...] = (
    StackRule("cost-ceiling", "The stack's hourly cost must stay under ernie:maxUsdPerHour", stack_cost_over_ceiling),
    StackRule("storage-tls-only", "S3 buckets must refuse requests made without TLS", s3_accepts_plain_http),
    StackRule("tpu-teardown-bounded", "Every TPU node must be deleted at its TTL by a teardown no host can use "
              "to delete other nodes", tpu_teardown_unbounded),
)
STACK_TYPE = "pulumi:pulumi:Stack"
"""The resource type stack findings are reported against."""


@dataclass(frozen=True)
class Finding:
    """A rule's finding on one resource."""

    rule: str
    resource_type: str
    resource_name: str
    message: str


def evaluate(resources: Iterable[Resource], limits: Limits, stack: str) -> list[Finding]:
    """Run every resource rule over (type, name, props) triples, then every stack rule over all of them."""
    resources = list(resources)
    return [*(Finding(rule.name, typ, name, message)
              for typ, name, props in resources
              for rule in RULES
              for message in rule.check(typ, props)),
            *(Finding(rule.name, STACK_TYPE, stack, message)
              for rule in STACK_RULES
              for message in rule.check(resources, limits))]
