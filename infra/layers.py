"""Lambda layers for the serving stack, built before anything is deployed.

`load_functions()` reads the function specs from workloads/serving/layers.toml (a layer set per function,
as data); `build_function()` turns one into deterministic zips for a target runtime and architecture:

1. Each requirements layer is installed by pip for the target (`--platform`, `--python-version`,
   `--only-binary=:all:`), constrained to the versions earlier layers already hold; whatever an earlier
   layer holds is then removed (by its RECORD), so no package is in two layers.
2. Slimming deletes test suites, type stubs, C sources/headers and static libraries, and strips the
   symbols of shared objects; every `*.dist-info` stays (packages read their own metadata).
3. Bytecode: Lambda's /opt is read-only, so without `.pyc` files every cold start compiles every module it
   imports, and timestamp-based `.pyc` are useless there because the zip's fixed timestamps never match.
   So the layers carry unchecked-hash `.pyc` compiled by an interpreter of the *target* version, and
   none when no such interpreter is here (bytecode for another version is dead weight Lambda ignores).
   benchmarks/layers.py measures it: the tabular handler's cold start to its first prediction took 1.2 s of
   CPU with the bytecode and 3.8 s without, for 43 MB more unzipped (python3.11 here).
4. Zips have fixed timestamps, permissions and order: an unchanged layer hashes the same and is not
   republished. Each layer is cached under ~/.cache/ernie/layers by the hash of its requirements (and
   those of the layers below it), the target and this builder's version.
5. The budget: a zip over 50 MB is marked to go through S3; a function over 250 MB unzipped with its
   layers is refused with the largest packages named.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import PathDistribution
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from catalog.errors import ErnieError
# Lambda's runtimes and limits are catalog data; named here too, as the builder's own vocabulary (layers.ARCHES).
from catalog.lambda_runtime import (  # noqa: F401
    ARCHES,
    DIRECT_UPLOAD_LIMIT,
    MAX_LAYERS,
    RUNTIME_GLIBC,
    SERVING_PYTHONS,
    UNZIPPED_LIMIT,
    Arch,
)

REPO = Path(__file__).resolve().parents[1]
SERVING_DIR = REPO / "workloads" / "serving"
FUNCTIONS_FILE = SERVING_DIR / "layers.toml"
DEFAULT_OUT = REPO / "infra" / "build" / "layers"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ernie" / "layers"

# Part of every cache key: bump it whenever a build step below changes what lands in a zip.
BUILDER_VERSION = "4"

_MACHINE = {"x86_64": "x86_64", "arm64": "aarch64"}
_ELF_MACHINE = {"x86_64": 62, "arm64": 183}  # e_machine: EM_X86_64, EM_AARCH64
# A wedged index or mirror must fail the build with a message, not hang `pulumi up`: the largest layer (scipy,
# numpy) takes about a minute here; pip's own --timeout bounds each socket wait, this the whole install.
PIP_TIMEOUT_SECONDS = 900
PIP_SOCKET_TIMEOUT_SECONDS = 60
# Lambda unpacks layers into /opt; compiled bytecode records paths as they will be there.
LAMBDA_PYTHON_DIR = "/opt/python"

# Slimming: what no import at run time reads.
SLIM_DIR_NAMES = frozenset({"tests", "__pycache__"})
SLIM_SUFFIXES = frozenset({".pyi", ".pyx", ".pxd", ".pxi", ".c", ".cc", ".cpp", ".h", ".hpp", ".a"})
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class LayerError(ErnieError):
    """A layer set that cannot be built or would not work on Lambda."""


class LayerBudgetError(LayerError):
    """A function and its layers over Lambda's unzipped size limit."""


