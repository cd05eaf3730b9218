"""Building a function's layers for a Lambda runtime: `build_function()` turns a FunctionSpec into deterministic
zips in `out_dir/<target>/<function>/`:

1. Each requirements layer is installed by pip for the target (`--platform`, `--python-version`,
   `--only-binary=:all:`), constrained to the versions earlier layers already hold; whatever an earlier
   layer holds is then removed (by its RECORD), so no package is in two layers.
2. Slimming (tree.py) deletes test suites, type stubs, C sources/headers and static libraries, and strips the
   symbols of shared objects; every `*.dist-info` stays (packages read their own metadata).
3. Bytecode: Lambda's /opt is read-only, so without `.pyc` files every cold start compiles every module it
   imports, and timestamp-based `.pyc` are useless there because the zip's fixed timestamps never match.
   So the layers carry unchecked-hash `.pyc` compiled by an interpreter of the *target* version, and
   none when no such interpreter is here (bytecode for another version is dead weight Lambda ignores).
   benchmarks/layers.py measures it: the tabular handler's cold start to its first prediction took 1.2 s of
   CPU with the bytecode and 3.8 s without, for 43 MB more unzipped (python3.11 here).
4. Zips have fixed timestamps, permissions and order (archive.py): an unchanged layer hashes the same and is
   not republished. Each layer is cached under ~/.cache/ernie/layers by the hash of its requirements (and
   those of the layers below it), the target and BUILDER_VERSION.
5. The checks (checks.py): every Requires-Dist held; a function over 250 MB unzipped with its layers is refused
   with the largest packages named. A zip over 50 MB is marked to go through S3.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from lambda_layers.archive import Archive, files, sha256_file, write_zip
from lambda_layers.built import BuiltFunction, BuiltLayer, Distribution, mb
from lambda_layers.checks import check_budget, check_complete
from lambda_layers.errors import LayerError
from lambda_layers.spec import BUILDER_VERSION, DEFAULT_OUT, FunctionSpec, LayerSpec, input_files
from lambda_layers.target import MACHINE, Target
from lambda_layers.tree import (
    compile_bytecode,
    drop_files,
    read_distributions,
    remove_distributions,
    slim,
    strip_shared_objects,
    unneeded,
)

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ernie" / "layers"
# A wedged index or mirror must fail the build with a message, not hang it: the largest layer (scipy,
# numpy) takes about a minute here; pip's own --timeout bounds each socket wait, this the whole install.
PIP_TIMEOUT_SECONDS = 900
PIP_SOCKET_TIMEOUT_SECONDS = 60


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
        log(f"  {layer.name}: {'cached' if result.cached else 'built'} {mb(archive.zipped_bytes)} zipped, "
            f"{mb(archive.unzipped_bytes)} unzipped")
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
        strip = shutil.which("strip") if platform.machine() == MACHINE[target.arch] else None
        strip = strip or shutil.which(f"{MACHINE[target.arch]}-linux-gnu-strip")
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
            "files": {str(p.relative_to(layer.build.parent)): sha256_file(p)
                      for p in input_files(layer.build, layer.inputs)},
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
            log(f"  {layer.name}: slimming removed {mb(slimmed)}, stripping symbols {mb(stripped)}")
        if tools.python:
            compile_bytecode(root, tools.python)
        distributions = read_distributions(root)
        archive = write_zip(((f"python/{p.relative_to(root).as_posix()}", p) for p in files(root)), work / "layer.zip")
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
