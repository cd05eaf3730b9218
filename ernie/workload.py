"""Workloads as directories: `workload.toml` (or `NAME.workload.toml`) read, validated and resolved.

The format is docs/workloads.md. A workload is found by its `name` among the built-in ones under
workloads/, or given as a path (a directory holding `workload.toml`, or a `.workload.toml` file).
`resolve()` applies `--set key=value` overrides and renders the command with shell-quoted values.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator

from catalog.schema import Problem, Schema, SchemaError, read
from ernie.errors import ErnieError
from ernie.names import WORKLOAD_NAME

BUILTIN_ROOT = Path(__file__).resolve().parents[1] / "workloads"
SPEC_NAME = "workload.toml"
SPEC_SUFFIX = ".workload.toml"
DEFAULT_COLLECT = ("**/*",)
# `{name}` is a placeholder; `${NAME}` is the shell's and is left alone.
_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")

Param = str | int | float | bool


_REQUIRED = "a non-empty string (see docs/workloads.md)"


def _text(what: str):
    def check(value: str) -> str:
        if not value.strip():
            raise ValueError(f"required: {what}")
        return value
    return AfterValidator(check)


def _plain_name(name: str) -> str:
    if not WORKLOAD_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain name (letters, digits, . _ -; at most 64)")
    return name


def _param(value: Any) -> Param:
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError(f"expected a string, number or boolean, got {type(value).__name__}")
    return value


def _total(value: Any) -> str | None:
    """A number, or a template of [params] (`{max_steps}`), kept as text until resolve()."""
    if value is not None and (not isinstance(value, (str, int, float)) or isinstance(value, bool)):
        raise ValueError(f"expected a number or a template like '{{max_steps}}', got {value!r}")
    return None if value is None else str(value)


def _step_regex(regex: str | None) -> str | None:
    if regex is not None:
        try:
            groups = re.compile(regex).groups
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
        if groups < 1:
            raise ValueError("needs a group that captures the step, e.g. '\\| num_updates (\\d+)'")
    return regex


@dataclass(frozen=True)
class Workload:
    """A workload as its spec file declares it."""

    name: str
    command: str  # the template, with {placeholders}
    spec_file: Path
    description: str = ""
    params: dict[str, Param] = field(default_factory=dict)
    requirements: str | None = None  # relative to the bundle directory
    collect_paths: tuple[str, ...] = DEFAULT_COLLECT
    progress_total: str | None = None  # a template, e.g. "{max_steps}"
    progress_regex: str | None = None

    @property
    def directory(self) -> Path:
        """The bundle: the whole directory holding the spec file."""
        return self.spec_file.parent


@dataclass(frozen=True)
class ResolvedWorkload:
    """A workload with its parameters fixed: the command each worker runs."""

    workload: Workload
    params: dict[str, Param]
    command: str
    progress_total: int | None


class _Setup(Schema):
    requirements: str | None = None  # relative to the bundle directory


class _Collect(Schema):
    paths: tuple[Annotated[str, _text("a glob under $ERNIE_OUTPUT_DIR")], ...] = Field(
        DEFAULT_COLLECT, min_length=1, description="a non-empty list of globs under $ERNIE_OUTPUT_DIR")


class _Progress(Schema):
    total: Annotated[Any, AfterValidator(_total)] = None
    regex: Annotated[str | None, AfterValidator(_step_regex)] = None


class _Spec(Schema):
    """A spec file's shape (docs/workloads.md)."""

    name: Annotated[str, _text(_REQUIRED), AfterValidator(_plain_name)] = Field(description=_REQUIRED)
    command: Annotated[str, _text(_REQUIRED)] = Field(description=_REQUIRED)
    description: str = ""
    params: dict[str, Annotated[Any, AfterValidator(_param)]] = Field(default_factory=dict)
    setup: _Setup = _Setup()
    collect: _Collect = _Collect()
    progress: _Progress = _Progress()

    @model_validator(mode="after")
    def _placeholders_have_defaults(self) -> _Spec:
        for field, template in (("command", self.command), ("progress.total", self.progress.total)):
            for placeholder in _PLACEHOLDER.findall(template or ""):
                if placeholder not in self.params:
                    raise Problem(field, f"{{{placeholder}}} has no default in [params]")
        unsafe = unquoted_placeholder_problem(self.command)
        if unsafe:
            raise Problem("command", unsafe)
        return self


