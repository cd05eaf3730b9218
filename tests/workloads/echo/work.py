"""Test workload: prints `:::MLLOG` tracked_stats lines and writes worker.json and data/blob.bin under $ERNIE_OUTPUT_DIR.

    python3 work.py --steps 5 --sleep 0.1 [--fail-worker N]
"""

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, required=True, help="how many steps to log")
    parser.add_argument("--sleep", type=float, required=True, help="seconds per step")
    parser.add_argument("--fail-worker", type=int, default=-1, help="this worker exits 3 at the end")
    args = parser.parse_args()
    out = Path(os.environ["ERNIE_OUTPUT_DIR"])
    worker = int(os.environ["ERNIE_WORKER_INDEX"])
    env = {k: v for k, v in os.environ.items() if k.startswith("ERNIE_")}
    (out / "data").mkdir(parents=True, exist_ok=True)
    # Content that differs per worker, so a file mixed up between hosts would not verify.
    blob = hashlib.sha256(f"{env['ERNIE_RUN_ID']}-{worker}".encode()).digest() * 4096
    (out / "data" / "blob.bin").write_bytes(blob)
    for step in range(1, args.steps + 1):
        time.sleep(args.sleep)
        record = {"namespace": "", "time_ms": int(time.time() * 1000), "event_type": "POINT_IN_TIME",
                  "key": "tracked_stats", "value": {"loss": 1.0 / step}, "metadata": {"step": step}}
        print(":::MLLOG " + json.dumps(record), flush=True)
    (out / "worker.json").write_text(json.dumps({"env": env, "cwd": os.getcwd(), "python": sys.executable}))
    if worker == args.fail_worker:
        print("Error: this worker was told to fail", file=sys.stderr, flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
