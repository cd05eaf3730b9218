"""Pulumi mocks that answer like the clouds do: realistic ids, addresses and ARNs per resource type.

`ernie check` runs the Pulumi program under these mocks, and so do the tests (the `pulumi_mocks` fixture).
Every resource the program declares is recorded, with its inputs as the engine would receive them
(camelCase keys), so a plan and the guardrail rules can be read from `ErnieMocks.resources`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pulumi
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from catalog.gpu_catalog import AMI_NAME_PATTERN
from catalog.tpu_catalog import GENERATIONS, TF_VERSIONS, accelerator_types, lookup_tpu

ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
GCP_PROJECT_NUMBER = "123456789012"


@dataclass(frozen=True)
class RecordedResource:
    """One resource as the program declared it."""

    type: str
    name: str
    id: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]


@dataclass
class ErnieMocks(pulumi.runtime.Mocks):
    """Answers `new_resource` and `call` (invokes) for the types ernie's program uses, and records them."""

    resources: list[RecordedResource] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        inputs = dict(args.inputs)
        rid, extra = _outputs_for(args.typ, args.name, inputs)
        # The provider's check fills in an auto-name before the engine records the inputs (and a policy sees them).
        autoname = _AUTONAMED.get(args.typ)
        if autoname is not None and autoname not in inputs:
            inputs[autoname] = extra[autoname]
        outputs = {**inputs, **extra}
        self.resources.append(RecordedResource(args.typ, args.name, rid, inputs, outputs))
        return rid, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        self.calls.append(args.token)
        answer = _INVOKES.get(args.token)
        if answer is None:
            raise NotImplementedError(f"ErnieMocks does not answer the invoke {args.token}; add it to ernie/mocks.py")
        return answer(dict(args.args))

    def of_type(self, typ: str) -> list[RecordedResource]:
        """The recorded resources of one type token, e.g. "aws:ec2/instance:Instance"."""
        return [r for r in self.resources if r.type == typ]


_AUTONAMED = {"aws:s3/bucket:Bucket": "bucket"}
"""Types whose name property the provider auto-names when the program leaves it out (the ones rules match on)."""


def _digest(*parts: str, length: int = 17) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


def _octets(*parts: str) -> tuple[int, int]:
    d = hashlib.sha256("/".join(parts).encode()).digest()
    return 1 + d[0] % 250, 1 + d[1] % 250


def _region(inputs: dict) -> str:
    return inputs.get("region") or DEFAULT_REGION


