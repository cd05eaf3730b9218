"""The Lambda layer builder, with real pip: dedup, slimming, bytecode, reproducible zips, checks, budget.

The tabular set is built once per session for this machine's interpreter (cached under ~/.cache/ernie/layers
by requirements hash, so only the first run downloads and slims); reproducibility is proven on a small set
built twice from empty caches.
"""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

import lambda_layers.build
import lambda_layers.checks
from catalog.lambda_runtime import DIRECT_UPLOAD_LIMIT, UNZIPPED_LIMIT
from lambda_layers.archive import Archive
from lambda_layers.build import build_function
from lambda_layers.built import BuiltFunction
from lambda_layers.errors import LayerBudgetError, LayerError
from lambda_layers.spec import FunctionSpec, LayerSpec, load_functions
from lambda_layers.target import Target


@pytest.fixture(scope="session")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> BuiltFunction:
    spec = load_functions()["tabular"]
    return build_function(spec, Target.host(), tmp_path_factory.mktemp("layers-out"))


def small_spec(tmp_path: Path, *extra: LayerSpec) -> FunctionSpec:
    code = tmp_path / "handler.py"
    code.write_text("def handler(event, context):\n    return {}\n")
    # python-dateutil needs six: the second layer must not hold six again.
    base = (LayerSpec("six", ("six==1.17.0",)), LayerSpec("dateutil", ("python-dateutil==2.9.0.post0",)))
    return FunctionSpec("small", "test set", "handler.handler", (code,), base + extra)


def top_level_names(archive: Archive) -> set[str]:
    with zipfile.ZipFile(archive.path) as z:
        return {name.split("/")[1] for name in z.namelist()}


def test_tabular_layers_in_order_each_package_once(tabular: BuiltFunction) -> None:
    assert [layer.name for layer in tabular.layers] == ["numpy-scipy", "pandas", "scikit-learn", "model"]
    seen: dict[str, str] = {}
    for layer in tabular.layers:
        for name in top_level_names(layer.archive):
            assert name not in seen, f"{name} is in layer {seen.get(name)} and in {layer.name}"
            seen[name] = layer.name
    held = {d.name: layer.name for layer in tabular.layers for d in layer.distributions}
    assert held["numpy"] == "numpy-scipy" and held["scipy"] == "numpy-scipy"
    assert held["pandas"] == "pandas" and held["scikit-learn"] == "scikit-learn"
    assert held["tabular-model"] == "model"


def test_slimming_keeps_dist_info_and_drops_tests(tabular: BuiltFunction) -> None:
    for layer in tabular.layers:
        with zipfile.ZipFile(layer.archive.path) as z:
            names = z.namelist()
        dist_infos = {n.split("/")[1].removesuffix(".dist-info").rsplit("-", 1)[0]
                      for n in names if n.endswith(".dist-info/METADATA")}
        assert {d.name for d in layer.distributions} == {canonicalize_name(n) for n in dist_infos}
        assert not [n for n in names if "/tests/" in n and ".dist-info/" not in n]
        assert not [n for n in names if n.endswith((".pyi", ".pxd", ".h", ".a"))]
    assert tabular.unzipped_bytes < UNZIPPED_LIMIT


def test_bytecode_is_unchecked_hash_for_this_interpreter(tabular: BuiltFunction) -> None:
    numpy_layer = tabular.layers[0]
    assert numpy_layer.bytecode == f"{sys.version_info.major}.{sys.version_info.minor}"
    tag = sys.implementation.cache_tag
    with zipfile.ZipFile(numpy_layer.archive.path) as z:
        header = z.read(f"python/numpy/__pycache__/__init__.{tag}.pyc")[:8]
    assert header[:4] == importlib.util.MAGIC_NUMBER
    # PEP 552 flags: bit 0 hash-based, bit 1 check_source; 0b01 = unchecked hash.
    assert int.from_bytes(header[4:8], "little") == 0b01


