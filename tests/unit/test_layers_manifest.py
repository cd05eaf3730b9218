"""The manifest of `ernie layers build` and the program that reads it: round trip, staleness, missing layers,
Lambda's budget on the recorded figures, and a program (and `ernie check`) that builds nothing.

The zips are small real stand-ins (testing/lambda_stand_ins.py); the pip builds are tests/integration's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from catalog.lambda_runtime import UNZIPPED_LIMIT
from ernie.check import plan, render
from ernie.pulumi_cli import PulumiCli
from ernie.serving import build as layers_build
from infra import serving_layers
from infra.config import ConfigError, parse
from lambda_layers import manifest
from lambda_layers.errors import ManifestError
from lambda_layers.spec import load_functions, spec_digest
from lambda_layers.target import Target
from testing.lambda_stand_ins import stand_in_function, use_manifest, write_stand_in_manifest

REPO = Path(__file__).resolve().parents[2]
X86 = Target.lambda_runtime("3.12", "x86_64")


def serving_config(**changes: object):
    """The committed aws stack's ServingConfig with serving (and `changes`) on."""
    values = yaml.safe_load((REPO / "Pulumi.aws.yaml").read_text())["config"]
    values.update({"ernie:serving": True, **changes})
    return parse({k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}, "aws").serving


def tabular() -> serving_layers.ServedFunction:
    return serving_layers.wanted(serving_config())[0]


def edit_entry(path: Path, key: str, edit) -> None:
    data = json.loads(path.read_text())
    edit(data["functions"][key])
    path.write_text(json.dumps(data))


def test_manifest_round_trip(tmp_path: Path) -> None:
    spec = load_functions()["embed"]
    built = stand_in_function(tmp_path / "zips", spec, X86, s3_layer="onnxruntime")
    path = manifest.write([built], tmp_path / "manifest.json")
    assert manifest.load("embed", X86, path) == built.__class__(built.spec, built.target, built.code, tuple(
        layer.__class__(layer.name, layer.archive, layer.distributions, layer.bytecode, cached=True)
        for layer in built.layers))
    entry = json.loads(path.read_text())["functions"]["embed/python3.12-x86_64"]
    assert entry["target"] == {"python_version": "3.12", "arch": "x86_64", "glibc": [2, 34]}
    assert entry["spec_digest"] == spec_digest(spec)
    assert entry["layers"][0]["path"] == "zips/onnxruntime.zip"  # relative: the build directory may move
    # A second build (another function, another target) keeps the entries already there.
    manifest.write([stand_in_function(tmp_path / "arm", load_functions()["tabular"],
                                      Target.lambda_runtime("3.13", "arm64"))], path)
    assert sorted(json.loads(path.read_text())["functions"]) == ["embed/python3.12-x86_64",
                                                                 "tabular/python3.13-arm64"]


def test_stale_manifest_is_refused_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = use_manifest(monkeypatch, write_stand_in_manifest(tmp_path))
    edit_entry(path, "tabular/python3.12-x86_64", lambda e: e.update(spec_digest="0" * 64))
    with pytest.raises(ConfigError) as error:
        serving_layers.read(tabular(), serving_config())
    assert str(error.value) == (
        f"ernie:serving: the tabular layers in {path} are stale: layers.toml, a requirements file, the function's "
        "code or the builder changed since they were built; run "
        "`ernie layers build --function tabular --python-version 3.12 --arch x86_64`")


def test_a_target_the_manifest_lacks_is_refused_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_manifest(monkeypatch, write_stand_in_manifest(tmp_path))
    serving = serving_config(**{"ernie:servingEmbed": True, "ernie:servingArchitecture": "arm64"})
    with pytest.raises(ConfigError, match=r"^ernie:servingEmbed: .* has no embed layers for python3.12 arm64 .*"
                                          r"run `ernie layers build --function embed --python-version 3.12 "
                                          r"--arch arm64`$"):
        serving_layers.read(serving_layers.wanted(serving)[1], serving)


def test_a_missing_manifest_or_zip_is_refused_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_manifest(monkeypatch, tmp_path / "none" / "manifest.json")
    with pytest.raises(ConfigError, match=r"ernie:serving: the tabular layers have not been built .* does not "
                                          r"exist\); run `ernie layers build --function tabular"):
        serving_layers.read(tabular(), serving_config())
    path = use_manifest(monkeypatch, write_stand_in_manifest(tmp_path / "built"))
    (path.parent / X86.name / "tabular" / "pandas.zip").unlink()
    with pytest.raises(ConfigError, match=r"pandas.zip, named by .* is missing; run `ernie layers build"):
        serving_layers.read(tabular(), serving_config())


def test_a_zip_changed_since_the_build_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorded sha256 becomes the deploy's source_code_hash: a zip rewritten by hand must not pass for it."""
    path = use_manifest(monkeypatch, write_stand_in_manifest(tmp_path))
    with (path.parent / X86.name / "tabular" / "pandas.zip").open("ab") as zipped:
        zipped.write(b"\0")
    with pytest.raises(ConfigError, match=r"pandas.zip is not the zip .*manifest.json records \(its sha256 "
                                          r"differs\); run `ernie layers build --function tabular"):
        serving_layers.read(tabular(), serving_config())


