"""Guardrail rules: plain functions over one resource's type token and its properties.

Each rule takes `(resource_type, props)` as the Pulumi engine sees them (camelCase keys, numbers possibly as
floats) and returns a list of findings, empty when the resource is fine. `ernie check` runs `RULES` over the
resources the program declares under mocks; a Pulumi policy pack can wrap the same functions
(`ResourceValidationPolicy(validate=...)` gets the same type token and props).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SSH_PORT = 22
TTL_LABEL = "ernie-ttl"

GCP_FIREWALL = "gcp:compute/firewall:Firewall"
GCP_TPU_VM = "gcp:tpu/v2Vm:V2Vm"
GCP_BUCKET = "gcp:storage/bucket:Bucket"
AWS_INSTANCE = "aws:ec2/instance:Instance"
AWS_SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
AWS_INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
AWS_EBS_VOLUME = "aws:ebs/volume:Volume"
AWS_S3_SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
AWS_S3_PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"

Check = Callable[[str, Mapping[str, Any]], list[str]]


def _is_world(cidr: str) -> bool:
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError:
        return False


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
    """Port 22 admitted from 0.0.0.0/0 or ::/0."""
    if resource_type == GCP_FIREWALL and props.get("direction", "INGRESS") == "INGRESS":
        world = [r for r in props.get("sourceRanges") or [] if _is_world(r)]
        if world and any(_gcp_allows_port(a, SSH_PORT) for a in props.get("allows") or []):
            return [f"firewall admits port 22 from {', '.join(world)}"]
    if resource_type == AWS_INGRESS_RULE:
        world = [c for c in (props.get("cidrIpv4"), props.get("cidrIpv6")) if c and _is_world(c)]
        if world and _aws_allows_port(props.get("ipProtocol"), props.get("fromPort"), props.get("toPort"), SSH_PORT):
            return [f"ingress rule admits port 22 from {', '.join(world)}"]
    if resource_type == AWS_SECURITY_GROUP:
        findings = []
        for rule in props.get("ingress") or []:
            world = [c for c in [*(rule.get("cidrBlocks") or []), *(rule.get("ipv6CidrBlocks") or [])] if _is_world(c)]
            if world and _aws_allows_port(rule.get("protocol"), rule.get("fromPort"), rule.get("toPort"), SSH_PORT):
                findings.append(f"inline ingress admits port 22 from {', '.join(world)}")
        return findings
    return []


def ttl_missing(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """An accelerator host with nothing that ends it: a forgotten one bills until someone notices."""
    if resource_type == GCP_TPU_VM:
        findings = []
        if TTL_LABEL not in (props.get("labels") or {}):
            findings.append(f"TPU node has no {TTL_LABEL} label")
        script = (props.get("metadata") or {}).get("startup-script") or ""
        if "DELETE" not in script:
            findings.append("TPU node's startup script does not delete the node at its TTL")
        return findings
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
    Rule("storage-unencrypted", "Disks and buckets must be encrypted at rest", storage_unencrypted),
    Rule("storage-public", "Buckets must not be publicly accessible", storage_public),
    Rule("imdsv2-required", "EC2 instances must require IMDSv2", imdsv2_not_required),
)


@dataclass(frozen=True)
class Finding:
    """A rule's finding on one resource."""

    rule: str
    resource_type: str
    resource_name: str
    message: str


def evaluate(resources: Iterable[tuple[str, str, Mapping[str, Any]]]) -> list[Finding]:
    """Run every rule over (type, name, props) triples."""
    return [Finding(rule.name, typ, name, message)
            for typ, name, props in resources
            for rule in RULES
            for message in rule.check(typ, props)]
