"""LambdaService under Pulumi mocks: layers in order, runtime and architecture, least privilege, API wiring.

The component is given small real zips standing in for built layers (testing/lambda_stand_ins.py; lambda_layers/
is tested on its own in test_layers.py), so what is checked here is only what the component declares. The whole
program reads them through a manifest, as it reads the last `ernie layers build`'s, and builds nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from ernie.check import Plan, plan
from ernie.errors import ErnieError
from ernie.mocks import ErnieMocks, RecordedResource
from infra.aws_serving import LambdaService, LambdaServiceArgs, lambda_layer_name, render_logs_policy
from lambda_layers.built import BuiltFunction
from lambda_layers.spec import FunctionSpec, load_functions
from lambda_layers.target import Target
from testing.lambda_stand_ins import stand_in_function, use_manifest, write_stand_in_manifest

REPO = Path(__file__).resolve().parents[2]
FUNCTION = "aws:lambda/function:Function"
LAYER = "aws:lambda/layerVersion:LayerVersion"
TAGS = {"ernie-stack": "aws", "ernie-ttl": "180"}


def built_function(tmp_path: Path, target: Target, s3_layer: str | None = None) -> BuiltFunction:
    return stand_in_function(tmp_path, load_functions()["tabular"], target, s3_layer)


def declare(mocks: ErnieMocks, function: BuiltFunction, name: str = "serving") -> list[RecordedResource]:
    """Run the component as a program; every resource it declares is registered when this returns."""
    args = LambdaServiceArgs(function=function, stack="aws", memory_mb=1536, timeout_seconds=20,
                             log_retention_days=14, throttle_rate=25, throttle_burst=50, ttl_minutes=180, tags=TAGS,
                             environment={"ERNIE_MAX_INSTANCES": "500"})
    _sync_await(run_pulumi_func(lambda: LambdaService(name, args)))
    return mocks.resources


def one(resources: list[RecordedResource], typ: str) -> RecordedResource:
    (found,) = [r for r in resources if r.type == typ]
    return found


def test_function_has_the_four_layers_in_order(pulumi_mocks: ErnieMocks, tmp_path: Path) -> None:
    resources = declare(pulumi_mocks, built_function(tmp_path, Target.lambda_runtime("3.12", "x86_64")))
    function = one(resources, FUNCTION)
    by_name = {r.name: r for r in resources if r.type == LAYER}
    expected = [by_name[f"serving-{n}"].outputs["arn"] for n in ("numpy-scipy", "pandas", "scikit-learn", "model")]
    assert function.inputs["layers"] == expected
    assert [by_name[f"serving-{n}"].inputs["layerName"] for n in ("numpy-scipy", "model")] == \
        ["ernie-aws-tabular_numpy_scipy", "ernie-aws-tabular_model"]
    assert all(r.inputs["compatibleRuntimes"] == ["python3.12"] for r in by_name.values())
    assert all(r.inputs["description"].endswith("ernie-ttl=180") for r in by_name.values())
    # An unchanged zip keeps its hash, so Pulumi sees no change and Lambda publishes no new version.
    assert by_name["serving-pandas"].inputs["sourceCodeHash"] == function_zip_hash(tmp_path / "pandas.zip")


def function_zip_hash(path: Path) -> str:
    return base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


@pytest.mark.parametrize("python_version,arch", [("3.12", "x86_64"), ("3.13", "arm64")])
def test_runtime_architecture_memory_timeout_as_configured(pulumi_mocks: ErnieMocks, tmp_path: Path,
                                                           python_version: str, arch: str) -> None:
    resources = declare(pulumi_mocks, built_function(tmp_path, Target.lambda_runtime(python_version, arch)))
    function = one(resources, FUNCTION).inputs
    assert function["runtime"] == f"python{python_version}" and function["architectures"] == [arch]
    assert (function["memorySize"], function["timeout"], function["handler"]) == (1536, 20, "handler.handler")
    assert function["environment"] == {"variables": {"ERNIE_MAX_INSTANCES": "500"}}
    assert function["name"] == "ernie-aws-tabular"
    assert function["reservedConcurrentExecutions"] == 10  # the bound on what a flood of requests can cost
    assert all(r.inputs["compatibleArchitectures"] == [arch] for r in resources if r.type == LAYER)


def test_invoke_permission_is_bound_to_the_api(pulumi_mocks: ErnieMocks, tmp_path: Path) -> None:
    resources = declare(pulumi_mocks, built_function(tmp_path, Target.lambda_runtime()))
    api = one(resources, "aws:apigatewayv2/api:Api")
    permission = one(resources, "aws:lambda/permission:Permission").inputs
    assert permission["principal"] == "apigateway.amazonaws.com"
    assert permission["action"] == "lambda:InvokeFunction"
    assert permission["sourceArn"] == f"{api.outputs['executionArn']}/*/*"
    assert permission["function"] == one(resources, FUNCTION).outputs["name"]
    assert api.inputs["protocolType"] == "HTTP"
    integration = one(resources, "aws:apigatewayv2/integration:Integration")
    assert integration.inputs["integrationUri"] == one(resources, FUNCTION).outputs["arn"]
    assert (integration.inputs["integrationType"], integration.inputs["payloadFormatVersion"]) == ("AWS_PROXY", "2.0")
    route = one(resources, "aws:apigatewayv2/route:Route").inputs
    assert route["routeKey"] == "$default" and route["target"] == f"integrations/{integration.id}"
    stage = one(resources, "aws:apigatewayv2/stage:Stage").inputs
    assert stage["name"] == "$default" and stage["autoDeploy"] is True
    assert stage["defaultRouteSettings"] == {"throttlingRateLimit": 25, "throttlingBurstLimit": 50}


def test_role_may_only_write_its_own_logs(pulumi_mocks: ErnieMocks, tmp_path: Path) -> None:
    resources = declare(pulumi_mocks, built_function(tmp_path, Target.lambda_runtime()))
    role = one(resources, "aws:iam/role:Role").inputs
    trust = json.loads(role["assumeRolePolicy"])["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "lambda.amazonaws.com"}]
    assert not [r for r in resources if r.type == "aws:iam/rolePolicyAttachment:RolePolicyAttachment"]
    log_group = one(resources, "aws:cloudwatch/logGroup:LogGroup")
    assert log_group.inputs["name"] == "/aws/lambda/ernie-aws-tabular"
    assert log_group.inputs["retentionInDays"] == 14
    policy = json.loads(one(resources, "aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    (statement,) = policy["Statement"]
    assert statement["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert statement["Resource"] == f"{log_group.outputs['arn']}:*"
    assert one(resources, FUNCTION).inputs["role"] == one(resources, "aws:iam/role:Role").outputs["arn"]


def test_a_layer_over_50_mb_goes_through_a_private_encrypted_bucket(pulumi_mocks: ErnieMocks, tmp_path: Path) -> None:
    resources = declare(pulumi_mocks, built_function(tmp_path, Target.lambda_runtime(), s3_layer="numpy-scipy"))
    bucket = one(resources, "aws:s3/bucket:Bucket")
    upload = one(resources, "aws:s3/bucketObjectv2:BucketObjectv2").inputs
    by_name = {r.name: r.inputs for r in resources if r.type == LAYER}
    assert by_name["serving-numpy-scipy"]["s3Bucket"] == bucket.id
    assert by_name["serving-numpy-scipy"]["s3Key"] == upload["key"]
    assert "code" not in by_name["serving-numpy-scipy"] and "s3Bucket" not in by_name["serving-pandas"]
    block = one(resources, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(block[k] for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
    sse = one(resources, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"


def test_two_services_do_not_collide(pulumi_mocks: ErnieMocks, tmp_path: Path) -> None:
    """A second function (an embedding endpoint, say) is a second LambdaService with its own names."""
    target = Target.lambda_runtime()
    declare(pulumi_mocks, built_function(tmp_path, target), "serving")
    (tmp_path / "embed").mkdir()
    other = built_function(tmp_path / "embed", target)
    renamed = BuiltFunction(FunctionSpec("embed", "", "embed.handler", other.spec.code, other.spec.layers),
                            target, other.code, other.layers)
    resources = declare(pulumi_mocks, renamed, "embedding")
    names = [(r.type, r.name) for r in resources]
    assert len(names) == len(set(names))
    functions = [r.inputs["name"] for r in resources if r.type == FUNCTION]
    assert functions == ["ernie-aws-tabular", "ernie-aws-embed"]
    assert lambda_layer_name("aws", "embed", "model") == "ernie-aws-embed_model"


def test_logs_policy_renders_one_scoped_statement() -> None:
    policy = json.loads(render_logs_policy("arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/f"))
    assert policy["Statement"][0]["Resource"] == "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/f:*"



@pytest.fixture(autouse=True)
def stand_in_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The program reads a manifest of stand-in zips for python3.12 x86_64, never infra/build/layers."""
    return use_manifest(monkeypatch, write_stand_in_manifest(tmp_path / "layers"))