def test_zip_entries_are_normalised(tabular: BuiltFunction) -> None:
    with zipfile.ZipFile(tabular.layers[1].archive.path) as z:
        infos = z.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} <= {0o100644, 0o100755}


def test_two_builds_are_byte_identical_and_deduplicated(tmp_path: Path) -> None:
    spec = small_spec(tmp_path)
    first = build_function(spec, Target.host(), tmp_path / "out1", cache_dir=tmp_path / "cache1")
    second = build_function(spec, Target.host(), tmp_path / "out2", cache_dir=tmp_path / "cache2")
    assert not any(layer.cached for layer in first.layers + second.layers)
    for a, b in zip(first.layers, second.layers):
        assert a.archive.path.read_bytes() == b.archive.path.read_bytes(), a.name
    assert first.code.sha256 == second.code.sha256
    assert top_level_names(first.layers[0].archive) == {"six.py", "six-1.17.0.dist-info", "__pycache__"}
    dateutil_names = top_level_names(first.layers[1].archive)
    assert "six.py" not in dateutil_names and "dateutil" in dateutil_names
    # An unchanged set comes from the cache, with the same hash.
    third = build_function(spec, Target.host(), tmp_path / "out3", cache_dir=tmp_path / "cache1")
    assert all(layer.cached for layer in third.layers)
    assert [l.archive.sha256 for l in third.layers] == [l.archive.sha256 for l in first.layers]


