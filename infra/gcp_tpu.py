"""TpuSlice: one TPU VM or multi-host pod slice with its own network, service account, bucket and TTL teardown."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pulumi
import pulumi_gcp as gcp

from infra.config import ConfigError
from infra.naming import SERVICE_ACCOUNT_MAX, gcp_name
from infra.settle import SERVICE_ACCOUNT_SETTLE_S, Settled
from infra.grants import TPU_BUCKET_ROLE, TPU_PROJECT_ROLES, TPU_SCOPES, TPU_TEARDOWN_PERMISSIONS
from catalog.teardown import (
    SCHEDULE_TIME_ZONE,
    TEARDOWN_INVOKER_ROLE,
    TEARDOWN_SCOPE,
    render_teardown_schedule,
    render_teardown_workflow,
    workflow_executions_url,
    scheduler_region,
    teardown_deadline,
    tpu_node_url,
)

SUBNET_CIDR = "10.128.0.0/20"


def utc_now() -> datetime:
    """The clock a slice's teardown deadline is counted on."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class TpuSliceArgs:
    """Everything a TpuSlice needs; validated by config.py before it gets here."""

    project: str
    """Google Cloud project id every resource is created in (gcp:project)."""
    zone: str
    """Zone offering the accelerator type, e.g. us-central2-b."""
    region: str
    """The zone's region: the subnet's, and the bucket's continent."""
    node_name: str
    """The TPU node's name, also in the URL its teardown job deletes."""
    accelerator_type: str
    """e.g. "v4-32"; one resource however many hosts it spans."""
    runtime_version: str
    """TPU VM software image, e.g. tpu-ubuntu2204-base; config.py checked it fits the generation."""
    chips: int
    """TPU chips in the whole slice; each worker's share (the inventory's `chips`) is counted from the node's
    network endpoints, one per worker VM, which the API returns: the catalog's host count is only a forecast."""
    spot: bool
    """Spot capacity: cheaper, and preemptible at any time."""
    ssh_allowed_cidrs: Sequence[str]
    """The only sources admitted to port 22."""
    ssh_user: str
    """The login `ssh_public_key` is installed for."""
    ssh_public_key: pulumi.Input[str]
    """OpenSSH public key line installed for `ssh_user` on every worker."""
    ttl_minutes: int
    """Minutes after the node is up (re-armed by each `pulumi up`) at which its teardown job deletes it."""
    labels: Mapping[str, str]
    """Applied to every resource that takes labels (ernie-stack, ernie-ttl)."""
    clock: Callable[[], datetime] = utc_now
    """What the teardown deadline is counted from once the node exists; tests fix it."""


