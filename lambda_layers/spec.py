"""The function specs in workloads/serving/layers.toml (a layer set per function, as data), and the digest a
built set is compared with to tell whether it is stale."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from pydantic import AfterValidator, Field, model_validator

from catalog.lambda_runtime import MAX_LAYERS
from catalog.schema import Problem, Schema, SchemaError, read
from lambda_layers.archive import sha256_file
from lambda_layers.errors import LayerError

REPO = Path(__file__).resolve().parents[1]
SERVING_DIR = REPO / "workloads" / "serving"
FUNCTIONS_FILE = SERVING_DIR / "layers.toml"
DEFAULT_OUT = REPO / "infra" / "build" / "layers"
"""Where `ernie layers build` puts the zips and their manifest, and where the Pulumi program reads them."""

# Part of every cache key and of the spec digest: bump it whenever a build step changes what lands in a zip.
BUILDER_VERSION = "4"


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a function: pip requirements, or a script that writes the layer itself."""

    name: str
    """Short name: part of the zip name and of the Lambda layer name."""
    requirements: tuple[str, ...] = ()
    """pip requirement lines (pinned, since the layer is cached by their hash)."""
    build: Path | None = None
    """A script run as `python SCRIPT --out DIR` that writes the layer's python/ (a model layer)."""
    inputs: tuple[Path, ...] = ()
    """What the script reads beside itself (files or directories): with it, the cache key of a build layer."""
    omit: tuple[str, ...] = ()
    """Distributions the requirements pull in that the function never imports (a dependency of a feature it
    does not use): removed with whatever only they need, and exempt from the completeness check."""
    drop: tuple[str, ...] = ()
    """Glob patterns, relative to python/, of files no import loads; deleted after install. Each must match,
    so a file renamed by a new release is noticed rather than shipped."""


@dataclass(frozen=True)
class FunctionSpec:
    """A Lambda function: its code and its layers, in the order Lambda stacks them."""

    name: str
    description: str
    handler: str
    """Lambda handler string, module.function."""
    code: tuple[Path, ...]
    """Files of the function's own zip (the handler and what it imports beside the layers)."""
    layers: tuple[LayerSpec, ...]


def _layer_name(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise ValueError(f"layer name {name!r} must be lower-case letters, digits and dashes")
    return name


class _LayerTable(Schema):
    """A `[[NAME.layers]]` table as written; LayerSpec is what it resolves to."""

    name: Annotated[str, AfterValidator(_layer_name)] = Field(description="lower-case letters, digits and dashes")
    requirements: str | None = None
    build: str | None = None
    inputs: tuple[str, ...] = ()
    omit: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_source(self) -> _LayerTable:
        if (self.requirements is None) == (self.build is None):
            raise ValueError(f"layer {self.name!r} needs exactly one of `requirements` or `build`")
        if self.build is not None and (self.omit or self.drop):
            raise ValueError(f"layer {self.name!r} has a build script; `omit` and `drop` apply to requirements")
        if self.requirements is not None and self.inputs:
            raise Problem("inputs", f"layer {self.name!r} has requirements; `inputs` apply to a build script")
        return self


class _FunctionTable(Schema):
    """A `[NAME]` table as written; FunctionSpec is what it resolves to."""

    description: str = ""
    handler: str = Field(description="the Lambda handler, module.function")
    code: tuple[str, ...] = Field(min_length=1, description="the files of the function's own zip")
    layers: tuple[_LayerTable, ...] = Field(description=f"1 to {MAX_LAYERS} [[NAME.layers]] tables")

    @model_validator(mode="after")
    def _layer_count(self) -> _FunctionTable:
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise Problem("layers", f"layer names must be unique, got {names}")
        if not 1 <= len(names) <= MAX_LAYERS:
            raise Problem("layers", f"has {len(names)} layers; Lambda takes 1 to {MAX_LAYERS} per function")
        return self


def load_functions(path: Path = FUNCTIONS_FILE) -> dict[str, FunctionSpec]:
    """Every function in a layers.toml, validated: keys known, files exist, names unique, at most 5 layers each."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LayerError(f"cannot read the function specs in {path}: {exc}") from None
    return {name: _function_spec(name, table, path) for name, table in data.items()}


def _function_spec(name: str, table: object, path: Path) -> FunctionSpec:
    where, base = f"[{name}] in {path}", path.parent
    try:
        function = read(_FunctionTable, table)
    except SchemaError as exc:
        raise LayerError(f"{where}: {exc}") from None
    code = tuple(_exists(base / file, where, "code file") for file in function.code)
    return FunctionSpec(name, function.description, function.handler, code,
                        tuple(_layer_spec(layer, base, where) for layer in function.layers))


def _layer_spec(layer: _LayerTable, base: Path, where: str) -> LayerSpec:
    if layer.build is None:
        return LayerSpec(layer.name, requirements=read_requirements(base / layer.requirements),
                         omit=tuple(canonicalize_name(n) for n in layer.omit), drop=layer.drop)
    script = _exists(base / layer.build, where, f"layer {layer.name!r} build script")
    inputs = tuple(_exists(base / i, where, f"layer {layer.name!r} input", file=False) for i in layer.inputs)
    return LayerSpec(layer.name, build=script, inputs=inputs)


def _exists(path: Path, where: str, what: str, *, file: bool = True) -> Path:
    if not (path.is_file() if file else path.exists()):
        raise LayerError(f"{where}: {what} {path} does not exist")
    return path


def read_requirements(path: Path) -> tuple[str, ...]:
    """The requirement lines of a requirements file, each checked to parse."""
    if not path.is_file():
        raise LayerError(f"requirements file {path} does not exist")
    lines = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            Requirement(line)
        except InvalidRequirement as exc:
            raise LayerError(f"{path}:{number}: {line!r} is not a requirement: {exc}") from None
        lines.append(line)
    if not lines:
        raise LayerError(f"{path} lists no requirements")
    return tuple(lines)


def input_files(build: Path, inputs: Iterable[Path]) -> list[Path]:
    """A build script and every file its inputs name (directories walked, bytecode caches skipped)."""
    found = {build}
    for path in inputs:
        found.update(f for f in ([path] if path.is_file() else path.rglob("*"))
                     if f.is_file() and "__pycache__" not in f.parts)
    return sorted(found)


def spec_digest(spec: FunctionSpec) -> str:
    """What a built set was built from: the function's code, each layer's requirements, omit and drop (from
    layers.toml and the requirement files), each build script and its inputs, and BUILDER_VERSION. A manifest
    entry whose digest differs is stale."""
    def files(paths: Iterable[Path]) -> dict[str, str]:
        return {p.relative_to(SERVING_DIR).as_posix() if p.is_relative_to(SERVING_DIR) else str(p): sha256_file(p)
                for p in paths}

    material = {
        "builder": BUILDER_VERSION, "name": spec.name, "description": spec.description, "handler": spec.handler,
        "code": files(spec.code),
        "layers": [{"name": layer.name, "requirements": layer.requirements, "omit": layer.omit, "drop": layer.drop,
                    "build": files(input_files(layer.build, layer.inputs)) if layer.build else None}
                   for layer in spec.layers],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
