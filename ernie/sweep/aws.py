"""List and delete ernie's resources in one AWS region through boto3.

boto3 honours AWS_ENDPOINT_URL, so the same code runs against moto's server in the tests (and LocalStack).
Lambda layer versions carry no tags: ernie names its layers `ernie-<stack>-<layer>` (infra/aws_serving.py)
and ends each version's description with `ernie-ttl=<minutes>`. A layer is ernie's only when both hold: the
name alone would offer anyone's `ernie-*-*` layer for deletion.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime

import boto3
from botocore.exceptions import ClientError

from ernie.sweep import STACK_TAG, TTL_TAG, Leftover, Tagged
from catalog import pricing

_TAG_FILTER = [{"Name": "tag-key", "Values": [STACK_TAG]}]
_LAYER_NAME = re.compile(r"^ernie-(?P<stack>[A-Za-z0-9_.]+?)-[A-Za-z0-9_]+$")
# infra/aws_serving.py cuts a long description from the left, so the marker is always its last word.
_LAYER_MARKER = re.compile(rf"(?:^|\s){TTL_TAG}=(\d+)$")


def _tags(items: list[dict] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}


def _price(instance_type: str | None, count: int = 1, **disk) -> float | None:
    """Hourly price from the catalog (`pricing.quote`, the one pricing function); None where it has no row."""
    try:
        return pricing.quote("aws", instance_type, count, **disk).usd_per_hour
    except KeyError:
        return None  # not in the catalog: shown as unknown, never guessed


class AwsAccount:
    """ernie's resources in one region. `session` defaults to the usual boto3 credential chain."""

    def __init__(self, region: str, session: boto3.Session | None = None) -> None:
        self.region = region
        session = session or boto3.Session(region_name=region)
        self.ec2 = session.client("ec2", region_name=region)
        self.s3 = session.client("s3", region_name=region)
        self.lambda_ = session.client("lambda", region_name=region)

    def tagged(self) -> Iterator[Tagged]:
        """Every resource in the region that carries ernie's stack tag."""
        yield from self._instances()
        yield from self._volumes()
        yield from self._security_groups()
        yield from self._network_interfaces()
        yield from self._buckets()
        yield from self._layer_versions()

    def _instances(self) -> Iterator[Tagged]:
        live = ["pending", "running", "stopping", "stopped"]
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[*_TAG_FILTER, {"Name": "instance-state-name", "Values": live}])
        for page in pages:
            for reservation in page["Reservations"]:
                for i in reservation["Instances"]:
                    yield Tagged("aws", "instance", i["InstanceId"], self.region, _tags(i.get("Tags")),
                                 i["LaunchTime"], _price(i["InstanceType"]),
                                 f'{i["InstanceType"]}, {i["State"]["Name"]}')

    def _volumes(self) -> Iterator[Tagged]:
        for page in self.ec2.get_paginator("describe_volumes").paginate(Filters=_TAG_FILTER):
            for v in page["Volumes"]:
                yield Tagged("aws", "volume", v["VolumeId"], self.region, _tags(v.get("Tags")), v["CreateTime"],
                             _price(None, disk_gib=v["Size"], disk_type=v["VolumeType"]), f'{v["Size"]} GiB {v["VolumeType"]}')

    def _security_groups(self) -> Iterator[Tagged]:
        for page in self.ec2.get_paginator("describe_security_groups").paginate(Filters=_TAG_FILTER):
            for g in page["SecurityGroups"]:
                yield Tagged("aws", "security-group", g["GroupId"], self.region, _tags(g.get("Tags")), None, 0.0,
                             g["GroupName"])

    def _network_interfaces(self) -> Iterator[Tagged]:
        for page in self.ec2.get_paginator("describe_network_interfaces").paginate(Filters=_TAG_FILTER):
            for n in page["NetworkInterfaces"]:
                yield Tagged("aws", "network-interface", n["NetworkInterfaceId"], self.region,
                             _tags(n.get("TagSet")), None, 0.0, n.get("Status", ""))

    def _buckets(self) -> Iterator[Tagged]:
        for b in self.s3.list_buckets().get("Buckets", []):
            try:
                tags = _tags(self.s3.get_bucket_tagging(Bucket=b["Name"])["TagSet"])
            except ClientError as exc:
                if exc.response["Error"]["Code"] in ("NoSuchTagSet", "NoSuchBucket"):
                    continue
                raise
            if STACK_TAG in tags:
                yield Tagged("aws", "bucket", b["Name"], self.region, tags, b["CreationDate"], 0.0)

    def _layer_versions(self) -> Iterator[Tagged]:
        for page in self.lambda_.get_paginator("list_layers").paginate():
            for layer in page["Layers"]:
                match = _LAYER_NAME.match(layer["LayerName"])
                if not match:
                    continue
                versions = self.lambda_.get_paginator("list_layer_versions").paginate(LayerName=layer["LayerName"])
                for vpage in versions:
                    for v in vpage["LayerVersions"]:
                        marker = _LAYER_MARKER.search(v.get("Description") or "")
                        if not marker:
                            continue  # named like ours, but not published by ernie
                        tags = {STACK_TAG: match["stack"], TTL_TAG: marker.group(1)}
                        yield Tagged("aws", "layer-version", layer["LayerName"], self.region, tags,
                                     datetime.fromisoformat(v["CreatedDate"].replace("+0000", "+00:00")), 0.0,
                                     f'version {v["Version"]}', {"version": str(v["Version"])})

    def delete(self, leftovers: list[Leftover]) -> list[str]:
        """Delete in dependency order (instances before the groups and interfaces they hold); returns failures."""
        order = ["instance", "network-interface", "volume", "security-group", "bucket", "layer-version"]
        failures = []
        by_kind = {kind: [x.resource for x in leftovers if x.resource.kind == kind] for kind in order}
        instance_ids = [r.id for r in by_kind["instance"]]
        if instance_ids:
            self.ec2.terminate_instances(InstanceIds=instance_ids)
            self.ec2.get_waiter("instance_terminated").wait(
                InstanceIds=instance_ids, WaiterConfig={"Delay": 5, "MaxAttempts": 120})
        for kind in order[1:]:
            for r in by_kind[kind]:
                try:
                    self._delete_one(r)
                except ClientError as exc:
                    failures.append(f"{r.kind} {r.id}: {exc.response['Error'].get('Message', exc)}")
        return failures

    def _delete_one(self, r: Tagged) -> None:
        if r.kind == "network-interface":
            self.ec2.delete_network_interface(NetworkInterfaceId=r.id)
        elif r.kind == "volume":
            self.ec2.delete_volume(VolumeId=r.id)
        elif r.kind == "security-group":
            self.ec2.delete_security_group(GroupId=r.id)
        elif r.kind == "bucket":
            self._empty_bucket(r.id)
            self.s3.delete_bucket(Bucket=r.id)
        elif r.kind == "layer-version":
            self.lambda_.delete_layer_version(LayerName=r.id, VersionNumber=int(r.extra["version"]))

    def _empty_bucket(self, name: str) -> None:
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=name):
            doomed = [{"Key": o["Key"], "VersionId": o["VersionId"]}
                      for o in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            if doomed:
                self.s3.delete_objects(Bucket=name, Delete={"Objects": doomed, "Quiet": True})
