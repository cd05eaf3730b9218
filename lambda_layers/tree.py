"""What is done to a layer's installed tree (its python/ directory), each step a function of the directory:
remove distributions, slim, drop files, strip shared objects, compile bytecode, and size what is left."""

from __future__ import annotations

import os
import shutil
import subprocess
from importlib.metadata import PathDistribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from lambda_layers.archive import files
from lambda_layers.built import Distribution
from lambda_layers.errors import LayerError
from lambda_layers.spec import FUNCTIONS_FILE, LayerSpec
from lambda_layers.target import ELF_MACHINE, Target

# Lambda unpacks layers into /opt; compiled bytecode records paths as they will be there.
LAMBDA_PYTHON_DIR = "/opt/python"
# Slimming: what no import at run time reads.
SLIM_DIR_NAMES = frozenset({"tests", "__pycache__"})
SLIM_SUFFIXES = frozenset({".pyi", ".pyx", ".pxd", ".pxi", ".c", ".cc", ".cpp", ".h", ".hpp", ".a"})


def _dist_infos(root: Path) -> list[tuple[Path, PathDistribution]]:
    """Each `*.dist-info` under root with its distribution as importlib.metadata reads it (METADATA as email
    headers, RECORD as CSV). Only on the build host: the layer's code in Lambda never reads them."""
    return [(p, PathDistribution(p)) for p in sorted(root.glob("*.dist-info")) if (p / "METADATA").is_file()]


def _name(dist: PathDistribution) -> str:
    """PEP 503 name: the same for `scikit_learn`, `Scikit-Learn` and `scikit-learn`."""
    return canonicalize_name(dist.metadata["Name"])


def _record_paths(dist: PathDistribution) -> list[str]:
    return [path.as_posix() for path in dist.files or ()]


def remove_distributions(root: Path, names: set[str]) -> list[str]:
    """Delete the distributions named (every file their RECORD lists); returns the ones removed."""
    removed = []
    for dist_info, dist in _dist_infos(root):
        name = _name(dist)
        if name not in names:
            continue
        for relative in _record_paths(dist):
            path = (root / relative).resolve()
            if path.is_relative_to(root.resolve()) and path.is_file():
                path.unlink()
        shutil.rmtree(dist_info, ignore_errors=True)
        removed.append(name)
    _prune_empty_dirs(root)
    return removed


def unneeded(root: Path, layer: LayerSpec, target: Target) -> set[str]:
    """The layer's omitted distributions and every one only they need: all not reachable from its requirements."""
    if not layer.omit:
        return set()
    env = {**target.marker_environment(), "extra": ""}
    requires = {_name(d): d.requires or () for _, d in _dist_infos(root)}
    needed: set[str] = set()
    pending = [canonicalize_name(Requirement(line).name) for line in layer.requirements]
    while pending:
        name = pending.pop()
        if name in needed or name in layer.omit:
            continue
        needed.add(name)
        for line in requires.get(name, ()):
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(env):
                pending.append(canonicalize_name(requirement.name))
    return set(requires) - needed


def drop_files(root: Path, layer: LayerSpec) -> None:
    """Delete the files the layer's `drop` patterns name; a pattern that matches nothing is an error."""
    for pattern in layer.drop:
        matches = [p for p in root.glob(pattern) if p.is_file()]
        if not matches:
            raise LayerError(f"layer {layer.name!r}: drop pattern {pattern!r} matches no file; update it in "
                             f"{FUNCTIONS_FILE.name}")
        for path in matches:
            path.unlink()


def slim(root: Path) -> int:
    """Delete test suites, stale bytecode, stubs, C sources and static libraries; keep every dist-info.

    Returns the bytes removed.
    """
    removed = 0
    for path in sorted(root.rglob("*"), reverse=True):  # children before their directories
        if any(part.endswith(".dist-info") for part in path.relative_to(root).parts):
            continue
        if path.is_dir() and path.name in SLIM_DIR_NAMES:
            removed += sum(p.stat().st_size for p in files(path))
            shutil.rmtree(path)
        elif path.is_file() and (path.suffix in SLIM_SUFFIXES or path.suffix == ".pyc"):
            removed += path.stat().st_size
            path.unlink()
    _prune_empty_dirs(root)
    return removed


def _is_elf(path: Path, machine: int) -> bool:
    with path.open("rb") as f:
        header = f.read(20)
    return header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == machine


def strip_shared_objects(root: Path, target: Target, strip: str) -> int:
    """Strip symbols not needed for relocation from every shared object for the target; returns bytes saved."""
    before = 0
    # Not the libraries auditwheel vendored into `<pkg>.libs/`: patchelf rewrote their program headers,
    # and a stripped copy fails to load ("ELF load command address/offset not page-aligned").
    objects = [p for p in files(root) if ".so" in p.name and not p.parent.name.endswith(".libs")
               and _is_elf(p, ELF_MACHINE[target.arch])]
    for path in objects:
        before += path.stat().st_size
        # strip writes a temporary and renames it: a file it cannot handle is left as it was.
        subprocess.run([strip, "--strip-unneeded", str(path)], capture_output=True)
    return before - sum(p.stat().st_size for p in objects)


def compile_bytecode(root: Path, python: str) -> None:
    """Unchecked-hash .pyc for every module: no mtime to go stale on a read-only /opt, no source hashing."""
    command = [python, "-I", "-m", "compileall", "-q", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
               "-s", str(root), "-p", LAMBDA_PYTHON_DIR, str(root)]
    # A fixed hash seed keeps the marshalled constants (frozensets) in one order: reproducible .pyc.
    # Exit status 1 only means some file did not compile (a template, a py2 leftover): it imports as before.
    subprocess.run(command, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"})


def read_distributions(root: Path) -> tuple[Distribution, ...]:
    """The distributions under root with their size on disk (every file under their top-level names)."""
    owners: dict[str, str] = {}
    dists = []
    for dist_info, dist in _dist_infos(root):
        name = _name(dist)
        dists.append((name, dist.version, tuple(dist.requires or ())))
        for relative in [*_record_paths(dist), f"{dist_info.name}/METADATA"]:
            owners.setdefault(relative.split("/", 1)[0], name)
    sizes: dict[str, int] = {}
    for path in files(root):
        parts = path.relative_to(root).parts
        # A top-level module's bytecode (six.py -> __pycache__/six.cpython-312.pyc) belongs with it.
        top = f"{parts[1].split('.')[0]}.py" if parts[0] == "__pycache__" and len(parts) == 2 else parts[0]
        owner = owners.get(top, "(no distribution)")
        sizes[owner] = sizes.get(owner, 0) + path.stat().st_size
    result = [Distribution(name, version, requires, sizes.get(name, 0)) for name, version, requires in dists]
    if "(no distribution)" in sizes:
        result.append(Distribution("(no distribution)", "", (), sizes["(no distribution)"]))
    return tuple(result)


def _prune_empty_dirs(root: Path) -> None:
    for path in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        if not any(path.iterdir()):
            path.rmdir()
