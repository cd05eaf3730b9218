"""The aws stack's resource graph under Pulumi mocks: fleet shape, EFA, SSH reach, the instance role, TTL, secrets."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ernie.check import Plan, plan
from catalog.gpu_catalog import DLC_IMAGE_GIB
from infra.startup import GPU_DEADLINE_FILE, GPU_REARM_SCRIPT, render_gpu_user_data
from policy import rules

REPO = Path(__file__).resolve().parents[2]
SHELLCHECK = REPO / ".venv" / "bin" / "shellcheck"
INSTANCE = "aws:ec2/instance:Instance"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
INVENTORY_KEYS = {"cloud", "stack", "ssh_user", "ssh_private_key", "runner", "image", "bootstrap", "registry_login",
                  "hosts", "bucket",
                  "price_per_hour_usd", "price_source", "ttl_minutes"}
PYTORCH_IMAGE = ("763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:"
                 "2.9.0-gpu-py312-cu130-ubuntu22.04-ec2")


def aws_plan(tmp_path: Path, changes: dict[str, Any] | None = None) -> Plan:
    """`ernie check` of the committed aws stack file with some values changed."""
    config = yaml.safe_load((REPO / "Pulumi.aws.yaml").read_text())["config"]
    config.update(changes or {})
    path = tmp_path / "Pulumi.aws.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return plan(config_file=path)


def inputs_of(result: Plan, typ: str) -> list[dict[str, Any]]:
    return [r.inputs for r in result.resources if r.type == typ]


P4D_X2 = {"ernie:instanceType": "p4d.24xlarge", "ernie:instanceCount": 2}


def test_single_g5_has_no_placement_group_or_efa(tmp_path) -> None:
    result = aws_plan(tmp_path)  # the committed file: one g5.xlarge
    (instance,) = inputs_of(result, INSTANCE)
    assert instance["instanceType"] == "g5.xlarge"
    assert "placementGroup" not in instance and "primaryNetworkInterface" not in instance
    assert instance["associatePublicIpAddress"] is True
    assert not inputs_of(result, "aws:ec2/placementGroup:PlacementGroup")
    assert not inputs_of(result, "aws:ec2/networkInterface:NetworkInterface")
    assert not [r for r in inputs_of(result, INGRESS) if r.get("referencedSecurityGroupId")]
    inv = result.inventory
    assert set(inv) == INVENTORY_KEYS
    assert (inv["cloud"], inv["runner"], inv["ssh_user"], inv["image"]) == ("aws", "docker", "ubuntu", PYTORCH_IMAGE)
    (host,) = inv["hosts"]
    assert (host["worker"], host["accelerator"], host["chips"]) == (0, "g5.xlarge", 1)
    # The instance and its root volume, as the cost-ceiling rule counts them (one pricing function for both).
    (root_gib,) = [i["rootBlockDevice"]["volumeSize"] for i in inputs_of(result, INSTANCE)]
    assert inv["price_per_hour_usd"] == pytest.approx(1.006 + root_gib * 0.000110)
    assert f"{root_gib:g} GiB gp3" in inv["price_source"]
    assert inv["price_per_hour_usd"] == pytest.approx(sum(rules.hourly_usd(r.type, r.inputs) for r in result.resources))
    assert inv["bucket"].startswith("s3://") and inv["bucket"].endswith("/aws/")


def test_two_p4d_get_a_cluster_placement_group_and_efa(tmp_path) -> None:
    result = aws_plan(tmp_path, P4D_X2)
    (group,) = [r for r in result.resources if r.type == "aws:ec2/placementGroup:PlacementGroup"]
    assert group.inputs["strategy"] == "cluster"
    instances = inputs_of(result, INSTANCE)
    assert len(instances) == 2
    assert all(i["placementGroup"] == group.outputs["name"] for i in instances)
    interfaces = [r for r in result.resources if r.type == "aws:ec2/networkInterface:NetworkInterface"]
    assert [i.inputs["interfaceType"] for i in interfaces] == ["efa", "efa"]
    assert sorted(i["primaryNetworkInterface"]["networkInterfaceId"] for i in instances) == \
        sorted(i.id for i in interfaces)
    # EFA needs all traffic to and from the security group itself.
    (sg,) = [r for r in result.resources if r.type == "aws:ec2/securityGroup:SecurityGroup"]
    sg_id = sg.id
    for kind in (INGRESS, EGRESS):
        (self_rule,) = [r for r in inputs_of(result, kind) if r.get("referencedSecurityGroupId")]
        assert (self_rule["referencedSecurityGroupId"], self_rule["ipProtocol"]) == (sg_id, "-1")
        assert self_rule["securityGroupId"] == sg_id
    # Each instance is reached on an Elastic IP on its EFA interface.
    eips = [r for r in result.resources if r.type == "aws:ec2/eip:Eip"]
    hosts = result.inventory["hosts"]
    assert [h["worker"] for h in hosts] == [0, 1]
    assert sorted(h["address"] for h in hosts) == sorted(e.outputs["publicIp"] for e in eips)
    assert {h["chips"] for h in hosts} == {8}
    assert result.inventory["price_per_hour_usd"] == pytest.approx(
        2 * 32.77 + sum(i["rootBlockDevice"]["volumeSize"] for i in instances) * 0.000110)


def test_port_22_only_from_the_allowed_ranges(tmp_path) -> None:
    result = aws_plan(tmp_path, {**P4D_X2, "ernie:sshAllowedCidrs": ["203.0.113.7/32", "2001:db8::/48"]})
    from_outside = [r for r in inputs_of(result, INGRESS) if not r.get("referencedSecurityGroupId")]
    assert sorted(r.get("cidrIpv4") or r.get("cidrIpv6") for r in from_outside) == ["2001:db8::/48", "203.0.113.7/32"]
    assert all((r["ipProtocol"], r["fromPort"], r["toPort"]) == ("tcp", 22, 22) for r in from_outside)
    assert not [f for f in result.findings if f.rule == "ssh-open-to-world"]


def test_instance_role_pulls_one_repository_and_writes_one_prefix(tmp_path) -> None:
    result = aws_plan(tmp_path)
    (role,) = inputs_of(result, "aws:iam/role:Role")
    trust = json.loads(role["assumeRolePolicy"])
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "ec2.amazonaws.com"}]
    (policy,) = inputs_of(result, "aws:iam/rolePolicy:RolePolicy")
    statements = {s["Sid"]: s for s in json.loads(policy["policy"])["Statement"]}
    (bucket,) = [r for r in result.resources if r.type == "aws:s3/bucket:Bucket"]
    arn = bucket.outputs["arn"]
    assert all(s["Effect"] == "Allow" for s in statements.values())
    assert statements["EcrLogin"]["Action"] == "ecr:GetAuthorizationToken"
    assert statements["PullTrainingImage"]["Resource"] == \
        "arn:aws:ecr:us-east-1:763104351884:repository/pytorch-training"
    assert sorted(statements["PullTrainingImage"]["Action"]) == [
        "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    assert statements["RunResults"]["Resource"] == f"{arn}/aws/*"
    assert sorted(statements["RunResults"]["Action"]) == ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"]
    assert statements["ListRunResults"] == {"Sid": "ListRunResults", "Effect": "Allow", "Action": "s3:ListBucket",
                                            "Resource": arn, "Condition": {"StringLike": {"s3:prefix": ["aws/*"]}}}
    assert set(statements) == {"EcrLogin", "PullTrainingImage", "RunResults", "ListRunResults"}
    # The only "*" resource is the one ECR login that has no resource-level permissions.
    assert [s["Sid"] for s in statements.values() if s["Resource"] == "*"] == ["EcrLogin"]


def test_instances_are_hardened(tmp_path) -> None:
    result = aws_plan(tmp_path)
    (instance,) = inputs_of(result, INSTANCE)
    assert instance["metadataOptions"]["httpTokens"] == "required"
    assert instance["instanceInitiatedShutdownBehavior"] == "terminate"
    root = instance["rootBlockDevice"]
    assert root["encrypted"] is True
    assert root["volumeSize"] == 75 + DLC_IMAGE_GIB + 100  # the AMI's 75 GiB snapshot, the image, scratch
    assert "instanceMarketOptions" not in instance
    assert not result.findings


def test_bucket_is_private_and_encrypted(tmp_path) -> None:
    result = aws_plan(tmp_path)
    (block,) = inputs_of(result, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                          "restrictPublicBuckets"))
    (sse,) = inputs_of(result, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"


def test_bucket_refuses_requests_without_tls(tmp_path) -> None:
    """One policy on the stack's bucket: every principal is denied every S3 action on the bucket and its objects
    when the request came without TLS. Nothing else is in it: the instance role's own policy grants access."""
    result = aws_plan(tmp_path)
    (bucket,) = [r for r in result.resources if r.type == "aws:s3/bucket:Bucket"]
    (policy,) = inputs_of(result, "aws:s3/bucketPolicy:BucketPolicy")
    assert policy["bucket"] == bucket.id
    arn = bucket.outputs["arn"]
    assert json.loads(policy["policy"])["Statement"] == [{
        "Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": [arn, f"{arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]
    assert not [f for f in result.findings if f.rule == "storage-tls-only"]


def test_user_data_pulls_checks_gpus_terminates_at_ttl_and_passes_shellcheck(tmp_path) -> None:
    (instance,) = inputs_of(aws_plan(tmp_path, {**P4D_X2, "ernie:ttlMinutes": 45, "ernie:instanceCount": 1}), INSTANCE)
    script = instance["userData"]
    assert 'readonly TTL_MINUTES=45' in script and 'shutdown -h "+${minutes}"' in script
    assert "readonly EXPECTED_GPUS=8" in script and "nvidia-smi --list-gpus" in script
    assert "docker login --username AWS --password-stdin" in script
    assert f"readonly IMAGE={PYTORCH_IMAGE}" in script and 'docker pull "${IMAGE}"' in script
    # The TTL is scheduled before anything that can fail.
    assert script.index("shutdown -h") < script.index("nvidia-smi") < script.index("docker pull")
    assert instance["userDataReplaceOnChange"] is True
    check = subprocess.run([str(SHELLCHECK), "--shell=bash", "--severity=style", "-"], input=script,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


@pytest.mark.parametrize(("seconds_left", "armed"), [(45 * 60, "+45"), (10 * 60 + 30, "+11"), (-600, "+0")])
def test_ttl_is_rearmed_at_every_boot_for_the_time_left(tmp_path, seconds_left: int, armed: str) -> None:
    """A reboot cancels `shutdown -h +N` and user data runs once: the per-boot script re-arms from the deadline."""
    script = render_gpu_user_data(region="us-east-1", registry="r", image="i", gpus=1, ttl_minutes=45)
    assert f"readonly REARM_SCRIPT={GPU_REARM_SCRIPT}" in script and f'"${{REARM_SCRIPT}}"\n' in script
    rearm = script.split("<<'REARM'\n", 1)[1].split("\nREARM\n", 1)[0] + "\n"
    check = subprocess.run([str(SHELLCHECK), "--shell=bash", "--severity=style", "-"], input=rearm,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    deadline, calls, bin_dir = tmp_path / "deadline", tmp_path / "shutdown-calls", tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "shutdown").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "shutdown").chmod(0o755)
    deadline.write_text(f"{int(time.time()) + seconds_left}\n")
    (tmp_path / "rearm").write_text(rearm.replace(GPU_DEADLINE_FILE, str(deadline)))
    subprocess.run(["bash", str(tmp_path / "rearm")], check=True, timeout=30,
                   env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert calls.read_text().split()[:2] == ["-h", armed]


def test_spot_instances(tmp_path) -> None:
    (instance,) = inputs_of(aws_plan(tmp_path, {"ernie:spot": True}), INSTANCE)
    assert instance["instanceMarketOptions"] == {
        "marketType": "spot",
        "spotOptions": {"spotInstanceType": "one-time", "instanceInterruptionBehavior": "terminate"}}


def test_image_registry_follows_the_region(tmp_path) -> None:
    result = aws_plan(tmp_path, {"aws:region": "af-south-1", "ernie:availabilityZone": "af-south-1b",
                                 "ernie:framework": "tensorflow",
                                 "ernie:dlcTag": "2.19.0-gpu-py312-cu125-ubuntu22.04-ec2"})
    assert result.inventory["image"] == ("626614931356.dkr.ecr.af-south-1.amazonaws.com/tensorflow-training:"
                                         "2.19.0-gpu-py312-cu125-ubuntu22.04-ec2")
    (policy,) = inputs_of(result, "aws:iam/rolePolicy:RolePolicy")
    assert "arn:aws:ecr:af-south-1:626614931356:repository/tensorflow-training" in policy["policy"]
    (instance,) = inputs_of(result, INSTANCE)
    assert instance["availabilityZone"] == "af-south-1b"


def test_tags_on_everything_that_takes_them(tmp_path) -> None:
    result = aws_plan(tmp_path, P4D_X2)
    tagged = [r for r in result.resources if "tags" in r.inputs]
    assert {r.type for r in tagged} >= {INSTANCE, "aws:s3/bucket:Bucket", "aws:ec2/vpc:Vpc",
                                        "aws:ec2/securityGroup:SecurityGroup", "aws:iam/role:Role",
                                        "aws:ec2/placementGroup:PlacementGroup", "aws:ec2/eip:Eip"}
    assert all(r.inputs["tags"]["ernie-stack"] == "aws" and r.inputs["tags"]["ernie-ttl"] == "180" for r in tagged)


def test_generated_ssh_key_is_a_secret_and_the_ami_is_looked_up(tmp_path) -> None:
    result = aws_plan(tmp_path)
    assert result.inventory_is_secret
    assert result.inventory["ssh_private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    (key_pair,) = inputs_of(result, "aws:ec2/keyPair:KeyPair")
    assert key_pair["publicKey"].startswith("ssh-ed25519 ")
    (instance,) = inputs_of(result, INSTANCE)
    assert instance["ami"].startswith("ami-")
