"""Documents read against a pydantic model, with one error formatter: `field: problem`, naming what is accepted.

Every document ernie reads from a user or a host (the inventory, a workload spec) is declared as a `Schema`
and read by `read()`. Pydantic reports every problem; the first is turned into one line that names the
field as a user writes it (`hosts[0].name`, `setup.requirements`), the value, and what would be accepted:
the field's `description` for a missing one, the known keys (and the closest) for an unknown one.
A validator that needs its own words raises `ValueError("...")`, or `Problem(field, "...")` to name
another field of its model. A field that says what it accepts (`json_schema_extra={"accepted": "..."}`) answers
every other problem with `value; accepted: ...` (`show()` writes the value), under its alias where it has one.
"""

from __future__ import annotations

import difflib
import json
import typing
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound="Schema")

# What a user wrote wrong, by pydantic's error type: the kind of value the field takes.
_KINDS = {
    "string_type": "a string", "int_type": "a whole number", "float_type": "a number", "bool_type": "true or false",
    "list_type": "a list", "tuple_type": "a list", "dict_type": "a table (an object in JSON)",
    "model_type": "a table (an object in JSON)",
    "int_from_float": "a whole number",
}


class Schema(BaseModel):
    """A document's shape: unknown keys refused, no coercion (`"4"` is not 4, `true` is not 1), immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Problem(ValueError):
    """Raised by a model validator to name one of the model's fields (dotted, relative to the model)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field, self.problem = field, problem


class SchemaError(Exception):
    """The first problem of a document: `field` as a user writes it, and what is wrong with it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def read(model: type[M], data: Any, **context: Any) -> M:
    """`data` (parsed JSON or TOML) as `model`; raises SchemaError. Validated as JSON is: a list is a tuple."""
    if (found := _not_json(data)) is not None:
        loc, value = found
        raise SchemaError(_path(loc), f"{value!r} (a {type(value).__name__}) is not accepted; write it as a "
                                      "quoted string")
    try:
        return model.model_validate_json(json.dumps(data), context=context or None)
    except ValidationError as exc:
        raise explain(exc, model) from None


def _not_json(data: Any, loc: tuple[Any, ...] = ()) -> tuple[list[Any], Any] | None:
    """Where the first value JSON has not (TOML's dates and times) is, and the value: refused by its field."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, (list, tuple)):
        items = enumerate(data)
    else:
        return None if data is None or isinstance(data, (str, int, float, bool)) else (list(loc), data)
    return next((found for key, value in items if (found := _not_json(value, (*loc, key))) is not None), None)


def explain(exc: ValidationError, model: type[BaseModel]) -> SchemaError:
    """The first error of `exc` in a user's words."""
    err = exc.errors(include_url=False)[0]
    loc, kind, value = _aliased(model, list(err["loc"])), err["type"], err.get("input")
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, Problem):
        return SchemaError(_path([*loc, *cause.field.split(".")]), cause.problem)
    if kind == "value_error":
        return SchemaError(_path(loc), str(cause))
    field = _field(model, loc)
    accepted = field.json_schema_extra.get("accepted") if field and isinstance(field.json_schema_extra, dict) else None
    if accepted:
        return SchemaError(_path(loc), f"{show(None if kind == 'missing' else value)}; accepted: {accepted}")
    if kind == "missing":
        what = field.description if field is not None and field.description else "see the documentation"
        return SchemaError(_path(loc), f"required: {what}")
    if kind == "extra_forbidden":
        known = list(_owner(model, loc[:-1]).model_fields)
        near = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        return SchemaError(_path(loc), f"unknown key; {hint}known: {', '.join(known)}")
    if kind == "literal_error":
        choices = [c for c in typing.get_args(field.annotation) if c is not None] if field else []
        return SchemaError(_path(loc), f"{value!r} is not one of {', '.join(map(str, choices))}")
    if kind in ("greater_than_equal", "greater_than"):
        bound = err["ctx"].get("ge", err["ctx"].get("gt"))
        sign = ">=" if kind == "greater_than_equal" else ">"
        return SchemaError(_path(loc), f"expected {_kind_of(model, loc)} {sign} {bound}, got {value!r}")
    if kind == "too_short":
        what = field.description if field is not None and field.description else "a non-empty list"
        return SchemaError(_path(loc), f"expected {what}, got {show(value)}")
    if kind in _KINDS:
        return SchemaError(_path(loc), f"expected {_KINDS[kind]}, got {value!r}")
    return SchemaError(_path(loc), err["msg"])


def show(value: Any) -> str:
    """A value as an error names it: a string quoted, anything else as JSON, None as missing."""
    return "missing" if value is None else repr(value) if isinstance(value, str) else json.dumps(value, default=str)


def _path(loc: list[Any]) -> str:
    """('hosts', 0, 'name') -> hosts[0].name; a part written '[]' (a Problem's 'hosts[].worker') joins as is."""
    out = ""
    for part in loc:
        part = f"[{part}]" if isinstance(part, int) else str(part)
        out += part if not out or part.startswith("[") else f".{part}"
    return out or "document"  # the whole document is wrong (not a table, say)


def _aliased(model: type[BaseModel], loc: list[Any]) -> list[Any]:
    """`loc` with each field as the document spells it: pydantic names a field by its name when it used the default."""
    return [field.alias if (field := _field(model, loc[:i + 1])) is not None and field.alias else part
            for i, part in enumerate(loc)]


def _kind_of(model: type[BaseModel], loc: list[Any]) -> str:
    field = _field(model, loc)
    return "a whole number" if field is not None and int in _types(field.annotation) else "a number"


def _types(annotation: Any) -> list[Any]:
    args = typing.get_args(annotation)
    return [t for a in args for t in _types(a)] if args else [annotation]


def _owner(model: type[BaseModel], loc: list[Any]) -> type[BaseModel]:
    """The model that holds the field at `loc` (its parent's path)."""
    owner = model
    for part in loc:
        field = _named(owner, part)
        if field is None:
            continue
        sub = [t for t in _types(field.annotation)
               if isinstance(t, type) and issubclass(t, BaseModel)]
        if sub:
            owner = sub[0]
    return owner


def _field(model: type[BaseModel], loc: list[Any]):
    return _named(_owner(model, loc[:-1]), loc[-1]) if loc else None


def _named(model: type[BaseModel], part: Any):
    """The field of `model` a location names: by its name, or by its alias (as the document spells it)."""
    if not isinstance(part, str):
        return None
    fields = model.model_fields
    return fields.get(part) or next((f for f in fields.values() if f.alias == part), None)
