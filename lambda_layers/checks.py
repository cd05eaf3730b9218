"""The checks a built set passes before anything is deployed, on the figures a build (or its manifest) records."""

from __future__ import annotations

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from catalog.lambda_runtime import UNZIPPED_LIMIT
from lambda_layers.built import BuiltFunction, mb
from lambda_layers.errors import LayerBudgetError, LayerError


def check_complete(function: BuiltFunction) -> None:
    """Every Requires-Dist of every distribution (markers evaluated for the target) is held at a matching version."""
    env = function.target.marker_environment()
    held = {d.name: (layer.name, d.version) for layer in function.layers for d in layer.distributions}
    omitted = {name for spec in function.spec.layers for name in spec.omit}
    problems = []
    for layer in function.layers:
        for dist in layer.distributions:
            for line in dist.requires:
                requirement = Requirement(line)
                if requirement.marker is not None and not requirement.marker.evaluate({**env, "extra": ""}):
                    continue
                name = canonicalize_name(requirement.name)
                if name in omitted:
                    continue
                if name not in held:
                    problems.append(f"{dist.name} (layer {layer.name}) needs {requirement}, which no layer holds")
                elif not requirement.specifier.contains(held[name][1], prereleases=True):
                    problems.append(f"{dist.name} (layer {layer.name}) needs {requirement}, but layer "
                                    f"{held[name][0]} holds {name} {held[name][1]}")
    if problems:
        raise LayerError(
            f"the {function.spec.name} layers for {function.target.name} are incomplete: " + "; ".join(problems)
            + ". Pin the needed versions in the layer requirements (or retrain the model with the pinned ones)."
        )


def check_budget(function: BuiltFunction) -> None:
    """Refuse a function whose code and layers are over Lambda's unzipped limit, naming what weighs most."""
    total = function.unzipped_bytes
    if total <= UNZIPPED_LIMIT:
        return
    largest = ", ".join(f"{d.name} {d.version} {mb(d.bytes)} (layer {layer})"
                        for layer, d in function.largest_packages())
    raise LayerBudgetError(
        f"the {function.spec.name} function for {function.target.name} comes to {mb(total)} unzipped with its "
        f"layers, over Lambda's limit of {mb(UNZIPPED_LIMIT)} ({UNZIPPED_LIMIT:,} bytes). Largest packages: "
        f"{largest}. Drop or replace a requirement, or serve this model from a container image instead."
    )
