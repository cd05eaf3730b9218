"""Lambda handler for the tabular model, behind an API Gateway HTTP API (payload format 2.0).

    GET  /health    {"status": "ok", "model": ..., "version": ...}
    GET  /schema    the input schema of one instance, as JSON Schema
    POST /predict   {"instances": [{...}, ...]}  ->  {"predictions": [...]}   (TF Serving / KServe v1)

The model comes from the `tabular_model` package, found through `sys.path` alone: on Lambda the model layer
puts it in /opt/python; anywhere else, put the unpacked layers on the path. It is loaded once per container,
on the first request that needs it. Every bad request gets a 400 or 413 naming the problem.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from apigw import HttpError, Request, Route, dispatch, echo, instances_of, is_number

# Batches larger than this are refused with 413; the function's memory and timeout are sized for it.
MAX_INSTANCES = int(os.environ.get("ERNIE_MAX_INSTANCES", "1000"))
# Enough problems to fix a request in one round trip, not so many the message drowns.
MAX_REPORTED_PROBLEMS = 10


@functools.cache
def _schema() -> dict[str, Any]:
    import tabular_model

    return tabular_model.load_schema()


@functools.cache
def _pipeline() -> Any:
    import tabular_model

    return tabular_model.load_pipeline()


def json_schema(features: list[dict[str, Any]]) -> dict[str, Any]:
    """JSON Schema of one instance: a number per numeric column, an enum per categorical one."""
    properties = {
        f["name"]: {"enum": f["categories"]} if f["type"] == "category" else {"type": "number"} for f in features
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": [f["name"] for f in features],
        "additionalProperties": False,
    }


def instance_problems(index: int, instance: Any, features: list[dict[str, Any]]) -> list[str]:
    """What is wrong with one instance, each naming `instances[i].field`; empty when it is valid."""
    where = f"instances[{index}]"
    if not isinstance(instance, dict):
        return [f"{where} must be an object of feature values, got {type(instance).__name__}"]
    names = [f["name"] for f in features]
    problems = [f"{where} is missing field {name!r}" for name in names if name not in instance]
    # Values and unknown names are the caller's: quoted through `echo`, cut short, never repeated in full.
    problems += [f"{where} has unknown field {echo(name)}; expected only {names}"
                 for name in instance if name not in names]
    for feature in features:
        name = feature["name"]
        if name not in instance:
            continue
        value = instance[name]
        if feature["type"] == "category":
            # Exact type too: true is not the category 1, and "1" is not either.
            if not any(type(value) is type(c) and value == c for c in feature["categories"]):
                problems.append(f"{where}.{name} is {echo(value)}, not one of the categories {feature['categories']}")
        elif not is_number(value):
            problems.append(f"{where}.{name} must be a finite number, got {echo(value)}")
    return problems


def parse_instances(payload: Any, features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The validated instances of a predict request; HttpError 400/413 naming every problem found."""
    instances = instances_of(payload, example="[...]", each="a list of objects, one per prediction",
                             noun="instance", limit=MAX_INSTANCES)
    problems = [p for i, instance in enumerate(instances) for p in instance_problems(i, instance, features)]
    if problems:
        more = len(problems) - MAX_REPORTED_PROBLEMS
        shown = "; ".join(problems[:MAX_REPORTED_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
        raise HttpError(400, f"invalid instances: {shown}")
    return instances


def health(_: Request) -> tuple[int, Any]:
    schema = _schema()
    return 200, {"status": "ok", "model": schema["name"], "version": schema["version"]}


def schema(_: Request) -> tuple[int, Any]:
    return 200, json_schema(_schema()["features"])


def predict(request: Request) -> tuple[int, Any]:
    import pandas as pd

    features = _schema()["features"]
    instances = parse_instances(request.json(), features)
    frame = pd.DataFrame.from_records(instances, columns=[f["name"] for f in features])
    return 200, {"predictions": [float(y) for y in _pipeline().predict(frame)]}


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/health"): health,
    ("GET", "/schema"): schema,
    ("POST", "/predict"): predict,
}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point (`handler.handler`)."""
    return dispatch(ROUTES, event)