def load_workload(spec_file: Path) -> Workload:
    """Read and validate one spec file; errors name the file and the field."""
    try:
        data = tomllib.loads(spec_file.read_text())
    except OSError as exc:
        raise ErnieError(f"{spec_file}: cannot read it ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ErnieError(f"{spec_file}: not valid TOML ({exc})") from exc
    try:
        spec = read(_Spec, data)
    except SchemaError as exc:
        raise ErnieError(f"{spec_file}: {exc}") from None
    requirements = spec.setup.requirements
    if requirements is not None and not (spec_file.parent / requirements).is_file():
        raise ErnieError(f"{spec_file}: setup.requirements: {requirements} is not a file in {spec_file.parent}")
    return Workload(
        name=spec.name, command=spec.command, spec_file=spec_file.resolve(), description=spec.description,
        params=dict(spec.params), requirements=requirements, collect_paths=spec.collect.paths,
        progress_total=spec.progress.total, progress_regex=spec.progress.regex,
    )


def unquoted_placeholder_problem(command: str) -> str | None:
    """Why a placeholder of `command` would not take its value as one shell word; None when all do.

    A value is substituted shell-quoted ('...'), which is one word only outside any quoting: inside
    `"..."` the quotes become literal and `$(...)` in the value runs; inside `'...'` the value ends the
    quote. A backslash before it, a comment (a newline in the value ends it) or a here-document body do
    the same. Conservative: a `<<` sends every later line to the "here-document" check.
    """
    at = {m.start(): m.group(0) for m in _PLACEHOLDER.finditer(command)}
    quote, comment, heredoc, heredoc_next = "", False, False, False
    i = 0
    while i < len(command):
        where = ("inside quotes" if quote else "in a comment" if comment else
                 "in a here-document" if heredoc else None)
        if where and i in at:
            break
        c = command[i]
        if comment:
            comment = c != "\n"
            heredoc = heredoc or (heredoc_next and c == "\n")
        elif quote == "'":
            quote = "" if c == "'" else quote
        elif c == "\\":  # escapes the next character, in `"..."` and `$'...'` too
            if i + 1 in at:
                where = "inside quotes" if quote else "after a backslash"
                i += 1
                break
            i += 1
        elif quote:  # '"' or "$'"
            quote = "" if c == quote[-1] else quote
        elif c in "'\"":
            quote = c
        elif c == "$" and command.startswith("'", i + 1):
            quote, i = "$'", i + 1
        elif c == "#" and (i == 0 or command[i - 1] in " \t\n;&|()<>"):
            comment = True
        elif command.startswith("<<", i) and not command.startswith("<<<", i):
            heredoc_next, i = True, i + 1
        elif c == "\n" and heredoc_next:
            heredoc = True
        i += 1
    else:
        return None
    return (f"{at[i]} sits {where}, where a --set value could run as shell code; put the placeholder on its own, "
            f"outside any quotes (values are shell-quoted for you: `--msg {{msg}}`, `\"$ERNIE_OUTPUT_DIR\"/{{name}}`)")


def builtin_specs(root: Path = BUILTIN_ROOT) -> list[Path]:
    """Every spec file under the built-in workloads directory."""
    return sorted([*root.rglob(SPEC_NAME), *root.rglob(f"*{SPEC_SUFFIX}")])


def find_workload(spec: str, root: Path = BUILTIN_ROOT) -> Workload:
    """A built-in workload by name, or the user's own given as a directory or a spec file."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / SPEC_NAME).is_file():
            raise ErnieError(f"workload {spec}: {path} has no {SPEC_NAME} (docs/workloads.md describes one)")
        return load_workload(path / SPEC_NAME)
    if path.is_file():
        if not path.name.endswith((SPEC_NAME, SPEC_SUFFIX)):
            raise ErnieError(f"workload {spec}: expected a directory or a {SPEC_NAME} / NAME{SPEC_SUFFIX} file")
        return load_workload(path)
    names, broken = [], []
    for spec_file in builtin_specs(root):
        try:
            workload = load_workload(spec_file)
        except ErnieError as exc:
            broken.append(str(exc))
            continue
        if workload.name == spec:
            return workload
        names.append(workload.name)
    hint = f"built-in workloads: {', '.join(names) or 'none'}"
    if broken:
        hint += f"; unreadable: {'; '.join(broken)}"
    raise ErnieError(f"unknown workload {spec!r}: not a directory, a spec file, or a built-in name ({hint})")


def resolve(workload: Workload, overrides: list[str]) -> ResolvedWorkload:
    """Apply `key=value` overrides (typed like the default) and render the command."""
    params = dict(workload.params)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ErnieError(f"--set {item!r}: expected key=value")
        if key not in params:
            known = ", ".join(sorted(params)) or "none"
            raise ErnieError(f"--set {key}: {workload.name} has no parameter {key!r} (its parameters: {known})")
        params[key] = _coerce(key, raw, params[key])
    command = _PLACEHOLDER.sub(lambda m: shlex.quote(_text(params[m.group(1)])), workload.command)
    total = None
    if workload.progress_total is not None:
        rendered = _PLACEHOLDER.sub(lambda m: _text(params[m.group(1)]), workload.progress_total)
        try:
            total = int(float(rendered))
        except ValueError as exc:
            raise ErnieError(f"{workload.spec_file}: progress.total: {rendered!r} is not a number") from exc
    return ResolvedWorkload(workload=workload, params=params, command=command, progress_total=total)


def _text(value: Param) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _coerce(key: str, raw: str, default: Param) -> Param:
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError as exc:
        kind = type(default).__name__
        raise ErnieError(f"--set {key}={raw}: expected a {kind} like the default {default!r}") from exc
    return raw