@cache
def _ssh_key() -> tuple[str, str]:
    """A real ed25519 key pair, made once per process, so key handling is tested on real PEM/OpenSSH text."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public + "\n"


def _tpu_endpoints(name: str, accelerator_type: str) -> list[dict]:
    tpu = lookup_tpu(accelerator_type)
    hosts = tpu.hosts if tpu else 1
    a, b = _octets(name)
    return [{"ipAddress": f"10.128.0.{2 + i}", "port": 8470,
             "accessConfigs": [{"externalIp": f"34.{a}.{b}.{10 + i}"}]} for i in range(hosts)]


def _outputs_for(typ: str, name: str, inputs: dict) -> tuple[str, dict]:
    """The id and the provider-computed outputs a real create would return."""
    h = _digest(typ, name)
    for answer in (_gcp_outputs, _ec2_outputs, _aws_service_outputs):
        found = answer(typ, name, inputs, h)
        if found is not None:
            return found
    return f"{name}-{h[:7]}", {}


def _gcp_outputs(typ: str, name: str, inputs: dict, h: str) -> tuple[str, dict] | None:
    project = inputs.get("project") or "ernie-mock-project"
    match typ:
        case "gcp:tpu/v2Vm:V2Vm":
            node = inputs.get("name") or f"{name}-{h[:7]}"
            zone = inputs.get("zone") or "us-central2-b"
            rid = f"projects/{project}/locations/{zone}/nodes/{node}"
            return rid, {"name": node, "state": "READY",
                         "networkEndpoints": _tpu_endpoints(name, inputs.get("acceleratorType", "v2-8"))}
        case "gcp:compute/network:Network" | "gcp:compute/subnetwork:Subnetwork" | "gcp:compute/firewall:Firewall":
            kind = {"Network": "networks", "Subnetwork": "subnetworks", "Firewall": "firewalls"}[typ.rsplit(":", 1)[1]]
            scope = f"regions/{inputs['region']}" if kind == "subnetworks" else "global"
            res_name = inputs.get("name") or f"{name}-{h[:7]}"
            rid = f"projects/{project}/{scope}/{kind}/{res_name}"
            return rid, {"name": res_name, "selfLink": f"https://www.googleapis.com/compute/v1/{rid}"}
        case "gcp:serviceaccount/account:Account":
            email = f"{inputs['accountId']}@{project}.iam.gserviceaccount.com"
            return f"projects/{project}/serviceAccounts/{email}", {
                "email": email, "member": f"serviceAccount:{email}", "uniqueId": str(int(h, 16))[:21],
                "name": f"projects/{project}/serviceAccounts/{email}"}
        case "gcp:storage/bucket:Bucket":
            bucket = inputs.get("name") or f"{name}-{h[:7]}"
            return bucket, {"name": bucket, "url": f"gs://{bucket}",
                            "selfLink": f"https://www.googleapis.com/storage/v1/b/{bucket}"}
        case "gcp:projects/iAMCustomRole:IAMCustomRole":
            role = f"projects/{project}/roles/{inputs['roleId']}"
            return role, {"name": role}
    return None


def _ec2_outputs(typ: str, name: str, inputs: dict, h: str) -> tuple[str, dict] | None:
    a, b = _octets(typ, name)
    region = _region(inputs)
    match typ:
        case "aws:ec2/instance:Instance":
            rid = f"i-{h}"
            return rid, {"arn": f"arn:aws:ec2:{region}:{ACCOUNT_ID}:instance/{rid}",
                         "privateIp": f"10.0.{a % 16}.{b}", "publicIp": f"54.{a}.{b}.{10 + a % 200}",
                         "primaryNetworkInterfaceId": f"eni-{h}", "instanceState": "running"}
        case "aws:ec2/networkInterface:NetworkInterface":
            return f"eni-{h}", {"privateIp": f"10.0.{a % 16}.{b}", "privateIps": [f"10.0.{a % 16}.{b}"],
                                "arn": f"arn:aws:ec2:{region}:{ACCOUNT_ID}:network-interface/eni-{h}"}
        case "aws:ec2/eip:Eip":
            return f"eipalloc-{h}", {"allocationId": f"eipalloc-{h}", "publicIp": f"3.{a}.{b}.{10 + b % 200}"}
        case "aws:ec2/placementGroup:PlacementGroup":
            pg = inputs.get("name") or f"{name}-{h[:7]}"
            return pg, {"name": pg, "placementGroupId": f"pg-{h}",
                        "arn": f"arn:aws:ec2:{region}:{ACCOUNT_ID}:placement-group/{pg}"}
        case "aws:ec2/keyPair:KeyPair":
            key_name = inputs.get("keyName") or f"{name}-{h[:7]}"
            return key_name, {"keyName": key_name, "keyPairId": f"key-{h}",
                              "arn": f"arn:aws:ec2:{region}:{ACCOUNT_ID}:key-pair/{key_name}"}
    if typ.startswith("aws:ec2/") or typ.startswith("aws:vpc/"):
        prefix = {"vpc": "vpc", "subnet": "subnet", "internetGateway": "igw", "routeTable": "rtb",
                  "routeTableAssociation": "rtbassoc", "securityGroup": "sg",
                  "securityGroupIngressRule": "sgr", "securityGroupEgressRule": "sgr"}
        kind = typ.split("/", 1)[1].split(":", 1)[0]
        rid = f"{prefix.get(kind, kind.lower())}-{h}"
        return rid, {"arn": f"arn:aws:ec2:{region}:{ACCOUNT_ID}:{kind.lower()}/{rid}", "ownerId": ACCOUNT_ID}
    return None


def _aws_service_outputs(typ: str, name: str, inputs: dict, h: str) -> tuple[str, dict] | None:
    """S3, IAM, logs, Lambda, API Gateway (and the tls key the stacks generate); any other aws: type generically."""
    region = _region(inputs)
    match typ:
        case "aws:s3/bucket:Bucket":
            bucket = inputs.get("bucket") or f"{name}-{h[:7]}"
            return bucket, {"bucket": bucket, "arn": f"arn:aws:s3:::{bucket}",
                            "bucketRegionalDomainName": f"{bucket}.s3.{region}.amazonaws.com"}
        case "aws:iam/role:Role" | "aws:iam/instanceProfile:InstanceProfile" | "aws:iam/policy:Policy":
            kind = {"Role": "role", "InstanceProfile": "instance-profile", "Policy": "policy"}[typ.rsplit(":", 1)[1]]
            res_name = inputs.get("name") or f"{name}-{h[:7]}"
            return res_name, {"name": res_name, "arn": f"arn:aws:iam::{ACCOUNT_ID}:{kind}/{res_name}",
                              "uniqueId": f"AROA{h.upper()}"}
        case "aws:cloudwatch/logGroup:LogGroup":
            group = inputs.get("name") or f"{name}-{h[:7]}"
            # The provider drops the ":*" the API appends (all of the group's streams).
            return group, {"name": group, "arn": f"arn:aws:logs:{region}:{ACCOUNT_ID}:log-group:{group}"}
        case "aws:lambda/function:Function":
            fn = inputs.get("name") or f"{name}-{h[:7]}"
            arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{fn}"
            return fn, {"name": fn, "arn": arn, "qualifiedArn": f"{arn}:$LATEST", "version": "$LATEST",
                        "invokeArn": f"arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{arn}/invocations"}
        case "aws:lambda/layerVersion:LayerVersion":
            layer = inputs.get("layerName") or name
            return f"arn:aws:lambda:{region}:{ACCOUNT_ID}:layer:{layer}:1", {
                "arn": f"arn:aws:lambda:{region}:{ACCOUNT_ID}:layer:{layer}:1",
                "layerArn": f"arn:aws:lambda:{region}:{ACCOUNT_ID}:layer:{layer}", "version": "1"}
        case "aws:apigatewayv2/api:Api":
            api_id = h[:10]
            return api_id, {"apiEndpoint": f"https://{api_id}.execute-api.{region}.amazonaws.com",
                            "executionArn": f"arn:aws:execute-api:{region}:{ACCOUNT_ID}:{api_id}",
                            "arn": f"arn:aws:apigateway:{region}::/apis/{api_id}"}
        case "tls:index/privateKey:PrivateKey":
            private, public = _ssh_key()
            return f"tls-{h}", {"privateKeyOpenssh": private, "privateKeyPem": private,
                                "publicKeyOpenssh": public, "publicKeyFingerprintSha256": f"SHA256:{h}"}
    if typ.startswith("aws:"):
        return f"{name}-{h[:7]}", {"arn": f"arn:aws:{typ.split(':')[1].split('/')[0]}:{region}:{ACCOUNT_ID}:{name}"}
    return None


def _get_ami(args: dict) -> dict:
    ami = "ami-0" + _digest("ami", str(args.get("filters")), length=16)
    name = AMI_NAME_PATTERN.replace("????????", "20251105")
    return {"id": ami, "imageId": ami, "name": name, "architecture": "x86_64", "ownerId": "898082745236",
            "rootDeviceName": "/dev/sda1", "virtualizationType": "hvm",
            "blockDeviceMappings": [{"deviceName": "/dev/sda1", "noDevice": "", "virtualName": "",
                                     "ebs": {"volume_size": "75", "volume_type": "gp3", "encrypted": "false",
                                             "delete_on_termination": "true",
                                             "snapshot_id": "snap-0123456789abcdef0"}}]}


_INVOKES = {
    "aws:ec2/getAmi:getAmi": _get_ami,
    "aws:index/getCallerIdentity:getCallerIdentity": lambda _: {
        "accountId": ACCOUNT_ID, "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/ernie", "userId": "AIDAERNIE",
        "id": ACCOUNT_ID},
    "aws:index/getRegion:getRegion": lambda a: {"name": a.get("region") or DEFAULT_REGION,
                                                "region": a.get("region") or DEFAULT_REGION, "id": DEFAULT_REGION},
    "aws:index/getPartition:getPartition": lambda _: {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"},
    "aws:ssm/getParameter:getParameter": lambda a: {"name": a["name"], "type": "String", "id": a["name"],
                                                    "value": "ami-0" + _digest("ssm", a["name"], length=16)},
    "gcp:tpu/getV2RuntimeVersions:getV2RuntimeVersions": lambda a: {
        "versions": sorted({g.base_image for g in GENERATIONS}
                           | {f"tpu-vm-tf-{v}{pod}{api}" for v in TF_VERSIONS for pod in ("", "-pod")
                              for api in ("", "-pjrt", "-se")}),
        "id": "runtime-versions", "project": a.get("project"), "zone": a.get("zone")},
    "gcp:tpu/getV2AcceleratorTypes:getV2AcceleratorTypes": lambda a: {
        "types": accelerator_types(), "id": "accelerator-types", "project": a.get("project"), "zone": a.get("zone")},
    "gcp:organizations/getProject:getProject": lambda a: {
        "projectId": a.get("projectId") or "ernie-mock-project", "number": GCP_PROJECT_NUMBER, "id": "project"},
}


def install(stack: str, project: str = "ernie") -> ErnieMocks:
    """Point the Pulumi runtime at a fresh ErnieMocks for one program run, forgetting any previous run's stack
    and configuration."""
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_all_config({}, [])
    mocks = ErnieMocks()
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False)
    return mocks
