"""`ernie sweep` finds exactly the planted leaks and nothing else: AWS against moto's server on loopback,
GCP through the REST seam with recorded API responses."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import urllib.request
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from ernie.sweep import STACK_TAG, TTL_TAG, judge
from ernie.sweep.aws import AwsAccount
from ernie.sweep.gcp import GcpProject
from catalog import pricing

REGION = "us-east-1"
DATA = Path(__file__).parents[1] / "data" / "gcp_sweep"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def moto_endpoint(monkeypatch):
    """moto in server mode: a real HTTP endpoint on loopback, reset per test."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # moto's backends live in this process, shared by every server it starts: begin from an empty account.
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10)
    for key, value in {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield url
    server.stop()


def _tags(stack: str | None, ttl: str = "180", name: str = "") -> list[dict[str, str]]:
    tags = [{"Key": "Name", "Value": name or "x"}]
    if stack:
        tags += [{"Key": STACK_TAG, "Value": stack}, {"Key": TTL_TAG, "Value": ttl}]
    return tags


def _plant(session: boto3.Session) -> dict[str, set[str]]:
    """Leaks of a destroyed stack ("gone"), resources of a live stack ("aws"), and strangers without tags."""
    ec2, s3, lam = (session.client(s, region_name=REGION) for s in ("ec2", "s3", "lambda"))
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]

    def instance(stack):
        spec = [{"ResourceType": "instance", "Tags": _tags(stack)}] if stack else []
        return ec2.run_instances(ImageId=ami, InstanceType="p4d.24xlarge", MinCount=1, MaxCount=1,
                                 SubnetId=subnet, TagSpecifications=spec)["Instances"][0]["InstanceId"]

    def volume(stack):
        spec = [{"ResourceType": "volume", "Tags": _tags(stack)}] if stack else []
        return ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=100, VolumeType="gp3",
                                 TagSpecifications=spec)["VolumeId"]

    def group(stack, name):
        spec = [{"ResourceType": "security-group", "Tags": _tags(stack)}] if stack else []
        return ec2.create_security_group(GroupName=name, Description="t", VpcId=vpc,
                                         TagSpecifications=spec)["GroupId"]

    def interface(stack):
        spec = [{"ResourceType": "network-interface", "Tags": _tags(stack)}] if stack else []
        return ec2.create_network_interface(SubnetId=subnet, TagSpecifications=spec)["NetworkInterface"][
            "NetworkInterfaceId"]

    def bucket(stack, name):
        s3.create_bucket(Bucket=name)
        if stack:
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": _tags(stack)})
        s3.put_object(Bucket=name, Key="results/run.json", Body=b"{}")
        return name

    def layer(name, description=f"numpy 2.1.3, scipy 1.14.1 {TTL_TAG}=180"):  # as infra/aws_serving.py writes it
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("python/x.py", "")
        lam.publish_layer_version(LayerName=name, Content={"ZipFile": buf.getvalue()},
                                  Description=description, CompatibleRuntimes=["python3.12"])
        return name

    leaks = {instance("gone"), volume("gone"), group("gone", "gone-sg"), interface("gone"),
             bucket("gone", "ernie-gone-results"), layer("ernie-gone-numpy")}
    live = {instance("aws"), volume("aws"), group("aws", "aws-sg"), bucket("aws", "ernie-aws-results"),
            layer("ernie-aws-model")}
    # Layers named like ernie's (`ernie-<stack>-<layer>`) that ernie did not publish: no `ernie-ttl=` marker.
    strangers = {instance(None), volume(None), group(None, "other-sg"), bucket(None, "someone-elses"),
                 layer("unrelated-layer"), layer("ernie-other-tool", "someone else's tool"),
                 layer("ernie-team-shared", ""), layer("ernie-x-y", f"cites {TTL_TAG}=60 in passing, not ours")}
    return {"leaks": leaks, "live": live, "strangers": strangers}


