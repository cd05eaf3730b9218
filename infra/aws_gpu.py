"""GpuFleet: GPU instances from the Deep Learning AMI running a DLC image, in their own VPC, with a TTL."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws_storage import private_bucket
from catalog.gpu_catalog import AMI_NAME_PATTERN, AMI_OWNER, DLC_IMAGE_GIB, dlc_registry
from infra.grants import render_assume_role_policy, render_gpu_instance_policy
from infra.startup import render_gpu_user_data

VPC_CIDR = "10.0.0.0/16"
SUBNET_CIDR = "10.0.0.0/24"
# Room for datasets, checkpoints and logs beside the AMI and the pulled image.
SCRATCH_GIB = 100


@dataclass(frozen=True)
class GpuFleetArgs:
    """Everything a GpuFleet needs; validated by config.py before it gets here."""

    region: str
    """AWS region (aws:region); it also picks the DLC registry account."""
    availability_zone: str
    """The one zone the subnet, and so every instance, lives in (a cluster placement group needs one zone)."""
    instance_type: str
    """A GPU type from catalog/gpu_catalog.py, e.g. p4d.24xlarge."""
    instance_count: int
    gpus_per_instance: int
    """GPUs each instance has; the user data checks nvidia-smi sees that many."""
    efa: bool
    """The type takes EFA: a fleet of more than one gets a cluster placement group and EFA interfaces."""
    image: str
    """The DLC image URI the hosts pull."""
    registry_account: str
    """AWS account of the DLC registry in `region`; the role may pull from it only."""
    repository: str
    """ECR repository of the image, e.g. pytorch-training."""
    spot: bool
    """One-time Spot instances, terminated on interruption."""
    ssh_allowed_cidrs: Sequence[str]
    """The only sources admitted to port 22."""
    ssh_public_key: pulumi.Input[str]
    """OpenSSH public key of the instances' key pair."""
    ttl_minutes: int
    """Minutes after first boot at which each instance shuts down and so terminates."""
    bucket_prefix: str
    """The only prefix of the bucket the instances may write under, e.g. "aws/"."""
    tags: Mapping[str, str]
    """Applied to every resource that takes tags (ernie-stack, ernie-ttl)."""