class TpuSlice(pulumi.ComponentResource):
    """A TPU VM slice in a dedicated VPC; SSH only from the allowed ranges; deleted at its TTL from outside it."""

    hosts: pulumi.Output[list[dict[str, Any]]]
    """One entry per worker, in the inventory's host shape."""
    bucket_uri: pulumi.Output[str]
    """gs:// URI of the run's bucket."""
    service_account_email: pulumi.Output[str]
    teardown_schedule: pulumi.Output[str]
    """Cron schedule (UTC) of the job that deletes the node: ttl_minutes after it was up, re-armed by `pulumi up`."""

    def __init__(self, name: str, args: TpuSliceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ernie:gcp:TpuSlice", name, {}, opts)
        _check_offered(args)
        tag = gcp_name(args.node_name)
        network, subnet = self._network(name, args, tag)
        account, account_email, bucket, grants = self._workload_access(name, args)
        teardown_email, teardown_grant = self._teardown_access(name, args)
        node = self._node(name, args, tag, network, subnet, account_email, grants)
        teardown = self._teardown_job(name, args, node, teardown_email, teardown_grant)

        self.hosts = node.network_endpoints.apply(
            lambda endpoints: tpu_hosts(args.node_name, args.accelerator_type, args.chips, endpoints))
        self.bucket_uri = bucket.url
        self.service_account_email = account.email
        self.teardown_schedule = teardown.schedule
        self.register_outputs({"hosts": self.hosts, "bucket_uri": self.bucket_uri,
                               "service_account_email": self.service_account_email,
                               "teardown_schedule": self.teardown_schedule})

    def _network(self, name: str, args: TpuSliceArgs,
                 tag: str) -> tuple[gcp.compute.Network, gcp.compute.Subnetwork]:
        """The slice's own VPC: SSH from the allowed ranges, and traffic between its workers, nothing else."""
        child = pulumi.ResourceOptions(parent=self)
        network = gcp.compute.Network(f"{name}-net", project=args.project, auto_create_subnetworks=False,
                                      description=f"ernie TPU slice {args.node_name}", opts=child)
        subnet = gcp.compute.Subnetwork(f"{name}-subnet", project=args.project, region=args.region,
                                        network=network.id, ip_cidr_range=SUBNET_CIDR,
                                        private_ip_google_access=True, opts=child)
        for suffix, ranges in _ssh_ranges_by_family(args.ssh_allowed_cidrs):
            gcp.compute.Firewall(f"{name}-ssh{suffix}", project=args.project, network=network.id,
                                 direction="INGRESS", allows=[{"protocol": "tcp", "ports": ["22"]}],
                                 source_ranges=ranges, target_tags=[tag],
                                 description="SSH only from ernie:sshAllowedCidrs", opts=child)
        # The slice's workers talk to each other (collectives, coordinator) and to nobody else.
        gcp.compute.Firewall(f"{name}-internal", project=args.project, network=network.id, direction="INGRESS",
                             allows=[{"protocol": "tcp"}, {"protocol": "udp"}, {"protocol": "icmp"}],
                             source_tags=[tag], target_tags=[tag],
                             description="traffic between the slice's workers", opts=child)
        return network, subnet

    def _workload_access(self, name: str, args: TpuSliceArgs) -> tuple[
            gcp.serviceaccount.Account, pulumi.Output[str], gcp.storage.Bucket, list[pulumi.Resource]]:
        """The account the workers run as (settled), the run's bucket, and the grants the workload needs."""
        child = pulumi.ResourceOptions(parent=self)
        account = gcp.serviceaccount.Account(f"{name}-sa", project=args.project,
                                             account_id=_account_id(args.node_name),
                                             display_name=f"ernie TPU slice {args.node_name}", opts=child)
        # A new account is not usable at once: everything that names it waits for it to settle (infra/settle.py).
        account_email = Settled(f"{name}-sa-settle", account.email, SERVICE_ACCOUNT_SETTLE_S, opts=child).value
        account_member = account_email.apply(lambda email: f"serviceAccount:{email}")
        bucket = gcp.storage.Bucket(
            f"{name}-bucket", project=args.project, location=_bucket_location(args.region),
            uniform_bucket_level_access=True, public_access_prevention="enforced", force_destroy=True,
            # Results are collected to the user's machine; what stays behind expires.
            lifecycle_rules=[{"action": {"type": "Delete"}, "condition": {"age": 30}}],
            labels=dict(args.labels), opts=child)
        grants = [
            gcp.storage.BucketIAMMember(f"{name}-bucket-writer", bucket=bucket.name, role=TPU_BUCKET_ROLE,
                                        member=account_member, opts=child),
            *(gcp.projects.IAMMember(f"{name}-{role.rsplit('/', 1)[-1].replace('.', '-').lower()}",
                                     project=args.project, role=role, member=account_member, opts=child)
              for role in TPU_PROJECT_ROLES),
        ]
        return account, account_email, bucket, grants

    def _teardown_access(self, name: str, args: TpuSliceArgs) -> tuple[pulumi.Output[str], gcp.projects.IAMMember]:
        """The teardown account (settled) and its grant of the custom role that may delete this slice's node.

        The TTL teardown runs outside the slice (catalog/teardown.py): tpu.nodes.delete reaches every node of the
        project (no IAM condition can name one TPU node), so the slice's own account, whose token every
        workload on it can read, never holds it. A teardown account does; only this slice's teardown workflow
        runs as it (tpu.nodes.delete and .get, to wait for the 404).
        """
        child = pulumi.ResourceOptions(parent=self)
        teardown_account = gcp.serviceaccount.Account(
            f"{name}-teardown-sa", project=args.project, account_id=_account_id(args.node_name, "td"),
            display_name=f"ernie TPU teardown {args.node_name}",
            description=f"Only the teardown workflow runs as it, to delete TPU node {args.node_name} at its TTL",
            opts=child)
        teardown_email = Settled(f"{name}-teardown-sa-settle", teardown_account.email, SERVICE_ACCOUNT_SETTLE_S,
                                 opts=child).value
        teardown_role = gcp.projects.IAMCustomRole(
            f"{name}-teardown-role", project=args.project,
            # Custom role ids stay reserved for weeks after deletion: make each one unique to its account.
            role_id=teardown_account.unique_id.apply(lambda uid: f"ernieTpuTeardown{uid}"),
            title="ernie TPU teardown", description=f"Delete TPU node {args.node_name} at its TTL",
            permissions=list(TPU_TEARDOWN_PERMISSIONS), opts=child)
        teardown_grant = gcp.projects.IAMMember(f"{name}-teardown", project=args.project, role=teardown_role.name,
                                                member=teardown_email.apply(lambda e: f"serviceAccount:{e}"),
                                                opts=child)
        return teardown_email, teardown_grant

    def _node(self, name: str, args: TpuSliceArgs, tag: str, network: gcp.compute.Network,
              subnet: gcp.compute.Subnetwork, account_email: pulumi.Output[str],
              grants: list[pulumi.Resource]) -> gcp.tpu.V2Vm:
        """The TPU VM node, one resource however many workers it spans, running as the workload account."""
        return gcp.tpu.V2Vm(
            f"{name}-tpu", name=args.node_name, project=args.project, zone=args.zone,
            accelerator_type=args.accelerator_type, runtime_version=args.runtime_version,
            scheduling_config={"spot": True} if args.spot else None,
            network_config={"network": network.id, "subnetwork": subnet.id, "enable_external_ips": True},
            service_account={"email": account_email, "scopes": list(TPU_SCOPES)},
            metadata={
                "ssh-keys": pulumi.Output.from_input(args.ssh_public_key).apply(
                    lambda key: f"{args.ssh_user}:{key.strip()}"),
                "enable-oslogin": "FALSE",
            },
            labels=dict(args.labels), tags=[tag],
            # The workload may write results and logs as soon as it starts.
            opts=pulumi.ResourceOptions(parent=self, depends_on=grants))

    def _teardown_job(self, name: str, args: TpuSliceArgs, node: gcp.tpu.V2Vm, teardown_email: pulumi.Output[str],
                      teardown_grant: gcp.projects.IAMMember) -> gcp.cloudscheduler.Job:
        """The scheduler job that starts the teardown workflow at the TTL.

        The job only starts the workflow, which runs as the teardown account and retries with backoff until
        the node is gone (catalog/teardown.py). The job signs in as a caller account that may only start
        workflows: the provider has no per-workflow IAM member, so roles/workflows.invoker is granted on the
        project, to an account nothing else uses.
        """
        child = pulumi.ResourceOptions(parent=self)
        workflow = gcp.workflows.Workflow(
            f"{name}-teardown-wf", project=args.project, region=scheduler_region(args.region),
            name=args.node_name, description=f"ernie: delete TPU node {args.node_name} until gone",
            service_account=teardown_email,
            source_contents=render_teardown_workflow(tpu_node_url(args.project, args.zone, args.node_name)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[teardown_grant]))
        caller = gcp.serviceaccount.Account(
            f"{name}-teardown-caller-sa", project=args.project, account_id=_account_id(args.node_name, "tc"),
            display_name=f"ernie TPU teardown caller {args.node_name}",
            description=f"Only Cloud Scheduler signs in as it, to start the teardown workflow of {args.node_name}",
            opts=child)
        caller_email = Settled(f"{name}-teardown-caller-sa-settle", caller.email, SERVICE_ACCOUNT_SETTLE_S,
                               opts=child).value
        invoker = gcp.projects.IAMMember(f"{name}-teardown-invoker", project=args.project,
                                         role=TEARDOWN_INVOKER_ROLE,
                                         member=caller_email.apply(lambda e: f"serviceAccount:{e}"), opts=child)
        return gcp.cloudscheduler.Job(
            f"{name}-ttl", project=args.project, region=scheduler_region(args.region), name=f"{args.node_name}-ttl",
            description=f"ernie: delete TPU node {args.node_name} at ernie:ttlMinutes ({args.ttl_minutes})",
            # Counted from when the node exists, which only its outputs mark; each `pulumi up` re-arms it.
            schedule=node.id.apply(lambda _: render_teardown_schedule(
                teardown_deadline(args.clock(), args.ttl_minutes))),
            time_zone=SCHEDULE_TIME_ZONE, attempt_deadline="60s",
            retry_config={"retry_count": 5, "min_backoff_duration": "60s", "max_backoff_duration": "600s",
                          "max_doublings": 3},
            http_target={"uri": workflow.name.apply(
                lambda wf: workflow_executions_url(args.project, scheduler_region(args.region), wf)), "http_method": "POST",
                         "oauth_token": {"service_account_email": caller_email, "scope": TEARDOWN_SCOPE}},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[invoker], delete_before_replace=True))


