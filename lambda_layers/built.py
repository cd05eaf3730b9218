"""What a build produced: the layers' zips with the distributions they hold, and the function's code zip."""

from __future__ import annotations

from dataclasses import dataclass

from lambda_layers.archive import Archive
from lambda_layers.spec import FunctionSpec
from lambda_layers.target import Target


@dataclass(frozen=True)
class Distribution:
    """One installed distribution as its dist-info describes it."""

    name: str
    version: str
    requires: tuple[str, ...]
    bytes: int
    """Unzipped size of everything it installed, bytecode included."""


@dataclass(frozen=True)
class BuiltLayer:
    name: str
    archive: Archive
    distributions: tuple[Distribution, ...]
    bytecode: str | None
    """Python version the .pyc files were compiled by, None when the layer has none."""
    cached: bool = False


@dataclass(frozen=True)
class BuiltFunction:
    spec: FunctionSpec
    target: Target
    code: Archive
    layers: tuple[BuiltLayer, ...]

    @property
    def unzipped_bytes(self) -> int:
        return self.code.unzipped_bytes + sum(layer.archive.unzipped_bytes for layer in self.layers)

    def largest_packages(self, count: int = 5) -> list[tuple[str, Distribution]]:
        """(layer name, distribution), largest first."""
        held = [(layer.name, dist) for layer in self.layers for dist in layer.distributions]
        return sorted(held, key=lambda item: -item[1].bytes)[:count]


def mb(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"
