"""BERT pretraining on this CPU, Keras on TensorFlow (bert-tf) and on JAX (bert-jax) against PyTorch
(bert-torch), measured in one run.

    .venv/bin/python benchmarks/bert_frameworks_cpu.py [--preset mini --global-batch 32 --steps 30 --repeats 2]

The workloads' own trainers (workloads/bert/train_tf.py, its --backend jax, train_torch.py), as `ernie run`
starts them, on the same preset, the same prepared data (synthetic full-length sequences, seq 128 with 20 predictions
by default, in the ernie-bert-v1 format both read), the same global batch, precision and step count.
Throughput is each trainer's own result.json figure: samples/s over the steps after the first
--warmup (XLA or allocator warm-up). The trainers alternate, --repeats times each, and the median of
each framework's runs is reported (the machine is shared with other jobs; one compute thread each by
default, --threads 1, makes every framework less sensitive to other jobs holding the cores than its default
thread pool; JAX runs on one device). The TF and JAX input-pipeline waits are the share of the timed step
time train_tf.py spent waiting for its next batch (its step_times.tsv), pooled over its runs; the target is
under 5%.

Last line: `tf_vs_torch=<TF samples/s / PyTorch samples/s> jax_vs_torch=<JAX samples/s / PyTorch samples/s>
tf_input_wait=<fraction> jax_input_wait=<fraction>`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine  # benchmarks/machine.py: the CPU line before the ratio
import numpy as np

BERT_DIR = Path(__file__).resolve().parents[1] / "workloads" / "bert"
sys.path.insert(0, str(BERT_DIR))  # workloads/bert ships alone, not a package: its modules import by bare name

import data  # noqa: E402
from presets import PRESETS  # noqa: E402

# framework -> the trainer's command line, as the workloads run it
TRAINERS = {"torch": ["train_torch.py"], "tf": ["train_tf.py"], "jax": ["train_tf.py", "--backend", "jax"]}
NAMES = {"torch": "pytorch", "tf": "tensorflow", "jax": "jax"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mini", choices=sorted(PRESETS), help="model size for both")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--max-predictions", type=int, default=20, help="masked positions per sequence")
    parser.add_argument("--global-batch", type=int, default=32, help="sequences per step")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the throughput")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="the same for both")
    parser.add_argument("--repeats", type=int, default=2, help="runs per framework, alternating")
    parser.add_argument("--threads", type=int, default=1,
                        help="compute threads for each (OpenMP for PyTorch, intra-op for TensorFlow; JAX: 1 turns "
                             "XLA's Eigen pool off, other counts leave it at its default); 0: their defaults")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error(f"--steps {args.steps} must exceed --warmup {args.warmup}")
    return args


def train(framework: str, data_dir: Path, out: Path, args: argparse.Namespace) -> dict:
    """One trainer run; its result.json, plus the step and input-wait times of the Keras trainer (TF, JAX)."""
    steps = str(args.steps)
    cmd = [
        sys.executable, *TRAINERS[framework], "--preset", args.preset, "--data-dir", str(data_dir), "--out", str(out),
        "--global-batch", str(args.global_batch), "--max-steps", steps, "--timing-warmup", str(args.warmup),
        "--precision", args.precision, "--eval-every", steps, "--checkpoint-every", steps, "--log-every", steps,
        "--eval-samples", str(args.global_batch),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.threads:
        threads = str(args.threads)
        env.update(OMP_NUM_THREADS=threads, TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS="1")
        if args.threads == 1:  # as workloads/bert/data.sh sets it for --threads 1
            env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=BERT_DIR, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{framework} run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    result = json.loads((out / "result.json").read_text())
    result["wall_s"] = time.perf_counter() - started
    if framework in ("tf", "jax"):
        result["step_and_wait_s"] = np.loadtxt(out / "step_times.tsv", ndmin=2)[args.warmup :]
    return result


def main() -> None:
    args = parse_args()
    runs: dict[str, list[dict]] = {framework: [] for framework in TRAINERS}
    with tempfile.TemporaryDirectory(prefix="bert-frameworks-") as tmp:
        data_dir = Path(tmp) / "data"
        data.make_synthetic(
            data_dir, seq_len=args.seq_len, max_predictions=args.max_predictions,
            train_examples=max(4096, args.global_batch * args.steps), eval_examples=args.global_batch,
        )
        print(
            f"bert {args.preset}, seq {args.seq_len}, {args.max_predictions} predictions, global batch "
            f"{args.global_batch}, {args.precision}, {args.steps} steps ({args.warmup} warm-up) per run, "
            f"{args.repeats} run(s) each, {os.cpu_count()} CPU(s), "
            f"{args.threads or 'default'} thread(s), load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        for repeat in range(args.repeats):
            for framework in TRAINERS:
                result = train(framework, data_dir, Path(tmp) / f"{framework}-{repeat}", args)
                runs[framework].append(result)
                print(
                    f"  {framework:5s} run {repeat + 1}: {result['samples_per_s']:7.2f} samples/s, "
                    f"p50 {result['step_time_ms_p50']:.0f} ms/step, {result['wall_s']:.0f} s wall "
                    f"({result['framework']} {result['framework_version']}, {result['precision']})",
                    flush=True,
                )
    speed = {f: statistics.median(r["samples_per_s"] for r in rs) for f, rs in runs.items()}
    waits = {}
    for framework in ("tf", "jax"):
        timed = np.concatenate([r["step_and_wait_s"] for r in runs[framework]])
        waits[framework] = float(timed[:, 1].sum() / timed[:, 0].sum())
    for framework in TRAINERS:
        wait = f"; input wait {waits[framework]:.2%} of step time" if framework in waits else ""
        print(f"{NAMES[framework]:10s} {speed[framework]:.2f} samples/s (median of {args.repeats}){wait}")
    print(machine.describe(f"{args.precision}, all three frameworks"))
    print(f"tf_vs_torch={speed['tf'] / speed['torch']:.3f} jax_vs_torch={speed['jax'] / speed['torch']:.3f} "
          f"tf_input_wait={waits['tf']:.4f} jax_input_wait={waits['jax']:.4f}")


if __name__ == "__main__":
    main()
