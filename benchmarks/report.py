"""`ernie report --all` over 1,000 synthetic recorded runs (target: under 5 s on a 2-core machine).

The runs are the recorded ones in tests/data/runs, copied 250 times each with their own run id, throughput,
price and timeline. The baseline, measured in the same run, reads the same files with plain `json` loads
(every manifest, timeline and result.json, and every :::MLLOG line): the least any report must do.
`ernie report --all` runs as a user runs it, a fresh process each time:
- cold: an empty results database, every run read;
- report_s, the usual case: the database already holds the runs and 10 of them changed since (new results
  collected), so 10 are read again and 990 come from the index; the report and its plots are made anew.

    .venv/bin/python benchmarks/report.py [--runs 1000]

Last line: report_s=<seconds> ratio_vs_raw_read=<ratio>; the line before it: the machine (benchmarks/machine.py).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine

REPO = Path(__file__).resolve().parents[1]
RECORDED = REPO / "tests" / "data" / "runs"
ERNIE = REPO / ".venv" / "bin" / "ernie"
TOKEN = ":::MLLOG "
CHANGED = 10  # runs collected or changed since the last report


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1000, help="how many synthetic runs to report (default 1000)")
    args = p.parse_args()
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def make_runs(root: Path, n: int) -> None:
    """`n` run directories copied from the recorded ones, each with its own id and figures."""
    rng = random.Random(8)
    templates = sorted(p for p in RECORDED.iterdir() if p.is_dir())
    for i in range(n):
        src = templates[i % len(templates)]
        run_id = f"{src.name[:16]}-{i:04d}-{src.name.split('-', 2)[2]}"
        dst = root / run_id
        shutil.copytree(src, dst)
        _edit(dst / "manifest.json", lambda m: (
            m.update(run_id=run_id),
            m["inventory"].update(price_per_hour_usd=round(m["inventory"]["price_per_hour_usd"] * rng.uniform(0.5, 1.5), 2)),
        ))
        shift = rng.uniform(-30, 300)
        _edit(dst / "timeline.json", lambda t: [s.update(end=s["end"] + shift) for s in t["steps"][-1:]])
        for result in dst.glob("*/result.json"):
            _edit(result, lambda r: r.update(
                samples_per_s=r["samples_per_s"] and round(r["samples_per_s"] * rng.uniform(0.8, 1.2), 1)))


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def raw_read(root: Path) -> int:
    """The baseline: json-load every manifest, timeline, result.json and :::MLLOG line; returns the count."""
    loaded = 0
    for run in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in (run / "manifest.json", run / "timeline.json", *run.glob("*/result.json")):
            json.loads(path.read_text())
            loaded += 1
        for log in run.glob("*/mlperf.log"):
            for line in log.read_text().splitlines():
                if line.startswith(TOKEN):
                    json.loads(line[len(TOKEN):])
                    loaded += 1
    return loaded


def timed_report(root: Path, out: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run([str(ERNIE), "report", "--all", "--results", str(root), "--out", str(out)],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"ernie report failed:\n{proc.stderr}")
    return elapsed


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="ernie-bench-report-") as tmp:
        root, out = Path(tmp) / "results", Path(tmp) / "report"
        root.mkdir()
        make_runs(root, args.runs)
        start = time.perf_counter()
        loaded = raw_read(root)
        raw_s = time.perf_counter() - start
        cold_s = timed_report(root, out)
        for result in sorted(root.glob("*/*/result.json"))[:CHANGED]:
            _edit(result, lambda r: r.update(samples_per_s=r["samples_per_s"] and r["samples_per_s"] + 1.0))
        warm_s = timed_report(root, out)
        md = (out / "report.md").read_text()
        assert md.count("\n| 2026") >= 2 * args.runs, "the report lacks runs"
    print(f"runs={args.runs} json_documents={loaded} raw_read_s={raw_s:.3f}")
    print(f"report_cold_s={cold_s:.3f} (empty database: every run read) ratio {cold_s / raw_s:.2f}")
    print(machine.describe("none (reading files, building the report)"))
    print(f"report_s={warm_s:.3f} ratio_vs_raw_read={warm_s / raw_s:.2f}")


if __name__ == "__main__":
    main()
