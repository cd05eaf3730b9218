"""Words/s of the translation workload's synthetic recipe on this CPU: fairseq's defaults against the
workload's chosen settings, measured in the same run, interleaved so that load from other jobs on a
shared machine falls on both alike.

    .venv/bin/python benchmarks/translation_cpu.py [--epochs 4] [--repeats 2]

Both arms run the same model, data, batch size (the recipe's --max-tokens) and number of epochs through
workloads/translation/run.py, and read words_per_s from its result.json (fairseq's wps over the timed
region). They differ only in what the workload chooses on CPU hosts:

* one OpenMP thread per fairseq process (`OMP_NUM_THREADS=1`, the synthetic recipe's choice) instead
  of torch's one per core: on a 64-wide model the threads spend more time synchronising than
  computing, and spinning threads slow every other process on a shared machine (most of the gap,
  workloads/translation/README.md);
* data loading in the training process (`--num-workers 0`) instead of fairseq's default of one
  loader process, which competes with training for the same few cores.

Last line: wps_ratio_vs_defaults=<median chosen / median defaults>; the line before it: the machine (benchmarks/machine.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import machine

WORKLOAD = Path(__file__).resolve().parents[1] / "workloads" / "translation"
ARMS = {
    "defaults": ["--data-workers", "1", "--cpu-threads", "0"],  # fairseq's --num-workers 1, torch's threads
    "chosen": [],  # run.py's own: --data-workers 0, the synthetic recipe's one thread
}


def run_once(arm: str, data_dir: Path, out: Path, epochs: int, prepare: bool) -> float:
    command = [sys.executable, "run.py", "--recipe", "synthetic", "--data-dir", str(data_dir), "--out", str(out),
               "--max-epoch", str(epochs), "--log-interval", "5", *ARMS[arm]]
    if prepare:
        command.append("--prepare")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ERNIE_", "OMP_"))}
    proc = subprocess.run(command, cwd=WORKLOAD, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        sys.exit(f"{arm} run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    result = json.loads((out / "result.json").read_text())
    return float(result["words_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (2,000 pairs, ~26 updates each)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each arm, interleaved")
    args = parser.parse_args()
    if args.epochs < 2 or args.repeats < 1:
        parser.error("--epochs must be at least 2 (the timed region skips the first interval) and --repeats at least 1")

    speeds: dict[str, list[float]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory(prefix="translation-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        for repeat in range(args.repeats):
            for arm in ARMS:
                wps = run_once(arm, data_dir, Path(tmp) / f"{arm}-{repeat}", args.epochs, prepare=not data_dir.exists())
                speeds[arm].append(wps)
                flags = " ".join(ARMS[arm]) or "run.py defaults"
                print(f"{arm:9s} run {repeat + 1}: {wps:8.1f} words/s  ({flags})", flush=True)
    medians = {arm: statistics.median(values) for arm, values in speeds.items()}
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")
    print(f"median words/s: defaults {medians['defaults']:.1f}, chosen {medians['chosen']:.1f}")
    print(machine.describe("fp32, both arms"))
    print(f"wps_ratio_vs_defaults={medians['chosen'] / medians['defaults']:.2f}")


if __name__ == "__main__":
    main()
