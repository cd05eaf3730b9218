"""The embedding function in the aws stack, under Pulumi mocks: its layers, memory and endpoint as configured.

The whole program runs through `ernie check`'s plan with the committed Pulumi.aws.yaml, serving and
`ernie:servingEmbed` turned on: the embed layers come from a manifest of stand-in zips for python3.12
(testing/lambda_stand_ins.py), as the program reads the last `ernie layers build`'s, declared beside the
tabular function.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ernie.check import Plan, plan
from ernie.errors import ErnieError
from testing.lambda_stand_ins import use_manifest, write_stand_in_manifest

REPO = Path(__file__).resolve().parents[2]
FUNCTION = "aws:lambda/function:Function"
LAYER = "aws:lambda/layerVersion:LayerVersion"


@pytest.fixture(autouse=True)
def stand_in_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_manifest(monkeypatch, write_stand_in_manifest(tmp_path / "layers"))


def aws_plan(tmp_path: Path, changes: dict[str, object]) -> Plan:
    config = yaml.safe_load((REPO / "Pulumi.aws.yaml").read_text())["config"]
    config.update({"ernie:serving": True, **changes})
    path = tmp_path / "Pulumi.aws.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return plan(config_file=path)


def test_embedding_function_has_its_layers_and_memory(tmp_path: Path) -> None:
    result = aws_plan(tmp_path, {"ernie:servingEmbed": True, "ernie:servingEmbedMemoryMb": 3008,
                                 "ernie:servingMemoryMb": 1024})
    functions = {r.inputs["name"]: r for r in result.resources if r.type == FUNCTION}
    assert set(functions) == {"ernie-aws-tabular", "ernie-aws-embed"}
    embed = functions["ernie-aws-embed"].inputs
    assert (embed["handler"], embed["runtime"], embed["architectures"]) == ("embed.handler", "python3.12", ["x86_64"])
    assert embed["memorySize"] == 3008 and functions["ernie-aws-tabular"].inputs["memorySize"] == 1024
    layer_versions = {r.name: r for r in result.resources if r.type == LAYER}
    order = ["embedding-onnxruntime", "embedding-tokenizers", "embedding-embed-model"]
    assert embed["layers"] == [layer_versions[name].outputs["arn"] for name in order]
    assert [layer_versions[name].inputs["layerName"] for name in order] == \
        ["ernie-aws-embed_onnxruntime", "ernie-aws-embed_tokenizers", "ernie-aws-embed_embed_model"]
    assert all(layer_versions[name].inputs["compatibleArchitectures"] == ["x86_64"] for name in order)
    assert layer_versions["embedding-onnxruntime"].inputs["description"] == "onnxruntime 1.0 ernie-ttl=180"
    apis = {r.name: r for r in result.resources if r.type == "aws:apigatewayv2/api:Api"}
    assert result.inventory["embed_url"] == apis["embedding-api"].outputs["apiEndpoint"]
    assert result.inventory["serving_url"] == apis["serving-api"].outputs["apiEndpoint"]
    # The guardrails (bounded timeout, reserved concurrency, TTL on every layer) hold for it too.
    assert result.findings == [] and result.acknowledged == []
    assert embed["reservedConcurrentExecutions"] == 10 and embed["timeout"] == 30


def test_embedding_function_is_off_unless_asked(tmp_path: Path) -> None:
    result = aws_plan(tmp_path, {})
    assert [r.inputs["name"] for r in result.resources if r.type == FUNCTION] == ["ernie-aws-tabular"]
    assert "embed_url" not in result.inventory


@pytest.mark.parametrize("changes,fragments", [
    ({"ernie:servingEmbed": True, "ernie:servingEmbedMemoryMb": 256},
     ["ernie:servingEmbedMemoryMb", "256", "from 512 to 10240"]),
    ({"ernie:servingEmbedMemoryMb": 2048}, ["ernie:servingEmbedMemoryMb", "only with `ernie:servingEmbed: true`"]),
    ({"ernie:servingEmbed": "yes"}, ["ernie:servingEmbed", "'yes'", "true or false"]),
])
def test_bad_embedding_config_is_refused(tmp_path: Path, changes: dict, fragments: list[str]) -> None:
    with pytest.raises(ErnieError) as error:
        aws_plan(tmp_path, changes)
    assert all(f in str(error.value) for f in fragments), str(error.value)