def aws_plan(tmp_path: Path, changes: dict[str, object]) -> Plan:
    """`ernie check` of the committed aws stack file with serving turned on and some values changed."""
    config = yaml.safe_load((REPO / "Pulumi.aws.yaml").read_text())["config"]
    config.update({"ernie:serving": True, **changes})
    path = tmp_path / "Pulumi.aws.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return plan(config_file=path)


def test_stack_with_serving_exports_the_url(tmp_path: Path) -> None:
    """The whole program: the manifest's layers for python3.12, the service, the inventory."""
    result = aws_plan(tmp_path, {"ernie:servingMemoryMb": 2048})
    (api,) = [r for r in result.resources if r.type == "aws:apigatewayv2/api:Api"]
    assert result.inventory["serving_url"] == api.outputs["apiEndpoint"]
    (function,) = [r.inputs for r in result.resources if r.type == FUNCTION]
    assert (function["runtime"], function["architectures"], function["memorySize"]) == ("python3.12", ["x86_64"], 2048)
    assert len(function["layers"]) == 4
    zips = {r.name: r.inputs for r in result.resources if r.type == LAYER}
    assert set(zips) == {"serving-numpy-scipy", "serving-pandas", "serving-scikit-learn", "serving-model"}


@pytest.mark.parametrize("changes,fragments", [
    ({"ernie:servingMemoryMb": 64}, ["ernie:servingMemoryMb", "64", "from 128 to 10240"]),
    ({"ernie:servingTimeoutSeconds": 60}, ["ernie:servingTimeoutSeconds", "60", "from 1 to 30", "gives up after 30"]),
    ({"ernie:servingArchitecture": "amd64"}, ["ernie:servingArchitecture", "'amd64'", "x86_64, arm64"]),
    ({"ernie:servingPython": "3.11"}, ["ernie:servingPython", "'3.11'", "3.12, 3.13"]),
    ({"ernie:servingLogRetentionDays": 10}, ["ernie:servingLogRetentionDays", "10", "7, 14, 30"]),
    ({"ernie:servingThrottleBurst": 0}, ["ernie:servingThrottleBurst", "0", "from 1 to 5000"]),
])
def test_bad_serving_config_is_refused_before_any_resource(tmp_path: Path, changes: dict, fragments: list[str]) -> None:
    with pytest.raises(ErnieError) as error:
        aws_plan(tmp_path, changes)
    assert all(f in str(error.value) for f in fragments), str(error.value)