def test_aws_finds_exactly_the_planted_leaks(moto_endpoint) -> None:
    planted = _plant(boto3.Session(region_name=REGION))
    account = AwsAccount(REGION)
    resources = list(account.tagged())
    assert {r.id for r in resources} == planted["leaks"] | planted["live"], "strangers must never be listed"

    now = datetime.now(timezone.utc)
    found = judge(resources, {"aws"}, now)
    assert {x.resource.id for x in found} == planted["leaks"]
    assert all("not live" in x.reason for x in found)
    leaked_instance = next(x for x in found if x.resource.kind == "instance")
    assert leaked_instance.resource.usd_per_hour > 10, "a p4d leak is priced from the catalog"
    leaked_volume = next(x for x in found if x.resource.kind == "volume")
    assert leaked_volume.resource.usd_per_hour == pytest.approx(100 * pricing.catalog()[("aws", "ebs-gp3")].usd_per_hour)

    # Four hours on, the live stack's 180-minute TTL has passed too: its resources with a creation time are due.
    later = judge(resources, {"aws"}, now + timedelta(hours=4))
    overdue = {x.resource.id for x in later if "TTL" in x.reason}
    assert overdue and overdue <= planted["live"]
    # Without liveness information only the TTL decides: nothing is due yet.
    assert judge(resources, None, now) == []


def test_aws_sweep_command_deletes_only_the_leaks(moto_endpoint, ernie_cmd) -> None:
    session = boto3.Session(region_name=REGION)
    planted = _plant(session)
    env = {**os.environ}
    listed = subprocess.run([*ernie_cmd, "sweep", "--cloud", "aws", "--region", REGION, "--live-stack", "aws"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "6 leftover resource(s)" in listed.stdout and "Nothing deleted" in listed.stdout

    no_tty = subprocess.run([*ernie_cmd, "sweep", "--cloud", "aws", "--region", REGION, "--live-stack", "aws",
                             "--delete"], capture_output=True, text=True, env=env, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert no_tty.returncode == 2 and "--yes" in no_tty.stderr

    done = subprocess.run([*ernie_cmd, "sweep", "--cloud", "aws", "--region", REGION, "--live-stack", "aws",
                           "--delete", "--yes"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Deleted 6 of 6" in done.stdout

    left = {r.id for r in AwsAccount(REGION).tagged()}
    assert left == planted["live"], "only the live stack's resources remain"
    ec2 = session.client("ec2", region_name=REGION)
    states = {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances()["Reservations"]
              for i in r["Instances"]}
    assert all(states[i] != "terminated" for i in planted["strangers"] if i.startswith("i-"))
    assert "someone-elses" in {b["Name"] for b in session.client("s3").list_buckets()["Buckets"]}
    layers = {layer["LayerName"] for layer in session.client("lambda").list_layers()["Layers"]}
    assert {"ernie-other-tool", "ernie-team-shared", "ernie-x-y"} <= layers, "layers ernie did not publish stay"


class RecordedGcp:
    """Replays responses recorded from the TPU and Cloud Storage APIs; records every DELETE."""

    def __init__(self, recording: dict[str, dict]) -> None:
        self.recording, self.deleted = recording, []

    def get(self, url: str, params: dict[str, str] | None = None) -> dict:
        key = url + ("?" + "&".join(f"{k}={v}" for k, v in sorted(params.items())) if params else "")
        return self.recording.get(key, {})

    def delete(self, url: str) -> None:
        self.deleted.append(url)


def test_gcp_finds_and_deletes_exactly_the_planted_leaks() -> None:
    http = RecordedGcp(json.loads((DATA / "responses.json").read_text()))
    project = GcpProject("ernie-demo", ["us-central2-b", "europe-west4-a"], http)
    resources = list(project.tagged())
    assert {r.id.rsplit("/", 1)[-1] for r in resources} == {"gcp-slice", "old-slice", "ernie-gcp-results",
                                                            "ernie-old-results"}
    now = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    found = judge(resources, {"gcp"}, now)
    names = {x.resource.id.rsplit("/", 1)[-1]: x for x in found}
    # old-slice: its stack is gone; gcp-slice: a live stack, but 26 h past a 180-minute TTL.
    assert set(names) == {"old-slice", "gcp-slice", "ernie-old-results"}
    assert "TTL" in names["gcp-slice"].reason and "not live" in names["old-slice"].reason
    assert names["old-slice"].resource.usd_per_hour == pytest.approx(16 * 3.22)  # v4-32 = 16 chips

    assert project.delete(found) == []
    assert http.deleted[:2] == [f"https://tpu.googleapis.com/v2/{names[n].resource.id}"
                                for n in ("old-slice", "gcp-slice")] or set(http.deleted[:2]) == {
        f"https://tpu.googleapis.com/v2/{names[n].resource.id}" for n in ("old-slice", "gcp-slice")}
    assert http.deleted[-1] == "https://storage.googleapis.com/storage/v1/b/ernie-old-results"
    assert any("/o/results%2Frun.json?generation=" in u for u in http.deleted), "a bucket is emptied first"
    assert not any("someone" in u or "ernie-gcp-results" in u for u in http.deleted)
