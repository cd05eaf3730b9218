"""The comparison plan file (`compare.toml`, docs/compare.md): read and validated whole before anything exists.

A plan names a base stack per cloud, the like-for-like workload settings every cell shares, and its cells:
each a set of stack overrides on one cloud's base stack (or hosts made elsewhere, an inventory file) and the
workload it runs. A cell that changes a shared setting is refused unless it lists that setting in `differs`.
Every problem is one line naming the plan file, the cell and the key, and what would be accepted.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ernie.errors import ErnieError
from ernie.workload import Param, ResolvedWorkload, find_workload, resolve

PROJECT_DIR = Path(__file__).resolve().parents[2]
"""The Pulumi project: the base stacks named by name are its Pulumi.<name>.yaml files."""

CLOUDS = ("gcp", "aws")
# The keys a cell may change: the hardware and where it runs. Access, keys and serving stay the base stack's.
STACK_OVERRIDES = frozenset({
    "ernie:tpuType", "ernie:runtimeVersion", "gcp:zone",
    "ernie:instanceType", "ernie:instanceCount", "ernie:framework", "ernie:dlcTag", "aws:region",
    "ernie:availabilityZone", "ernie:spot", "ernie:ttlMinutes", "ernie:maxUsdPerHour",
})
PLAN_KEYS = frozenset({"name", "mfu", "base", "workload", "cells"})
WORKLOAD_KEYS = frozenset({"name", "params", "flops_per_sample"})
CELL_KEYS = frozenset({"name", "cloud", "stack", "inventory", "workload", "params", "differs", "peak_tflops",
                       "flops_per_sample"})
# A cell's stack is "<plan>-<cell>": both plain, so the stack name is one Pulumi accepts and one directory here.
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
DEFAULT_MFU = 0.35
"""MFU assumed for an accelerator the results index has no run of (REFERENCE.md: DLE BERT is 37-44% on A100)."""


@dataclass(frozen=True)
class Cell:
    """One cell of the matrix: where it runs and what."""

    name: str
    cloud: str | None
    """gcp or aws for a stack cell; None for a cell on an inventory file's hosts."""
    base_file: Path | None
    """The base stack's config file (Pulumi.<stack>.yaml shape), for a stack cell."""
    overrides: dict[str, Param]
    inventory: Path | None
    """Hosts made elsewhere (docs/inventory.md's shape): no stack is created or destroyed."""
    workload: str
    params: dict[str, Param]
    """The shared settings with the cell's own on top: what the workload runs with."""
    differs: tuple[str, ...]
    """Shared settings this cell changes on purpose (shown at the top of the report)."""
    peak_tflops: float | None
    """Peak dense TFLOP/s per chip, stated where ernie's table has none (a CPU, an A10G)."""
    flops_per_sample: float | None
    """Training FLOPs per sample, stated for a workload whose FLOPs ernie cannot count."""
    plan_dir: Path = field(repr=False, default=Path("."))

    def stack(self, plan: str) -> str | None:
        """The cell's own Pulumi stack: `<plan>-<cell>`; None for an inventory cell."""
        return None if self.inventory is not None else f"{plan}-{self.name}"

    def sets(self) -> list[str]:
        """The workload parameters as `--set key=value` items."""
        return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in self.params.items()]

    def workload_spec(self) -> str:
        """The workload as `ernie run` takes it: a built-in name, or a path resolved against the plan's directory."""
        path = self.plan_dir / self.workload
        return str(path) if ("/" in self.workload or self.workload.endswith(".toml")) and path.exists() \
            else self.workload

    def resolved(self) -> ResolvedWorkload:
        """The workload with the cell's parameters; ErnieError naming the cell for an unknown one."""
        try:
            return resolve(find_workload(self.workload_spec()), self.sets())
        except ErnieError as exc:
            raise ErnieError(f"cell {self.name}: {exc}") from None

    def stack_config(self) -> dict[str, Any]:
        """The cell's stack file: the base stack's `config:` with the overrides on top (values as YAML)."""
        assert self.base_file is not None
        document = yaml.safe_load(self.base_file.read_text()) or {}
        return {"config": {**document["config"], **self.overrides}}

    def write_stack_file(self, path: Path, settings_from: Path | None = None) -> Path:
        """Write the cell's stack file and return it: the base stack's `config:` with the overrides, and from
        `settings_from` (the Pulumi.<stack>.yaml that `pulumi stack init` may write) the stack's own settings,
        such as its secrets salt; never the base stack's, which belong to another stack."""
        document: dict[str, Any] = {}
        if settings_from is not None and settings_from.is_file():
            own = yaml.safe_load(settings_from.read_text()) or {}
            document.update({k: v for k, v in own.items() if k != "config"} if isinstance(own, dict) else {})
        document.update(self.stack_config())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# ernie compare: cell {self.name} ({self.base_file} with its overrides)\n"
                        + yaml.safe_dump(document, sort_keys=False))
        return path

    def fingerprint(self) -> str:
        """Changes when anything the cell runs with changes: `--resume` reruns such a cell."""
        what = {"stack": self.stack_config() if self.base_file else None,
                "inventory": str(self.inventory) if self.inventory else None,
                "workload": self.workload, "params": self.params}
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ComparePlan:
    """A validated plan."""

    name: str
    path: Path
    mfu: float
    """The stated MFU for accelerators the results index has not seen."""
    shared: dict[str, Param]
    """The like-for-like workload settings every cell runs with unless it declares otherwise."""
    workload: str
    cells: tuple[Cell, ...]