@dataclass(frozen=True)
class Target:
    """The Lambda runtime the layers are built for."""

    python_version: str
    """"3.12": pip picks wheels for it, and only an interpreter of this version compiles bytecode."""
    arch: Arch
    """Lambda architecture; pip picks manylinux wheels for its machine."""
    glibc: tuple[int, int]
    """glibc of the runtime's OS: the newest manylinux tag that loads there."""

    @classmethod
    def lambda_runtime(cls, python_version: str = "3.12", arch: str = "x86_64") -> Target:
        if python_version not in RUNTIME_GLIBC:
            raise LayerError(f"python version {python_version!r} is not a Lambda runtime the serving layers support "
                             f"(their wheels need glibc 2.34, Amazon Linux 2023); use one of "
                             f"{', '.join(SERVING_PYTHONS)}")
        if arch not in ARCHES:
            raise LayerError(f"architecture {arch!r} is not a Lambda architecture; use one of {list(ARCHES)}")
        return cls(python_version, arch, RUNTIME_GLIBC[python_version])  # type: ignore[arg-type]

    @classmethod
    def host(cls) -> Target:
        """This machine's interpreter, OS and architecture: layers that can be unpacked and run here."""
        arch = {"x86_64": "x86_64", "aarch64": "arm64"}.get(platform.machine())
        libc, libc_version = platform.libc_ver()
        if arch is None or libc != "glibc":
            raise LayerError(f"this machine ({platform.machine()}, {libc or 'no glibc'}) is not a Lambda-like Linux")
        major, minor = (int(p) for p in libc_version.split(".")[:2])
        return cls(f"{sys.version_info.major}.{sys.version_info.minor}", arch, (major, minor))  # type: ignore[arg-type]

    @property
    def runtime(self) -> str:
        return f"python{self.python_version}"

    @property
    def name(self) -> str:
        return f"{self.runtime}-{self.arch}-glibc{self.glibc[0]}.{self.glibc[1]}"

    def platform_tags(self) -> list[str]:
        """Every manylinux tag that loads on the target, newest first (pip takes them as given)."""
        machine = _MACHINE[self.arch]
        major, minor = self.glibc
        return [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 16, -1)] + [f"manylinux2014_{machine}"]

    def marker_environment(self) -> dict[str, str]:
        """PEP 508 marker values on the target (for checking Requires-Dist), not on this machine."""
        env = default_environment()
        env.update(
            python_version=self.python_version,
            python_full_version=f"{self.python_version}.0",
            platform_machine=_MACHINE[self.arch],
            sys_platform="linux",
            platform_system="Linux",
            os_name="posix",
            implementation_name="cpython",
            platform_python_implementation="CPython",
        )
        return env


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


@dataclass(frozen=True)
class Distribution:
    """One installed distribution as its dist-info describes it."""

    name: str
    version: str
    requires: tuple[str, ...]
    bytes: int
    """Unzipped size of everything it installed, bytecode included."""


@dataclass(frozen=True)
class Archive:
    """A deterministic zip and what Lambda counts of it."""

    path: Path
    sha256: str
    zipped_bytes: int
    unzipped_bytes: int

    @property
    def source_code_hash(self) -> str:
        """base64 SHA-256, the form Lambda's `source_code_hash` compares."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode()

    @property
    def via_s3(self) -> bool:
        """Over the direct-upload limit: it must be uploaded to S3 and referenced from there."""
        return self.zipped_bytes > DIRECT_UPLOAD_LIMIT


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


# --- function specs -------------------------------------------------------------------------------------


def load_functions(path: Path = FUNCTIONS_FILE) -> dict[str, FunctionSpec]:
    """Every function in a layers.toml, validated: files exist, names unique, at most 5 layers each."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LayerError(f"cannot read the function specs in {path}: {exc}") from None
    return {name: _function_spec(name, table, path.parent) for name, table in data.items()}


