"""The demo's framework comparison agrees with the frameworks benchmark (issue 22): both BERT workloads run
through `ernie demo`'s pipeline in the demo's settings, and benchmarks/bert_frameworks_cpu.py runs both
trainers in the same settings; the report's TF/PyTorch throughput ratio must agree with the benchmark's.

Slow (a few minutes of CPU: two tiny 20-step runs each way). The settings are the demo's own
(ernie/demo.py, BERT_LIKE_FOR_LIKE): tiny preset, seq 128 with 20 predictions, global batch 32 in one
micro-batch, fp32, one thread, one process. The benchmark trains on synthetic sequences where the demo
trains on the standard library's text: the same shapes, so the same work per step.

Noise: each side is one run per framework on a 2-core machine that other jobs share, timed over 15 steps.
Runs of the same trainer minutes apart measured here differed by up to 1.3x (one thread each); a ratio of
two such runs against another such ratio can then differ by up to 1.3^2 ~ 1.7x. The test allows 1.8x either
way. The disagreement it exists to catch was 4.1x (the report's 3.36 against the benchmark's 0.814), from
PyTorch running bf16 with two OpenMP threads against TensorFlow's fp32.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from ernie.demo import BERT_LIKE_FOR_LIKE, SUITE, run_demo
from ernie.results import ResultsIndex
from ernie.results.frameworks import compare_frameworks

NOISE = 1.8  # the factor either way within which the two ratios agree (docstring: why)
REPO = Path(__file__).resolve().parents[2]


def _setting(name: str) -> str:
    return next(s.split("=", 1)[1] for s in BERT_LIKE_FOR_LIKE if s.startswith(f"{name}="))


def test_the_reports_framework_ratio_agrees_with_the_benchmark(tmp_path: Path) -> None:
    bert = tuple(item for item in SUITE if item.workload.startswith("bert-"))
    assert [b.workload for b in bert] == ["bert-torch", "bert-tf"]
    results = tmp_path / "results"
    code = run_demo(results, None, Console(file=sys.stderr, width=120), suite=bert, serving=lambda console: "skipped")
    assert code == 0, "a demo BERT run did not complete (its output is above)"

    [comparison] = compare_frameworks(ResultsIndex(results).summaries())
    assert comparison.label == "tensorflow / pytorch"
    # The report says which settings matched: all that move throughput, but each framework's own compiler.
    assert comparison.unknown == []
    assert comparison.differs == ["compile (xla vs eager)"]
    for same in ("precision fp32", "threads 1", "processes 1", "micro-batch 32", "global batch 32", "seq 128"):
        assert same in comparison.matched
    assert any(m.startswith("data stdlib-s128-p20 [") for m in comparison.matched)
    md = (results / "report" / "report.md").read_text()
    assert f"tensorflow / pytorch = {comparison.ratio:.2f}x samples/s" in md

    bench = subprocess.run(
        [sys.executable, "benchmarks/bert_frameworks_cpu.py", "--preset", _setting("preset"),
         "--precision", _setting("precision"), "--threads", _setting("threads"),
         "--global-batch", _setting("global_batch"), "--seq-len", "128", "--max-predictions", "20",
         "--steps", "20", "--warmup", "5", "--repeats", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert bench.returncode == 0, bench.stderr[-3000:]
    benchmark = float(re.search(r"^tf_vs_torch=([\d.]+)", bench.stdout, re.MULTILINE).group(1))
    print(f"report tensorflow/pytorch {comparison.ratio:.3f}, benchmark tf_vs_torch {benchmark:.3f}\n{bench.stdout}")
    assert abs(math.log(comparison.ratio / benchmark)) <= math.log(NOISE), (
        f"the report says tensorflow/pytorch = {comparison.ratio:.3f}, the benchmark {benchmark:.3f}: more than "
        f"{NOISE}x apart\n{bench.stdout}"
    )
