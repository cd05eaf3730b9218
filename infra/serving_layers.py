"""The serving functions' built layers, read from the manifest of the last `ernie layers build`: the program
builds nothing, it points each layer's FileArchive at a zip built before it (as pulumi/examples do).

Only lambda_layers' reading side is imported here (manifest, spec, target, archive, built, checks, errors),
never its pip or zip steps.
"""

from __future__ import annotations

import hashlib
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from infra.config import ConfigError, ServingConfig
from lambda_layers import manifest
from lambda_layers.archive import Archive
from lambda_layers.built import BuiltFunction, BuiltLayer
from lambda_layers.errors import LayerError, ManifestError
from lambda_layers.spec import load_functions
from lambda_layers.target import Target

MANIFEST: Path = manifest.DEFAULT_MANIFEST
"""The manifest the program reads: where `ernie layers build` writes it by default."""

UNSEEN: ContextVar[list[str] | None] = ContextVar("ernie_unseen_layers", default=None)
"""None: a function whose layers are not built (or stale) stops the program with a ConfigError. A list (set by
`ernie check`, which runs the program under mocks): the reason is added to it and the function is declared with
empty stand-in zips, so the check of everything else goes on and reports which layers it has not seen."""


@dataclass(frozen=True)
class ServedFunction:
    """One serving function of the stack: its component, its layer set and the config key that turns it on."""

    name: str
    function_set: str
    config_key: str
    memory_mb: int


def wanted(serving: ServingConfig) -> list[ServedFunction]:
    """The functions the stack's config asks for, tabular first."""
    functions = [ServedFunction("serving", "tabular", "serving", serving.memory_mb)]
    if serving.embed_memory_mb is not None:
        functions.append(ServedFunction("embedding", "embed", "servingEmbed", serving.embed_memory_mb))
    return functions


def read(function: ServedFunction, serving: ServingConfig) -> BuiltFunction:
    """The function's built layers for the configured runtime; ConfigError naming the key and the fix."""
    where = f"ernie:{function.config_key}"
    try:
        target = Target.lambda_runtime(serving.python_version, serving.architecture)
        return manifest.load(function.function_set, target, MANIFEST)
    except ManifestError as exc:
        unseen = UNSEEN.get()
        if unseen is None:
            raise ConfigError(f"{where}: {exc}") from None
        unseen.append(f"{where}: {exc}")
        return _stand_in(function.function_set, target)
    except LayerError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _stand_in(function_set: str, target: Target) -> BuiltFunction:
    """Empty zips where the unseen layers would be (nothing reads them under mocks)."""
    spec = load_functions()[function_set]
    empty = hashlib.sha256(b"").hexdigest()
    where = MANIFEST.parent / "(not built)" / function_set
    return BuiltFunction(spec, target, Archive(where / "function.zip", empty, 0, 0),
                         tuple(BuiltLayer(layer.name, Archive(where / f"{layer.name}.zip", empty, 0, 0), (), None)
                               for layer in spec.layers))
