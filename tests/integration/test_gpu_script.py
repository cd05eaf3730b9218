"""benchmarks/gpu/run_all.sh, the one script a lent GPU machine runs (issue 19), on its CPU path (`--dry-run`):
every part runs at tiny sizes and lands in $OUT as the device tool can bring it back (flat, at most eight files).
On a GPU the same parts run at full size; only the sizes, the precision and the DDP backend differ.

It runs with our code's imports held to what that machine will have (its image's packages and the wheels that
travel, through testing/gpu_image/), so a package missing there fails here: its 15 lent minutes are no test."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

from testing.gpu_packages import GPU, REPO, the_gpu_machine_s_imports

PARTS = ("versions", "bert_large", "bert-torch", "bert-jax", "ddp", "translation", "report")


def test_the_gpu_machine_s_imports_refuse_what_that_machine_lacks_and_allow_what_it_has() -> None:
    def imports(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                              env=the_gpu_machine_s_imports(), cwd=REPO)

    lacking = imports("import tensorflow")  # installed here, not there
    assert lacking.returncode == 1 and "the GPU machine's image lacks tensorflow" in lacking.stderr, lacking.stderr
    # A carried package's own imports are held too: kagglehub needs kagglesdk, which travels with it.
    allowed = imports("import ernie.cli, catalog.schema, fabric, kagglehub, pydantic; print('imported')")
    assert allowed.returncode == 0 and "imported" in allowed.stdout, allowed.stderr


def test_the_dry_run_runs_every_part_on_the_gpu_machine_s_packages_and_brings_back_the_figures(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(GPU / "run_all.sh"), "--dry-run"], capture_output=True, text=True,
                          timeout=1800, env={**the_gpu_machine_s_imports(), "OUT": str(out)})
    summary = (out / "summary.txt").read_text()
    assert proc.returncode == 0, summary + proc.stdout[-4000:] + proc.stderr[-2000:]
    for name in PARTS:
        assert f"{name}: ok in " in summary, (name, summary)
    assert "bert-tf: skipped (no tensorflow for " in summary, summary  # that image has none, nor can it travel
    files = sorted(p.name for p in out.iterdir())
    assert all(p.is_file() for p in out.iterdir()) and len(files) <= 8, files  # the device tool's limits
    large = json.loads((out / "bert_large.json").read_text())
    assert large["dry_run"] and large["samples_per_s"] > 0 and large["mfu"] is None  # no peak for a CPU
    ddp = json.loads((out / "ddp.json").read_text())
    assert ddp["world"] == 2 and ddp["weights_identical"] and ddp["all_reduce_sum_ok"]
    with tarfile.open(out / "results.tar.gz") as tar:
        results = {m.name.split("/")[1]: m for m in tar.getmembers() if m.name.endswith("/result.json")}
        figures = {r["workload"]: r for r in (json.load(tar.extractfile(m)) for m in results.values())}
    assert set(figures) == {"bert-torch", "bert-jax", "translation"}, figures.keys()
    assert all(figures[w]["samples_per_s"] > 0 for w in ("bert-torch", "bert-jax"))
    assert figures["translation"]["words_per_s"] > 0
    with tarfile.open(out / "report.tar.gz") as tar:
        assert {"report/report.md", "report/report.html"} <= set(tar.getnames())
    # The summary closes with each run's figures, read back from its result.json.
    assert "bert_large: " in summary and "ddp: gloo world 2, weights identical True" in summary


def test_a_spent_budget_starts_no_part_yet_brings_back_the_summary_and_logs(tmp_path: Path) -> None:
    """The lent machine's call is killed at its timeout with whatever is under $OUT: each part's deadline is cut
    to the run's budget, and a part with too little left is not started, so the packing always happens."""
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(GPU / "run_all.sh"), "--dry-run"], capture_output=True, text=True, timeout=300,
                          env={**the_gpu_machine_s_imports(), "OUT": str(out), "RUN_ALL_BUDGET_S": "20"})
    summary = (out / "summary.txt").read_text()
    assert proc.returncode == len(PARTS), summary  # each part that did not run is counted as failed
    for name in PARTS:
        assert f"{name}: FAILED (not started: " in summary, (name, summary)
    assert (out / "logs.tar.gz").is_file()