def test_a_malformed_entry_is_refused_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = use_manifest(monkeypatch, write_stand_in_manifest(tmp_path))
    edit_entry(path, "tabular/python3.12-x86_64", lambda e: e["layers"][0].pop("sha256"))
    with pytest.raises(ConfigError, match=r"the tabular entry of .*manifest.json is malformed \(KeyError: 'sha256'\); "
                                          r"run `ernie layers build --function tabular"):
        serving_layers.read(tabular(), serving_config())


def test_the_budget_is_checked_on_the_manifest_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = use_manifest(monkeypatch, write_stand_in_manifest(tmp_path))
    edit_entry(path, "tabular/python3.12-x86_64", lambda e: e["layers"][1].update(unzipped_bytes=UNZIPPED_LIMIT))
    with pytest.raises(ConfigError, match=r"^ernie:serving: the tabular function for python3.12-x86_64-glibc2.34 "
                                          r"comes to 250.0 MiB unzipped .* over Lambda's limit"):
        serving_layers.read(tabular(), serving_config())


def aws_stack_file(tmp_path: Path, **changes: object) -> Path:
    values = yaml.safe_load((REPO / "Pulumi.aws.yaml").read_text())["config"]
    values.update({"ernie:serving": True, **changes})
    path = tmp_path / "Pulumi.aws.yaml"
    path.write_text(yaml.safe_dump({"config": values}))
    return path


def test_check_without_layers_says_which_it_has_not_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No manifest: `ernie check` still checks everything else and names the layers and the builds to run."""
    use_manifest(monkeypatch, tmp_path / "none" / "manifest.json")
    result = plan(config_file=aws_stack_file(tmp_path, **{"ernie:servingEmbed": True}))
    assert [line.split(":", 2)[:2] for line in result.unseen_layers] == [["ernie", "serving"],
                                                                         ["ernie", "servingEmbed"]]
    assert "--function embed --python-version 3.12 --arch x86_64" in result.unseen_layers[1]
    functions = [r.inputs["name"] for r in result.resources if r.type == "aws:lambda/function:Function"]
    # Registered from two Outputs' callbacks, so in either order.
    assert sorted(functions) == ["ernie-aws-embed", "ernie-aws-tabular"] and result.findings == []
    console = Console(record=True, width=400)
    render(result, console)
    text = console.export_text()
    assert "serving layers not seen: 2" in text and "guardrail findings: none" in text


def test_neither_the_program_nor_check_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a manifest the program only reads it: no pip, no build script, no process at all."""
    use_manifest(monkeypatch, write_stand_in_manifest(tmp_path / "layers"))

    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the program started a process: {args}")

    monkeypatch.setattr(subprocess, "run", no_process)
    monkeypatch.setattr(subprocess, "Popen", no_process)
    result = plan(config_file=aws_stack_file(tmp_path, **{"ernie:servingEmbed": True}))
    assert result.unseen_layers == [] and result.findings == []
    layers = [r for r in result.resources if r.type == "aws:lambda/layerVersion:LayerVersion"]
    assert len(layers) == 7


def test_infra_loads_no_build_step_of_lambda_layers() -> None:
    """What the program imports of lambda_layers, transitively: the reading side only."""
    out = subprocess.run([sys.executable, "-c", "import json, sys, infra.serving_layers; print(json.dumps([m for m in "
                          "sys.modules if m.startswith('lambda_layers')]))"], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    loaded = set(json.loads(out))
    assert loaded and not loaded & {"lambda_layers.build", "lambda_layers.tree", "lambda_layers.harness"}, loaded


def test_layers_build_writes_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layers_build, "build_function", lambda spec, target, out, log: stand_in_function(
        out / target.name / spec.name, spec, target))
    layers_build.build_layers(["embed"], "3.13", "arm64", tmp_path, Console(record=True))
    built = manifest.load("embed", Target.lambda_runtime("3.13", "arm64"), tmp_path / "manifest.json")
    assert [layer.name for layer in built.layers] == ["onnxruntime", "tokenizers", "embed-model"]


def test_pulumi_up_builds_only_the_layers_the_manifest_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`up` of a serving stack gets its layers first, as when the program built them; nothing when they are there."""
    path = use_manifest(monkeypatch, write_stand_in_manifest(tmp_path / "layers"))
    edit_entry(path, "embed/python3.12-x86_64", lambda e: e.update(spec_digest="stale"))
    calls = []
    monkeypatch.setattr(layers_build, "build_layers", lambda *args: calls.append(args[:4]))
    pulumi = PulumiCli(config_file=aws_stack_file(tmp_path, **{"ernie:servingEmbed": True}))
    pulumi.build_layers("aws")
    assert calls == [(["embed"], "3.12", "x86_64", path.parent)]
    calls.clear()
    PulumiCli(config_file=aws_stack_file(tmp_path, **{"ernie:serving": False})).build_layers("aws")
    assert calls == []
    with pytest.raises(ManifestError):
        manifest.load("embed", X86, path)