class GpuFleet(pulumi.ComponentResource):
    """GPU instances that pull a DLC image, admit SSH only from allowed ranges, and terminate at their TTL."""

    hosts: pulumi.Output[list[dict[str, Any]]]
    """One entry per instance, in the inventory's host shape."""
    bucket_uri: pulumi.Output[str]
    """s3:// URI of the run's prefix in the stack's bucket."""
    bucket_arn: pulumi.Output[str]
    root_volume_gib: pulumi.Output[int]
    """Each instance's root volume, which bills beside it (the inventory's price counts it)."""
    vpc_id: pulumi.Output[str]
    subnet_id: pulumi.Output[str]

    def __init__(self, name: str, args: GpuFleetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ernie:aws:GpuFleet", name, {}, opts)
        tags = dict(args.tags)
        vpc, subnet, gateway = self._vpc(name, args, tags)
        group = self._security_group(name, args, tags, vpc)
        bucket = private_bucket(f"{name}-bucket", tags, self)
        profile, key = self._identity(name, args, tags, bucket)
        ami = aws.ec2.get_ami_output(most_recent=True, owners=[AMI_OWNER],
                                     filters=[{"name": "name", "values": [AMI_NAME_PATTERN]},
                                              {"name": "architecture", "values": ["x86_64"]}])
        root_gib = ami.apply(root_volume_gib)
        use_efa = args.efa and args.instance_count > 1
        placement = (aws.ec2.PlacementGroup(f"{name}-pg", strategy="cluster", tags=tags,
                                            opts=pulumi.ResourceOptions(parent=self))
                     if use_efa else None)
        launch = _Launch(subnet=subnet, group=group, gateway=gateway, profile=profile, key=key, ami_id=ami.id,
                         root_gib=root_gib, placement=placement, efa=use_efa,
                         user_data=render_gpu_user_data(region=args.region, registry=dlc_registry(args.region),
                                                        image=args.image, gpus=args.gpus_per_instance,
                                                        ttl_minutes=args.ttl_minutes))
        hosts = [self._instance(name, i, args, tags, launch) for i in range(args.instance_count)]

        self.hosts = pulumi.Output.all(*hosts).apply(list)
        self.bucket_uri = bucket.bucket.apply(lambda b: f"s3://{b}/{args.bucket_prefix}")
        self.bucket_arn = bucket.arn
        self.root_volume_gib = root_gib
        self.vpc_id = vpc.id
        self.subnet_id = subnet.id
        self.register_outputs({"hosts": self.hosts, "bucket_uri": self.bucket_uri, "bucket_arn": self.bucket_arn,
                               "root_volume_gib": self.root_volume_gib,
                               "vpc_id": self.vpc_id, "subnet_id": self.subnet_id})

    def _vpc(self, name: str, args: GpuFleetArgs,
             tags: dict[str, str]) -> tuple[aws.ec2.Vpc, aws.ec2.Subnet, aws.ec2.InternetGateway]:
        """The fleet's own VPC: one public subnet in the fleet's zone, routed to the internet gateway."""
        child = pulumi.ResourceOptions(parent=self)
        vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=VPC_CIDR, enable_dns_hostnames=True, enable_dns_support=True,
                          tags={**tags, "Name": f"{name}-vpc"}, opts=child)
        subnet = aws.ec2.Subnet(f"{name}-subnet", vpc_id=vpc.id, cidr_block=SUBNET_CIDR,
                                availability_zone=args.availability_zone, map_public_ip_on_launch=True,
                                tags=tags, opts=child)
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=tags, opts=child)
        routes = aws.ec2.RouteTable(f"{name}-rt", vpc_id=vpc.id,
                                    routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}],
                                    tags=tags, opts=child)
        aws.ec2.RouteTableAssociation(f"{name}-rta", subnet_id=subnet.id, route_table_id=routes.id, opts=child)
        return vpc, subnet, gateway

    def _security_group(self, name: str, args: GpuFleetArgs, tags: dict[str, str],
                        vpc: aws.ec2.Vpc) -> aws.ec2.SecurityGroup:
        """SSH in from the allowed ranges only; the fleet's members to each other; anything out."""
        child = pulumi.ResourceOptions(parent=self)
        group = aws.ec2.SecurityGroup(f"{name}-sg", vpc_id=vpc.id, description="ernie GPU fleet",
                                      tags=tags, opts=child)
        for i, cidr in enumerate(args.ssh_allowed_cidrs):
            family = "cidr_ipv4" if ipaddress.ip_network(cidr).version == 4 else "cidr_ipv6"
            aws.vpc.SecurityGroupIngressRule(f"{name}-ssh-{i}", security_group_id=group.id, ip_protocol="tcp",
                                             from_port=22, to_port=22, description="SSH from ernie:sshAllowedCidrs",
                                             tags=tags, opts=child, **{family: cidr})
        if args.instance_count > 1:
            # The fleet's instances talk to each other; EFA needs all traffic to and from the group itself.
            aws.vpc.SecurityGroupIngressRule(f"{name}-self-in", security_group_id=group.id, ip_protocol="-1",
                                             referenced_security_group_id=group.id, description="fleet members",
                                             tags=tags, opts=child)
            aws.vpc.SecurityGroupEgressRule(f"{name}-self-out", security_group_id=group.id, ip_protocol="-1",
                                            referenced_security_group_id=group.id, description="fleet members",
                                            tags=tags, opts=child)
        aws.vpc.SecurityGroupEgressRule(f"{name}-egress", security_group_id=group.id, ip_protocol="-1",
                                        cidr_ipv4="0.0.0.0/0", description="ECR, S3, package mirrors",
                                        tags=tags, opts=child)
        return group

    def _identity(self, name: str, args: GpuFleetArgs, tags: dict[str, str],
                  bucket: aws.s3.Bucket) -> tuple[aws.iam.InstanceProfile, aws.ec2.KeyPair]:
        """The instances' role (pull the one repository, write the one prefix) and the SSH key pair."""
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(f"{name}-role", assume_role_policy=render_assume_role_policy("ec2.amazonaws.com"),
                            description="ernie GPU hosts: pull the DLC image, write run results", tags=tags,
                            opts=child)
        aws.iam.RolePolicy(f"{name}-policy", role=role.id, policy=bucket.arn.apply(
            lambda arn: render_gpu_instance_policy(bucket_arn=arn, prefix=args.bucket_prefix, region=args.region,
                                                   registry_account=args.registry_account,
                                                   repository=args.repository)), opts=child)
        profile = aws.iam.InstanceProfile(f"{name}-profile", role=role.name, tags=tags, opts=child)
        key = aws.ec2.KeyPair(f"{name}-key", public_key=args.ssh_public_key, tags=tags, opts=child)
        return profile, key

    def _instance(self, name: str, i: int, args: GpuFleetArgs, tags: dict[str, str],
                  launch: _Launch) -> pulumi.Output[dict[str, Any]]:
        """Worker `i`: its instance (and, with EFA, its interface and Elastic IP), as an inventory host."""
        child = pulumi.ResourceOptions(parent=self)
        host = f"{name}-{i}"
        network: dict[str, Any]
        if launch.efa:
            # The EFA interface is the primary one; an Elastic IP on it is the SSH address.
            efa = aws.ec2.NetworkInterface(f"{host}-efa", subnet_id=launch.subnet.id, interface_type="efa",
                                           security_groups=[launch.group.id], tags=tags, opts=child)
            network = {"primary_network_interface": {"network_interface_id": efa.id}}
        else:
            network = {"subnet_id": launch.subnet.id, "vpc_security_group_ids": [launch.group.id],
                       "associate_public_ip_address": True}
        instance = aws.ec2.Instance(
            host, ami=launch.ami_id, instance_type=args.instance_type, availability_zone=args.availability_zone,
            key_name=launch.key.key_name, iam_instance_profile=launch.profile.name,
            placement_group=launch.placement.name if launch.placement else None,
            instance_market_options=({"market_type": "spot", "spot_options": {
                "spot_instance_type": "one-time", "instance_interruption_behavior": "terminate"}}
                if args.spot else None),
            instance_initiated_shutdown_behavior="terminate",
            metadata_options={"http_tokens": "required", "http_endpoint": "enabled",
                              "http_put_response_hop_limit": 2},  # 2: containers on the host reach IMDS
            root_block_device={"volume_size": launch.root_gib, "volume_type": "gp3",
                               "encrypted": True, "delete_on_termination": True},
            user_data=launch.user_data, user_data_replace_on_change=True,
            tags={**tags, "Name": host}, volume_tags=tags, opts=child, **network)
        if launch.efa:
            address = aws.ec2.Eip(f"{host}-eip", domain="vpc", network_interface=efa.id, tags=tags,
                                  opts=pulumi.ResourceOptions(parent=self, depends_on=[instance, launch.gateway])
                                  ).public_ip
        else:
            address = instance.public_ip
        return pulumi.Output.all(address, instance.private_ip).apply(
            lambda ips: {"name": host, "address": ips[0], "private_address": ips[1], "worker": i,
                         "accelerator": args.instance_type, "chips": args.gpus_per_instance})


@dataclass(frozen=True)
class _Launch:
    """What every instance of a fleet is launched with."""

    subnet: aws.ec2.Subnet
    group: aws.ec2.SecurityGroup
    gateway: aws.ec2.InternetGateway
    """An Elastic IP waits for it."""
    profile: aws.iam.InstanceProfile
    key: aws.ec2.KeyPair
    ami_id: pulumi.Output[str]
    root_gib: pulumi.Output[int]
    placement: aws.ec2.PlacementGroup | None
    efa: bool
    """Each instance's primary interface is an EFA one, reached on an Elastic IP."""
    user_data: str


def root_volume_gib(ami: Any) -> int:
    """Root volume size: the AMI's own root snapshot, the pulled DLC image, and scratch space."""
    root = next(m for m in ami.block_device_mappings if m.device_name == ami.root_device_name)
    return int(root.ebs["volume_size"]) + DLC_IMAGE_GIB + SCRATCH_GIB
