"""Test workload: a stand-in trainer. Worker 0 writes mlperf.log (run_start, eval_accuracy reaching the target at
the last step, run_stop) and result.json (samples/s timed over its steps, FLOPs per sample, the peak, the eval);
every worker sleeps through the steps, as data-parallel workers would.

    python3 train.py --global-batch 8 --max-steps 10 --samples-per-s 40 --flops-per-sample 5e8 --peak-tflops 0.05 \
        --target-accuracy 0.7 --fail false
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--global-batch", type=int, required=True, help="samples per step")
    parser.add_argument("--max-steps", type=int, required=True, help="steps to run")
    parser.add_argument("--samples-per-s", type=float, required=True, help="the throughput to simulate")
    parser.add_argument("--flops-per-sample", type=float, required=True, help="reported in result.json")
    parser.add_argument("--peak-tflops", type=float, required=True, help="peak per device, reported")
    parser.add_argument("--target-accuracy", type=float, required=True, help="reached at the last step")
    parser.add_argument("--fail", choices=("true", "false"), required=True, help="exit 3 after the steps")
    args = parser.parse_args()
    out = Path(os.environ["ERNIE_OUTPUT_DIR"])
    worker = int(os.environ["ERNIE_WORKER_INDEX"])
    log = (out / "mlperf.log").open("w") if worker == 0 else None

    def mllog(key, value, **metadata):
        if log is not None:
            record = {"namespace": "", "time_ms": int(time.time() * 1000), "event_type": "POINT_IN_TIME",
                      "key": key, "value": value, "metadata": {"file": "train.py", "lineno": 1, **metadata}}
            log.write(":::MLLOG " + json.dumps(record) + "\n")
            log.flush()

    mllog("global_batch_size", args.global_batch)
    mllog("run_start", None)
    start = time.perf_counter()
    for step in range(1, args.max_steps + 1):
        time.sleep(args.global_batch / args.samples_per_s)
        mllog("train_loss", 1.0 / step, step=step)
        progress = {"namespace": "", "time_ms": int(time.time() * 1000), "event_type": "POINT_IN_TIME",
                    "key": "tracked_stats", "value": {"loss": 1.0 / step}, "metadata": {"step": step}}
        print(":::MLLOG " + json.dumps(progress), flush=True)
    elapsed = time.perf_counter() - start
    mllog("eval_accuracy", args.target_accuracy, step=args.max_steps)
    mllog("run_stop", None, status="success")
    if args.fail == "true":
        print("Error: this trainer was told to fail", file=sys.stderr, flush=True)
        return 3
    if worker == 0:
        rate = args.global_batch * args.max_steps / elapsed
        (out / "result.json").write_text(json.dumps({
            "workload": "trainer-test", "framework": "none", "global_batch_size": args.global_batch,
            "steps": args.max_steps, "samples_per_s": rate, "flops_per_sample": args.flops_per_sample,
            "peak_flops_per_device": args.peak_tflops * 1e12,
            "eval": {"metric": "accuracy", "value": args.target_accuracy, "target": args.target_accuracy,
                     "reached": True},
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
