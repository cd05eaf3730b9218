"""The CPU a test runs on, for the message of an assertion whose figure varies by CPU (issue 13, item 7):
int8 cosines (vnni), `--precision auto` (avx512_bf16, amx), speeds (avx2, avx512f). benchmarks/machine.py
knows which features matter; this only loads it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_MACHINE = Path(__file__).resolve().parents[1] / "benchmarks" / "machine.py"


def cpu_line() -> str:
    """E.g. 'cpu "AMD EPYC 7R13", class avx2, 2 cores, load 1.2; avx2 (missing avx512f avx512_bf16 amx vnni)'."""
    spec = importlib.util.spec_from_file_location("bench_machine", _MACHINE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.summary()