def _check_offered(args: TpuSliceArgs) -> None:
    """The live TPU API has the last word over the catalog config.py checked against: stop before any child."""
    types = gcp.tpu.get_v2_accelerator_types(project=args.project, zone=args.zone).types
    if args.accelerator_type not in types:
        raise ConfigError(f"ernie:tpuType: {args.accelerator_type!r}; the TPU API offers in {args.zone}: "
                          f"{', '.join(sorted(types))}")
    runtimes = gcp.tpu.get_v2_runtime_versions(project=args.project, zone=args.zone).versions
    if args.runtime_version not in runtimes:
        raise ConfigError(f"ernie:runtimeVersion: {args.runtime_version!r}; the TPU API offers in {args.zone}: "
                          f"{', '.join(sorted(runtimes))}")


def tpu_hosts(node: str, accelerator_type: str, chips: int, endpoints: Sequence[Any]) -> list[dict]:
    """Inventory hosts from the node's network endpoints: one per worker VM, in worker order, each with its share
    of the slice's `chips` (a v5litepod-16 is 4 VMs of 4 chips, a v4-32 4 VMs of 4)."""
    endpoints = list(endpoints or ())
    if not endpoints or chips % len(endpoints):
        raise ValueError(f"TPU node {node} ({accelerator_type}, {chips} chips) reports {len(endpoints)} network "
                         "endpoint(s): cannot share its chips evenly among its workers")
    hosts = []
    for worker, endpoint in enumerate(endpoints):
        external = [c.external_ip for c in (endpoint.access_configs or ()) if c.external_ip]
        # `<node>-wN`, cut with a digest where a long node name leaves no room: the driver's host names are 63 at most.
        hosts.append({"name": gcp_name(node, f"w{worker}"), "address": external[0] if external else endpoint.ip_address,
                      "private_address": endpoint.ip_address, "worker": worker,
                      "accelerator": accelerator_type, "chips": chips // len(endpoints)})
    return hosts


def _ssh_ranges_by_family(cidrs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """A GCP firewall rule holds IPv4 or IPv6 source ranges, not both."""
    v4 = [c for c in cidrs if ipaddress.ip_network(c).version == 4]
    v6 = [c for c in cidrs if ipaddress.ip_network(c).version == 6]
    return [(suffix, ranges) for suffix, ranges in (("", v4), ("-v6", v6)) if ranges]


def _account_id(node_name: str, suffix: str = "sa") -> str:
    """Service account ids are 6-30 characters."""
    return gcp_name(node_name, suffix, SERVICE_ACCOUNT_MAX)


def _bucket_location(region: str) -> str:
    """The multi-region on the slice's continent: reads from a TPU region are free, and TPU-only regions
    (us-central2) have no regional buckets."""
    return {"us": "US", "europe": "EU", "asia": "ASIA"}.get(region.split("-", 1)[0], region.upper())