def test_set_over_budget_is_refused_naming_largest_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real set comes to a few hundred KB: a limit below it stands in for Lambda's 250 MB.
    monkeypatch.setattr(lambda_layers.checks, "UNZIPPED_LIMIT", 100_000)
    with pytest.raises(LayerBudgetError) as error:
        build_function(small_spec(tmp_path), Target.host(), tmp_path / "out", cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert "over Lambda's limit" in message and "Largest packages: python-dateutil" in message
    assert "six 1.17.0" in message


def test_model_pins_that_the_layers_do_not_hold_are_refused(tmp_path: Path) -> None:
    script = tmp_path / "model" / "build.py"
    script.parent.mkdir()
    script.write_text(
        "import pathlib, sys\n"
        "out = pathlib.Path(sys.argv[2]); (out / 'm').mkdir(parents=True); (out / 'm/__init__.py').write_text('')\n"
        "d = out / 'm-1.dist-info'; d.mkdir()\n"
        "(d / 'METADATA').write_text('Metadata-Version: 2.1\\nName: m\\nVersion: 1\\nRequires-Dist: six==1.16.0\\n')\n"
    )
    spec = small_spec(tmp_path, LayerSpec("model", build=script))
    with pytest.raises(LayerError, match=r"m \(layer model\) needs six==1.16.0, but layer six holds six 1.17.0"):
        build_function(spec, Target.host(), tmp_path / "out", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("target", [Target.host(), Target.lambda_runtime("3.12", "arm64")], ids=["host", "arm64"])
def test_build_script_runs_against_the_versions_of_the_layers_below(tmp_path: Path, target: Target) -> None:
    """The model is pickled with the layers' pins, not this environment's (six 1.17.0 here, 1.16.0 in the layer):
    from the unpacked layers where they load here, else from the same pins installed for this interpreter."""
    script = tmp_path / "model" / "build.py"
    script.parent.mkdir()
    script.write_text(
        "import pathlib, sys, six\n"
        "out = pathlib.Path(sys.argv[2]); out.mkdir(parents=True)\n"
        "(out / 'probe.txt').write_text(f'{six.__version__} {six.__file__}')\n"
    )
    spec = FunctionSpec("small", "", "h.h", (), (LayerSpec("six", ("six==1.16.0",)), LayerSpec("model", build=script)))
    built = build_function(spec, target, tmp_path / "out", cache_dir=tmp_path / "cache")
    with zipfile.ZipFile(built.layers[-1].archive.path) as archive:
        version, path = archive.read("python/probe.txt").decode().split(" ", 1)
    assert version == "1.16.0" and str(tmp_path / "cache") in path
    assert not list((tmp_path / "cache").glob(".env-*"))  # the build environment is not left behind


def test_unknown_requirement_names_pip_error(tmp_path: Path) -> None:
    spec = FunctionSpec("bad", "", "h.h", (), (LayerSpec("nope", ("ernie-no-such-package-xyz==1.0",)),))
    with pytest.raises(LayerError, match="pip could not install layer 'nope'"):
        build_function(spec, Target.host(), tmp_path / "out", cache_dir=tmp_path / "cache")


def test_pip_that_hangs_is_stopped_with_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lambda_layers.build, "PIP_TIMEOUT_SECONDS", 0.05)  # pip cannot even start in that time
    spec = FunctionSpec("slow", "", "h.h", (), (LayerSpec("stuck", ("ernie-no-such-package-xyz==1.0",)),))
    with pytest.raises(LayerError, match=r"pip did not finish installing layer 'stuck' .* within 0.05 s; "
                                                r"check that the package index"):
        build_function(spec, Target.host(), tmp_path / "out", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*/layer.zip"))  # nothing half-built is cached


def test_target_validation_names_accepted_values() -> None:
    for unsupported in ("3.8", "3.9", "3.11"):  # 3.9-3.11 are Lambda runtimes, but on glibc 2.26
        with pytest.raises(LayerError, match=rf"'{unsupported}' is not a Lambda runtime the serving layers "
                                                    r"support \(their wheels need glibc 2.34.*use one of 3.12, 3.13$"):
            Target.lambda_runtime(unsupported)
    with pytest.raises(LayerError, match=r"'amd64' is not a Lambda architecture; use one of \['x86_64', 'arm64'\]"):
        Target.lambda_runtime("3.12", "amd64")
    target = Target.lambda_runtime("3.12", "arm64")
    assert target.runtime == "python3.12" and target.platform_tags()[0] == "manylinux_2_34_aarch64"
    assert target.platform_tags()[-1] == "manylinux2014_aarch64"


def test_large_zip_goes_through_s3() -> None:
    small = Archive(Path("a.zip"), "00" * 32, DIRECT_UPLOAD_LIMIT, 1)
    large = Archive(Path("b.zip"), "00" * 32, DIRECT_UPLOAD_LIMIT + 1, 1)
    assert not small.via_s3 and large.via_s3


def elf_section_types(data: bytes) -> set[int]:
    """sh_type of every section of an ELF64 little-endian object."""
    shoff, shentsize, shnum = (int.from_bytes(data[a:b], "little") for a, b in ((0x28, 0x30), (0x3A, 0x3C), (0x3C, 0x3E)))
    return {int.from_bytes(data[shoff + i * shentsize + 4:shoff + i * shentsize + 8], "little") for i in range(shnum)}


def test_arm64_layer_gets_arm64_wheels_stripped_by_a_cross_strip(tmp_path: Path) -> None:
    """Another architecture than this machine's: aarch64 wheels, symbols stripped (binutils-aarch64-linux-gnu)."""
    target = Target.lambda_runtime("3.12", "arm64")
    spec = FunctionSpec("arm", "", "h.h", (), (LayerSpec("markupsafe", ("markupsafe==3.0.2",)),))
    built = build_function(spec, target, tmp_path / "out", cache_dir=tmp_path / "cache")
    with zipfile.ZipFile(built.layers[0].archive.path) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".so")]
        data = z.read(name)
    assert name == "python/markupsafe/_speedups.cpython-312-aarch64-linux-gnu.so"
    assert int.from_bytes(data[18:20], "little") == 183  # EM_AARCH64
    sht_symtab, sht_dynsym = 2, 11
    types = elf_section_types(data)
    assert sht_dynsym in types and sht_symtab not in types, "the wheel's symbol table should have been stripped"
