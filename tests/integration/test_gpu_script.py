"""benchmarks/gpu/run_all.sh, the one script a lent GPU machine runs (issue 19), on its CPU path (`--dry-run`):
every part runs at tiny sizes and lands in $OUT as the device tool can bring it back (flat, at most eight files).
On a GPU the same parts run at full size; only the sizes, the precision and the DDP backend differ."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PARTS = ("versions", "bert_large", "bert-torch", "bert-tf", "bert-jax", "ddp", "translation", "report")


def test_the_dry_run_runs_every_part_and_brings_back_the_figures(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu" / "run_all.sh"), "--dry-run"],
                          capture_output=True, text=True, timeout=1800, env={**os.environ, "OUT": str(out)})
    summary = (out / "summary.txt").read_text()
    assert proc.returncode == 0, summary + proc.stdout[-4000:] + proc.stderr[-2000:]
    for name in PARTS:
        assert f"{name}: ok in " in summary, (name, summary)
    files = sorted(p.name for p in out.iterdir())
    assert all(p.is_file() for p in out.iterdir()) and len(files) <= 8, files  # the device tool's limits
    large = json.loads((out / "bert_large.json").read_text())
    assert large["dry_run"] and large["samples_per_s"] > 0 and large["mfu"] is None  # no peak for a CPU
    ddp = json.loads((out / "ddp.json").read_text())
    assert ddp["world"] == 2 and ddp["weights_identical"] and ddp["all_reduce_sum_ok"]
    with tarfile.open(out / "results.tar.gz") as tar:
        results = {m.name.split("/")[1]: m for m in tar.getmembers() if m.name.endswith("/result.json")}
        figures = {r["workload"]: r for r in (json.load(tar.extractfile(m)) for m in results.values())}
    assert set(figures) == {"bert-torch", "bert-tf", "bert-jax", "translation"}, figures.keys()
    assert all(figures[w]["samples_per_s"] > 0 for w in ("bert-torch", "bert-tf", "bert-jax"))
    assert figures["translation"]["words_per_s"] > 0
    with tarfile.open(out / "report.tar.gz") as tar:
        assert {"report/report.md", "report/report.html"} <= set(tar.getnames())
    # The summary closes with each run's figures, read back from its result.json.
    assert "bert_large: " in summary and "ddp: gloo world 2, weights identical True" in summary