def _function_spec(name: str, table: dict, base: Path) -> FunctionSpec:
    where = f"[{name}] in {base / FUNCTIONS_FILE.name}"
    for key in ("handler", "code", "layers"):
        if key not in table:
            raise LayerError(f"{where} needs `{key}`")
    code = tuple(base / f for f in table["code"])
    layers = tuple(_layer_spec(layer, base, where) for layer in table["layers"])
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise LayerError(f"{where}: layer names must be unique, got {names}")
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise LayerError(f"{where} has {len(layers)} layers; Lambda takes 1 to {MAX_LAYERS} per function")
    for path in code:
        if not path.is_file():
            raise LayerError(f"{where}: code file {path} does not exist")
    return FunctionSpec(name, table.get("description", ""), table["handler"], code, layers)


def _layer_spec(table: dict, base: Path, where: str) -> LayerSpec:
    name = table.get("name", "")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise LayerError(f"{where}: layer name {name!r} must be lower-case letters, digits and dashes")
    if ("requirements" in table) == ("build" in table):
        raise LayerError(f"{where}: layer {name!r} needs exactly one of `requirements` or `build`")
    if "build" in table:
        script = base / table["build"]
        if not script.is_file():
            raise LayerError(f"{where}: layer {name!r} build script {script} does not exist")
        if "omit" in table or "drop" in table:
            raise LayerError(f"{where}: layer {name!r} has a build script; `omit` and `drop` apply to requirements")
        inputs = tuple(base / i for i in table.get("inputs", ()))
        for path in inputs:
            if not path.exists():
                raise LayerError(f"{where}: layer {name!r} input {path} does not exist")
        return LayerSpec(name, build=script, inputs=inputs)
    return LayerSpec(name, requirements=read_requirements(base / table["requirements"]),
                     omit=tuple(canonicalize_name(n) for n in table.get("omit", ())), drop=tuple(table.get("drop", ())))


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


# --- building -------------------------------------------------------------------------------------------


def build_function(
    spec: FunctionSpec,
    target: Target,
    out_dir: Path = DEFAULT_OUT,
    *,
    cache_dir: Path = DEFAULT_CACHE,
    log: Callable[[str], None] = lambda message: None,
) -> BuiltFunction:
    """Build (or take from the cache) every layer of `spec` and its code zip; check the set and the budget.

    The zips land in `out_dir/<target>/<function>/`. Raises LayerError when a layer cannot be built or the
    set is incomplete, LayerBudgetError when it is over Lambda's unzipped limit.
    """
    dest = out_dir / target.name / spec.name
    dest.mkdir(parents=True, exist_ok=True)
    tools = _Tools.find(target)
    log(f"building {spec.name} for {target.name}: bytecode {tools.bytecode_note}; {tools.strip_note}")
    built: list[BuiltLayer] = []
    for index, layer in enumerate(spec.layers, 1):
        below = tuple(built)
        key = _cache_key(target, tools, layer, spec.layers[: index - 1], below)
        result = _cached_layer(cache_dir / key) or _build_layer(layer, target, tools, below, cache_dir / key, log)
        archive = _place(result.archive, dest / f"{index}-{layer.name}.zip")
        built.append(BuiltLayer(layer.name, archive, result.distributions, result.bytecode, result.cached))
        log(f"  {layer.name}: {'cached' if result.cached else 'built'} {_mb(archive.zipped_bytes)} zipped, "
            f"{_mb(archive.unzipped_bytes)} unzipped")
    code = write_zip(((path.name, path) for path in spec.code), dest / "function.zip")
    function = BuiltFunction(spec, target, code, tuple(built))
    check_complete(function)
    check_budget(function)
    return function