def load_plan(path: Path) -> ComparePlan:
    """Read and validate a plan file; ErnieError with one line naming the key and the fix."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ErnieError(f"{path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ErnieError(f"{path}: not valid TOML ({exc})") from None

    def fail(key: str, problem: str) -> ErnieError:
        return ErnieError(f"{path}: {key}: {problem}")

    _known(data, PLAN_KEYS, "", fail)
    name = data.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise fail("name", f"{name!r}: required, lowercase letters, digits and - (at most 40); it names the "
                           "cells' stacks <name>-<cell>")
    mfu = data.get("mfu", DEFAULT_MFU)
    if not _number(mfu) or not 0 < mfu <= 1:
        raise fail("mfu", f"{mfu!r}: the stated model-FLOPs utilisation, a number above 0 and at most 1, e.g. 0.35")

    bases = _table(data, "base", fail)
    base_files: dict[str, Path] = {}
    for cloud, stack in bases.items():
        if cloud not in CLOUDS:
            raise fail(f"base.{cloud}", f"not a cloud; [base] maps {' and '.join(CLOUDS)} to a stack name or file")
        base_files[cloud] = _base_file(path, cloud, stack, fail)

    workload = _table(data, "workload", fail)
    _known(workload, WORKLOAD_KEYS, "workload.", fail)
    default_workload = workload.get("name")
    if default_workload is not None and not isinstance(default_workload, str):
        raise fail("workload.name", "expected a workload: a built-in name or a path")
    shared = _params(workload.get("params", {}), "workload.params", fail)
    shared_flops = _positive(workload.get("flops_per_sample"), "workload.flops_per_sample", fail)

    raw_cells = data.get("cells")
    if not isinstance(raw_cells, list) or not raw_cells or not all(isinstance(c, dict) for c in raw_cells):
        raise fail("cells", "expected one [[cells]] table per cell (see docs/compare.md)")
    cells: list[Cell] = []
    for i, raw in enumerate(raw_cells):
        cell = _cell(raw, i, path, base_files, default_workload, shared, shared_flops, fail)
        if any(c.name == cell.name for c in cells):
            raise fail(f"cells[{i}].name", f"{cell.name!r} names two cells; each cell needs its own name")
        cells.append(cell)
    return ComparePlan(name=name, path=path, mfu=float(mfu), shared=shared, workload=default_workload or "",
                       cells=tuple(cells))


def _cell(raw: dict[str, Any], i: int, path: Path, base_files: dict[str, Path], default_workload: str | None,
          shared: dict[str, Param], shared_flops: float | None, fail) -> Cell:
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise fail(f"cells[{i}].name", f"{name!r}: required, lowercase letters, digits and - (at most 40)")
    where = f"cell {name}"
    _known(raw, CELL_KEYS, f"{where}: ", fail)
    cloud, inventory = raw.get("cloud"), raw.get("inventory")
    if (cloud is None) == (inventory is None):
        raise fail(where, "give exactly one of cloud (a stack made from that cloud's base stack) and inventory "
                          "(a file of hosts made elsewhere)")
    base_file, overrides = None, {}
    if cloud is not None:
        if cloud not in CLOUDS:
            raise fail(f"{where}: cloud", f"{cloud!r} is not one of {', '.join(CLOUDS)}")
        if cloud not in base_files:
            raise fail(f"{where}: cloud", f"{cloud} has no base stack: add `{cloud} = \"{cloud}\"` (a stack name "
                                          "or a config file) under [base]")
        base_file = base_files[cloud]
        overrides = _table(raw, "stack", fail, prefix=f"{where}: ")
        for key, value in overrides.items():
            if key not in STACK_OVERRIDES:
                raise fail(f"{where}: stack.{key}", f"not a key a cell may change; those are "
                                                     f"{', '.join(sorted(STACK_OVERRIDES))}")
            if not isinstance(value, (str, int, float, bool)):
                raise fail(f"{where}: stack.{key}", "expected a string, number or boolean")
    else:
        if "stack" in raw:
            raise fail(f"{where}: stack", "an inventory cell has no stack to override")
        if not isinstance(inventory, str) or not inventory:
            raise fail(f"{where}: inventory", "expected the path of an inventory file")
        inventory = (path.parent / inventory).resolve()
        if not inventory.is_file():
            raise fail(f"{where}: inventory", f"{inventory} is not a file")
    workload = raw.get("workload", default_workload)
    if not isinstance(workload, str) or not workload:
        raise fail(f"{where}: workload", "no workload: set [workload] name, or the cell's own workload")
    own = _params(raw.get("params", {}), f"{where}: params", fail)
    differs = raw.get("differs", [])
    if not isinstance(differs, list) or not all(isinstance(d, str) for d in differs):
        raise fail(f"{where}: differs", "expected a list of the shared settings this cell changes on purpose")
    for key in differs:
        if key not in shared:
            raise fail(f"{where}: differs", f"{key!r} is not a shared setting ([workload.params] has "
                                            f"{', '.join(sorted(shared)) or 'none'})")
    for key, value in own.items():
        if key in shared and value != shared[key] and key not in differs:
            raise fail(f"{where}: params.{key}", f"{value!r} breaks the like-for-like setting {shared[key]!r}; "
                                                 f"add differs = [\"{key}\"] to the cell if that is intended")
    return Cell(name=name, cloud=cloud, base_file=base_file, overrides=overrides,
                inventory=inventory if cloud is None else None, workload=workload, params={**shared, **own},
                differs=tuple(differs), peak_tflops=_positive(raw.get("peak_tflops"), f"{where}: peak_tflops", fail),
                flops_per_sample=_positive(raw.get("flops_per_sample"), f"{where}: flops_per_sample", fail)
                or shared_flops, plan_dir=path.parent)


def _base_file(plan_path: Path, cloud: str, stack: Any, fail) -> Path:
    """A base stack: a stack name (the project's Pulumi.<name>.yaml) or a config file beside the plan."""
    if not isinstance(stack, str) or not stack:
        raise fail(f"base.{cloud}", "expected a stack name (gcp for Pulumi.gcp.yaml) or a config file")
    looks_like_file = "/" in stack or stack.endswith((".yaml", ".yml"))
    file = (plan_path.parent / stack).resolve() if looks_like_file else PROJECT_DIR / f"Pulumi.{stack}.yaml"
    if not file.is_file():
        stacks = ", ".join(p.name[len("Pulumi."):-len(".yaml")] for p in sorted(PROJECT_DIR.glob("Pulumi.*.yaml")))
        raise fail(f"base.{cloud}", f"no base stack {stack!r} ({file} is not a file); the stacks here are {stacks}")
    try:
        document = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise fail(f"base.{cloud}", f"{file} is not valid YAML ({exc})") from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise fail(f"base.{cloud}", f"{file} has no top-level `config:` map, as Pulumi.{cloud}.yaml has")
    if config.get("ernie:cloud") != cloud:
        raise fail(f"base.{cloud}", f"{file} is a stack of ernie:cloud {config.get('ernie:cloud')!r}, not {cloud}")
    return file


def _known(table: dict[str, Any], known: frozenset[str], prefix: str, fail) -> None:
    for key in table:
        if key not in known:
            raise fail(f"{prefix}{key}", f"unknown key; the keys here are {', '.join(sorted(known))}")


def _table(data: dict[str, Any], key: str, fail, prefix: str = "") -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise fail(f"{prefix}{key}", "expected a table")
    return value


def _params(value: Any, key: str, fail) -> dict[str, Param]:
    if not isinstance(value, dict):
        raise fail(key, "expected a table of workload parameters")
    for name, v in value.items():
        if not isinstance(v, (str, int, float, bool)):
            raise fail(f"{key}.{name}", "expected a string, number or boolean")
    return dict(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive(value: Any, key: str, fail) -> float | None:
    if value is None:
        return None
    if not _number(value) or value <= 0:
        raise fail(key, f"{value!r}: expected a number above 0")
    return float(value)
