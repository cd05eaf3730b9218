"""The plan estimate reads BERT's FLOP counts from workloads/bert by file, leaving the process's imports alone: with
workloads/bert on sys.path any bare `import data`, `results` or `common` would find the workload's (issue 18)."""

from __future__ import annotations

import sys

from ernie.compare import estimate


def test_bert_flops_load_by_file_without_touching_sys_path_or_bare_names() -> None:
    path, bare = list(sys.path), {n: sys.modules.get(n) for n in ("presets", "flops")}
    estimate._bert.cache_clear()
    flops, presets = estimate._bert("flops"), estimate._bert("presets")
    assert sys.path == path
    assert {n: sys.modules.get(n) for n in bare} == bare
    assert flops.Preset is presets.Preset  # flops.py's `from presets import Preset` got the same module
    tiny = presets.get_preset("tiny")
    assert flops.flops_per_sequence(tiny, 128, 20) > 0
