"""Small real zips standing in for built Lambda layers, and a manifest naming them, as `ernie layers build`
writes it: the Pulumi program reads them under mocks without a pip build (lambda_layers/ is tested on its own
in tests/integration/test_layers.py)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from catalog.lambda_runtime import DIRECT_UPLOAD_LIMIT
from infra import serving_layers
from lambda_layers import manifest
from lambda_layers.archive import Archive, write_zip
from lambda_layers.built import BuiltFunction, BuiltLayer, Distribution
from lambda_layers.spec import FunctionSpec, load_functions
from lambda_layers.target import Target


def stand_in_function(root: Path, spec: FunctionSpec, target: Target, s3_layer: str | None = None) -> BuiltFunction:
    """One tiny module per layer, each holding one distribution `<layer> 1.0`; `s3_layer` recorded as over the
    direct-upload limit (it goes through the layer bucket)."""
    root.mkdir(parents=True, exist_ok=True)
    source = root / "stub.py"
    source.write_text("x = 1\n")
    built = []
    for layer in spec.layers:
        archive = write_zip([(f"python/{layer.name.replace('-', '_')}.py", source)], root / f"{layer.name}.zip")
        if layer.name == s3_layer:
            archive = Archive(archive.path, archive.sha256, DIRECT_UPLOAD_LIMIT + 1, archive.unzipped_bytes)
        built.append(BuiltLayer(layer.name, archive, (Distribution(layer.name, "1.0", (), 6),), None))
    code = write_zip([("handler.py", source)], root / "function.zip")
    return BuiltFunction(spec, target, code, tuple(built))


def write_stand_in_manifest(root: Path, targets: Iterable[Target] = (Target.lambda_runtime(),),
                            s3_first_layer: bool = False) -> Path:
    """A manifest at root/manifest.json with every function of layers.toml for each target."""
    path = root / manifest.MANIFEST_NAME
    for target in targets:
        for spec in load_functions().values():
            s3_layer = spec.layers[0].name if s3_first_layer else None
            manifest.write([stand_in_function(root / target.name / spec.name, spec, target, s3_layer)], path)
    return path


def use_manifest(monkeypatch: pytest.MonkeyPatch, path: Path) -> Path:
    """The Pulumi program reads this manifest (instead of the last `ernie layers build`'s)."""
    monkeypatch.setattr(serving_layers, "MANIFEST", path)
    return path