@dataclass(frozen=True)
class _Tools:
    """The interpreter that compiles bytecode for the target and the strip that reads its objects, if any."""

    python: str | None
    python_version: str | None
    strip: str | None

    @classmethod
    def find(cls, target: Target) -> _Tools:
        python = sys.executable if sys.version_info[:2] == _version_tuple(target.python_version) else None
        # On PATH, or installed by pyenv without being selected (its shim then refuses to run).
        pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
        candidates = [shutil.which(f"python{target.python_version}"),
                      *sorted(map(str, pyenv.glob(f"{target.python_version}.*/bin/python{target.python_version}")),
                              reverse=True)]
        for candidate in candidates if python is None else ():
            if candidate and _version_of(candidate) == target.python_version:
                python = candidate
                break
        strip = shutil.which("strip") if platform.machine() == _MACHINE[target.arch] else None
        strip = strip or shutil.which(f"{_MACHINE[target.arch]}-linux-gnu-strip")
        return cls(python, target.python_version if python else None, strip)

    @property
    def bytecode_note(self) -> str:
        if self.python:
            return f"unchecked-hash .pyc by {self.python}"
        return "none (no interpreter of the target version here; cold starts compile in memory)"

    @property
    def strip_note(self) -> str:
        return f"symbols stripped by {self.strip}" if self.strip else "shared objects left unstripped (no strip for the target)"


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _version_of(python: str) -> str | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _cache_key(target: Target, tools: _Tools, layer: LayerSpec, below: Sequence[LayerSpec],
               built_below: Sequence[BuiltLayer]) -> str:
    if layer.build is not None:
        # A script's output depends on the files beside it and on the versions the layers below hold.
        inputs: object = {
            "files": {str(p.relative_to(layer.build.parent)): _sha256(p)
                      for p in _input_files(layer.build, layer.inputs)},
            "below": [[d.name, d.version] for built in built_below for d in built.distributions],
            "python": sys.version,
        }
    else:
        inputs = {"requirements": layer.requirements, "omit": layer.omit, "drop": layer.drop,
                  "below": [[spec.requirements, spec.omit, spec.drop] for spec in below]}
    material = {"builder": BUILDER_VERSION, "target": asdict(target), "layer": layer.name, "inputs": inputs,
                "bytecode": tools.python_version, "strip": bool(tools.strip)}
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:20]
    return f"{layer.name}-{digest}"


def _input_files(build: Path, inputs: Iterable[Path]) -> list[Path]:
    files = {build}
    for path in inputs:
        files.update(f for f in ([path] if path.is_file() else path.rglob("*"))
                     if f.is_file() and "__pycache__" not in f.parts)
    return sorted(files)


def _cached_layer(entry: Path) -> BuiltLayer | None:
    manifest = entry / "manifest.json"
    if not manifest.is_file() or not (entry / "layer.zip").is_file():
        return None
    data = json.loads(manifest.read_text())
    archive = Archive(entry / "layer.zip", data["sha256"], data["zipped_bytes"], data["unzipped_bytes"])
    dists = tuple(Distribution(d["name"], d["version"], tuple(d["requires"]), d["bytes"]) for d in data["distributions"])
    return BuiltLayer(data["name"], archive, dists, data["bytecode"], cached=True)


def _build_layer(layer: LayerSpec, target: Target, tools: _Tools, below: Sequence[BuiltLayer], entry: Path,
                 log: Callable[[str], None]) -> BuiltLayer:
    entry.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{layer.name}-", dir=entry.parent))
    try:
        root = work / "python"
        held = {d.name: d.version for built in below for d in built.distributions}
        if layer.build is not None:
            with tempfile.TemporaryDirectory(prefix=".env-", dir=entry.parent) as env:
                run_build_script(layer, root, below=_build_environment(target, below, Path(env)))
        else:
            _pip_install(layer, target, root, held, work)
            removed = remove_distributions(root, set(held))
            if removed:
                log(f"  {layer.name}: left out {', '.join(sorted(removed))} (held by a layer below)")
            omitted = remove_distributions(root, unneeded(root, layer, target))
            if omitted:
                log(f"  {layer.name}: left out {', '.join(sorted(omitted))} (omitted, or needed only by what is)")
            slimmed = slim(root)
            drop_files(root, layer)
            stripped = strip_shared_objects(root, target, tools.strip) if tools.strip else 0
            log(f"  {layer.name}: slimming removed {_mb(slimmed)}, stripping symbols {_mb(stripped)}")
        if tools.python:
            compile_bytecode(root, tools.python)
        distributions = read_distributions(root)
        archive = write_zip(((f"python/{p.relative_to(root).as_posix()}", p) for p in _files(root)), work / "layer.zip")
        manifest = {
            "name": layer.name, "sha256": archive.sha256, "zipped_bytes": archive.zipped_bytes,
            "unzipped_bytes": archive.unzipped_bytes, "bytecode": tools.python_version,
            "distributions": [asdict(d) for d in distributions],
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1))
        shutil.rmtree(root)
        if entry.exists():  # another build got there first; its zip is byte-identical
            shutil.rmtree(entry)
        work.rename(entry)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return BuiltLayer(layer.name, Archive(entry / "layer.zip", archive.sha256, archive.zipped_bytes,
                                          archive.unzipped_bytes), distributions, tools.python_version)


