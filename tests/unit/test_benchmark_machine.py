"""benchmarks/machine.py: the line every benchmark prints before its ratio (issue 13, item 4), on CPUs of
each class (their /proc/cpuinfo faked), with and without the AVX2 cap. Every benchmark prints it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
CAP = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
CPUS = {  # class -> (model, flags)
    "avx512-bf16": ("Intel(R) Xeon(R) Platinum 8481C", "fpu sse2 avx avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile"),
    "avx512": ("Intel(R) Xeon(R) Platinum 8259CL", "fpu sse2 avx avx2 avx512f avx512_vnni"),
    "avx2": ("AMD EPYC 7R13", "fpu sse2 avx avx2"),
    "older": ("QEMU Virtual CPU", "fpu sse2"),
}
# Benchmarks whose machine line lands in another change of issue 13 (remove each name as its line lands).
PENDING: set[str] = set()  # every benchmark prints it now


@pytest.fixture
def machine(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_machine", BENCHMARKS / "machine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for key in CAP:
        monkeypatch.delenv(key, raising=False)
    return module


@pytest.mark.parametrize("cls", CPUS)
def test_the_line_names_the_cpu_its_class_features_and_precision(machine, monkeypatch, cls):
    model, flags = CPUS[cls]
    monkeypatch.setattr(machine, "_cpuinfo", lambda: (model, set(flags.split())))
    line = machine.describe("ernie bf16, baseline fp32")
    assert line.startswith(f'machine: cpu "{model}", class {cls}, ')
    assert line.endswith("; precision ernie bf16, baseline fp32")
    have = {n for n, ok in machine.features().items() if ok}
    assert have == {"avx512-bf16": {"avx2", "avx512f", "avx512_bf16", "amx", "vnni"},
                    "avx512": {"avx2", "avx512f", "vnni"}, "avx2": {"avx2"}, "older": set()}[cls]
    missing = re.search(r"\((none missing|missing [a-z0-9_ ]+)\)", line).group(1)
    assert set(missing.removeprefix("none missing").removeprefix("missing ").split()) == set(machine.FEATURES) - have


def test_the_avx2_cap_is_named_and_takes_bf16_away(machine, monkeypatch):
    model, flags = CPUS["avx512-bf16"]
    monkeypatch.setattr(machine, "_cpuinfo", lambda: (model, set(flags.split())))
    for key, value in CAP.items():
        monkeypatch.setenv(key, value)
    assert machine.capped() == "avx2" and machine.cpu_class() == "avx2"
    line = machine.describe("ernie fp32, baseline fp32")
    assert "avx512_bf16(capped)" in line and "amx(capped)" in line and "capped to AVX2 by ATEN_CPU_CAPABILITY" in line
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")  # a partial cap is no cap: the line must not claim one
    assert machine.capped() is None and machine.cpu_class() == "avx512-bf16"


def test_this_machine_is_read_from_proc_cpuinfo(machine):
    model, flags = machine._cpuinfo()
    if Path("/proc/cpuinfo").exists():
        assert model and flags, "model name and flags parsed from /proc/cpuinfo"
    assert machine.cpu_class() in CPUS


def test_every_benchmark_prints_the_machine_line_before_its_ratio():
    """A benchmark whose ratio line is not preceded by machine.describe(...) fails here (source check: the
    benchmarks themselves take minutes). The GPU benchmarks print the GPU instead."""
    lacking = {script.name for script in BENCHMARKS.glob("*.py")
               if script.name != "machine.py" and not re.search(r"print\(machine\.describe\(", script.read_text())}
    assert lacking <= PENDING, f"{sorted(lacking - PENDING)} do not print machine.describe(...) before their ratio"


def test_cap_isa_refuses_once_torch_is_loaded():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import torch, machine\n"
            "try:\n    machine.cap_isa('avx2')\nexcept RuntimeError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(BENCHMARKS)], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"}, timeout=120)
    assert "cap_isa must run before torch is imported" in out.stdout, out.stderr
