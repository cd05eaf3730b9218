"""manifest.json beside the built zips: what `ernie layers build` made, for which runtime, from which inputs.

The Pulumi program reads it (as pulumi/examples point a FileArchive at prebuilt code) and builds nothing. An
entry per function and target holds each zip's path (relative to the manifest), sha256, zipped and unzipped
bytes, the distributions each layer holds, and the digest of what it was built from (spec.spec_digest): an
entry whose digest no longer matches layers.toml, the requirement files, the code or the builder is stale.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lambda_layers.archive import Archive, sha256_file
from lambda_layers.built import BuiltFunction, BuiltLayer, Distribution
from lambda_layers.checks import check_budget, check_complete
from lambda_layers.errors import ManifestError
from lambda_layers.spec import DEFAULT_OUT, FUNCTIONS_FILE, FunctionSpec, load_functions, spec_digest
from lambda_layers.target import Target

MANIFEST_NAME = "manifest.json"
DEFAULT_MANIFEST = DEFAULT_OUT / MANIFEST_NAME
FORMAT = 1


def entry_key(function: str, target: Target) -> str:
    return f"{function}/{target.runtime}-{target.arch}"


def build_command(function: str, target: Target) -> str:
    """The command that builds (or rebuilds) what an entry would hold."""
    return f"ernie layers build --function {function} --python-version {target.python_version} --arch {target.arch}"


def write(functions: Iterable[BuiltFunction], path: Path = DEFAULT_MANIFEST) -> Path:
    """Record each built function in the manifest at `path`, keeping the entries of other functions and targets."""
    data = _read(path) if path.is_file() else {"format": FORMAT, "functions": {}}
    for built in functions:
        data["functions"][entry_key(built.spec.name, built.target)] = _entry(built, path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".manifest-", delete=False) as tmp:
        json.dump(data, tmp, indent=1, sort_keys=True)
    os.replace(tmp.name, path)  # a reader never sees half a manifest
    return path


def _entry(built: BuiltFunction, base: Path) -> dict[str, Any]:
    def archive(a: Archive) -> dict[str, Any]:
        return {"path": os.path.relpath(a.path, base), "sha256": a.sha256, "zipped_bytes": a.zipped_bytes,
                "unzipped_bytes": a.unzipped_bytes}

    return {
        "function": built.spec.name,
        "target": {"python_version": built.target.python_version, "arch": built.target.arch,
                   "glibc": list(built.target.glibc)},
        "spec_digest": spec_digest(built.spec),
        "code": archive(built.code),
        "layers": [{"name": layer.name, **archive(layer.archive), "bytecode": layer.bytecode,
                    "distributions": [asdict(d) for d in layer.distributions]} for layer in built.layers],
    }


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path} is not a layers manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("functions"), dict):
        raise ManifestError(f"{path} is not a layers manifest of format {FORMAT}")
    return data


def load(function: str, target: Target, path: Path = DEFAULT_MANIFEST) -> BuiltFunction:
    """The built function the manifest records for `target`, checked (complete, within Lambda's budget).

    Raises ManifestError, naming the build command that fixes it, when the manifest is missing, has no entry
    for the function and target, is stale, or a zip it names is gone; LayerError when the set fails a check.
    """
    specs = load_functions()
    if function not in specs:
        raise ManifestError(f"no function {function!r} in {FUNCTIONS_FILE.name}; known: {', '.join(specs)}")
    spec, fix = specs[function], build_command(function, target)
    if not path.is_file():
        raise ManifestError(f"the {function} layers have not been built ({path} does not exist); run `{fix}`")
    entries = _read(path)["functions"]
    entry = entries.get(entry_key(function, target))
    if entry is None:
        raise ManifestError(f"{path} has no {function} layers for {target.runtime} {target.arch} (it has "
                            f"{', '.join(sorted(entries)) or 'none'}); run `{fix}`")
    try:  # only the entry's reading: a bug of ours elsewhere must not pass for a malformed manifest
        recorded, built = entry["spec_digest"], _function(entry, spec, path.parent)
    except (KeyError, TypeError, ValueError) as exc:  # edited by hand, or written by another builder version
        raise ManifestError(f"the {function} entry of {path} is malformed ({type(exc).__name__}: {exc}); "
                            f"run `{fix}`") from None
    if recorded != spec_digest(spec):
        raise ManifestError(f"the {function} layers in {path} are stale: {FUNCTIONS_FILE.name}, a requirements "
                            f"file, the function's code or the builder changed since they were built; run `{fix}`")
    for archive in [built.code, *(layer.archive for layer in built.layers)]:
        if not archive.path.is_file():
            raise ManifestError(f"{archive.path}, named by {path}, is missing; run `{fix}`")
        # Its sha256 is the deploy's source_code_hash and S3 key: a zip changed since the build must not pass for
        # the one recorded (hashing the serving zips takes about a tenth of a second).
        if sha256_file(archive.path) != archive.sha256:
            raise ManifestError(f"{archive.path} is not the zip {path} records (its sha256 differs); run `{fix}`")
    check_complete(built)
    check_budget(built)
    return built


def _function(entry: dict[str, Any], spec: FunctionSpec, base: Path) -> BuiltFunction:
    def archive(a: dict[str, Any]) -> Archive:
        return Archive(base / a["path"], a["sha256"], a["zipped_bytes"], a["unzipped_bytes"])

    layers = tuple(BuiltLayer(layer["name"], archive(layer),
                              tuple(Distribution(d["name"], d["version"], tuple(d["requires"]), d["bytes"])
                                    for d in layer["distributions"]), layer["bytecode"], cached=True)
                   for layer in entry["layers"])
    target = entry["target"]
    return BuiltFunction(spec, Target(target["python_version"], target["arch"], tuple(target["glibc"])),
                         archive(entry["code"]), layers)