def _pip_install(layer: LayerSpec, target: Target, root: Path, held: dict[str, str], work: Path) -> None:
    requirements = work / "requirements.txt"
    requirements.write_text("".join(f"{line}\n" for line in layer.requirements))
    constraints = work / "constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(held.items())))
    result = _run_pip([
        "--no-compile",  # bytecode is compiled deliberately afterwards, for the target interpreter only
        "--target", str(root), "--implementation", "cp", "--python-version", target.python_version,
        "--only-binary=:all:", *(f"--platform={tag}" for tag in target.platform_tags()),
        "-r", str(requirements), "-c", str(constraints),
    ], f"layer {layer.name!r} ({', '.join(layer.requirements)}) for {target.name}")
    if result.returncode != 0:
        tail = _tail(result, 6)
        raise LayerError(
            f"pip could not install layer {layer.name!r} ({', '.join(layer.requirements)}) for {target.name} "
            f"with the versions the layers below hold ({', '.join(f'{n}=={v}' for n, v in held.items()) or 'none'}):\n{tail}"
        )
    shutil.rmtree(root / "bin", ignore_errors=True)  # console scripts: nothing runs them on Lambda


def _runs_here(target: Target) -> bool:
    """Whether wheels installed for `target` load on this machine (its Python still has to match)."""
    try:
        host = Target.host()
    except LayerError:
        return False
    return host.arch == target.arch and host.glibc >= target.glibc


def _build_environment(target: Target, below: Sequence[BuiltLayer], env: Path) -> list[Path]:
    """The python/ dirs a build script runs with, first on its path: the packages of the layers below, so what
    it writes (a pickle) fits the versions the function imports by construction, whatever this environment
    holds (which still serves what no layer holds, e.g. torch for an export). The unpacked layers themselves
    where they load here; otherwise the same pinned versions installed for this interpreter."""
    if not below:
        return []
    if sys.version_info[:2] == _version_tuple(target.python_version) and _runs_here(target):
        paths = []
        for built in below:
            with zipfile.ZipFile(built.archive.path) as archive:
                archive.extractall(env / built.name)
            paths.append(env / built.name / "python")
        return paths
    pins = sorted(f"{d.name}=={d.version}" for built in below for d in built.distributions)
    what = f"the versions the layers below hold ({', '.join(pins)}) for this interpreter, to run a build script"
    result = _run_pip(["--target", str(env / "python"), "--only-binary=:all:", "--no-deps", *pins], what)
    if result.returncode != 0:
        raise LayerError(f"pip could not install {what}:\n{_tail(result, 6)}")
    return [env / "python"]


def _run_pip(args: Sequence[str], what: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-conflicts",
               "--timeout", str(PIP_SOCKET_TIMEOUT_SECONDS), *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise LayerError(f"pip did not finish installing {what} within {PIP_TIMEOUT_SECONDS} s; check that the "
                         "package index (pip config, PIP_INDEX_URL) answers, then build again") from None


def _tail(result: subprocess.CompletedProcess[str], lines: int) -> str:
    return "\n".join((result.stderr or result.stdout).strip().splitlines()[-lines:])


def run_build_script(layer: LayerSpec, root: Path, *, below: Sequence[Path] = ()) -> None:
    """Run a build layer's script into `root` (its python/), the `below` dirs first on its path; LayerError with
    the script's last lines if it fails."""
    if layer.build is None:
        raise LayerError(f"layer {layer.name!r} has no build script")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if below:
        env["PYTHONPATH"] = os.pathsep.join([*map(str, below), *filter(None, [os.environ.get("PYTHONPATH")])])
    result = subprocess.run([sys.executable, str(layer.build), "--out", str(root)], capture_output=True,
                            text=True, cwd=layer.build.parent, env=env)
    if result.returncode != 0:
        tail = _tail(result, 8)
        raise LayerError(f"the build script of layer {layer.name!r} ({layer.build}) failed:\n{tail}")


def _place(archive: Archive, path: Path) -> Archive:
    """The archive at `path` (a hard link to the cached zip where the file system allows)."""
    if archive.path != path:
        path.unlink(missing_ok=True)
        try:
            os.link(archive.path, path)
        except OSError:
            shutil.copyfile(archive.path, path)
    return Archive(path, archive.sha256, archive.zipped_bytes, archive.unzipped_bytes)


# --- the steps, each a function of a directory ----------------------------------------------------------


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
            removed += sum(p.stat().st_size for p in _files(path))
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
    objects = [p for p in _files(root) if ".so" in p.name and not p.parent.name.endswith(".libs")
               and _is_elf(p, _ELF_MACHINE[target.arch])]
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
    for path in _files(root):
        parts = path.relative_to(root).parts
        # A top-level module's bytecode (six.py -> __pycache__/six.cpython-312.pyc) belongs with it.
        top = f"{parts[1].split('.')[0]}.py" if parts[0] == "__pycache__" and len(parts) == 2 else parts[0]
        owner = owners.get(top, "(no distribution)")
        sizes[owner] = sizes.get(owner, 0) + path.stat().st_size
    result = [Distribution(name, version, requires, sizes.get(name, 0)) for name, version, requires in dists]
    if "(no distribution)" in sizes:
        result.append(Distribution("(no distribution)", "", (), sizes["(no distribution)"]))
    return tuple(result)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _prune_empty_dirs(root: Path) -> None:
    for path in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        if not any(path.iterdir()):
            path.rmdir()


def _sha256(path: Path) -> str:
    with path.open("rb") as f:  # infra imports no ernie, so not ernie.remote.collect.sha256_file
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_zip(members: Iterable[tuple[str, Path]], dest: Path) -> Archive:
    """A reproducible zip: members sorted, fixed timestamps and permissions, no directory entries."""
    unzipped = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name, path in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.create_system = 3  # unix, so external_attr carries the permissions
            executable = path.stat().st_mode & 0o111
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = path.read_bytes()
            unzipped += len(data)
            archive.writestr(info, data, compresslevel=6)
    return Archive(dest, _sha256(dest), dest.stat().st_size, unzipped)


# --- checks before anything is deployed -----------------------------------------------------------------


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
    largest = ", ".join(f"{d.name} {d.version} {_mb(d.bytes)} (layer {layer})"
                        for layer, d in function.largest_packages())
    raise LayerBudgetError(
        f"the {function.spec.name} function for {function.target.name} comes to {_mb(total)} unzipped with its "
        f"layers, over Lambda's limit of {_mb(UNZIPPED_LIMIT)} ({UNZIPPED_LIMIT:,} bytes). Largest packages: "
        f"{largest}. Drop or replace a requirement, or serve this model from a container image instead."
    )


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"
