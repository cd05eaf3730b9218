"""BERT pretraining on Keras 3 (TensorFlow backend) with keras-hub, like for like with train_torch.py.

The same presets, prepared data (data.py), optimizers, schedule, heads, MLPerf keys and result.json as
the PyTorch workload; XLA-compiled steps (`jit_compile=True`), `mixed_bfloat16` where the hardware
computes in bf16, a prefetching tf.data pipeline.

    # this machine (CPU, or the GPUs of one host)
    python train_tf.py --preset tiny --data-dir data/seq128 --global-batch 32 --max-steps 40 --out out
    # a Cloud TPU VM, single host or pod slice: the same command on every worker (ernie starts it so);
    # on a pod slice worker 0 drives the whole slice and the others return at once (tf_strategy.py)
    python train_tf.py --preset base --data-dir data/seq128 --global-batch 256 --optimizer lamb --lr 2e-3 \\
        --max-steps 10000 --out out
    # several CPU/GPU hosts: the same command on every host, with ERNIE_WORKER_INDEX, ERNIE_NUM_WORKERS
    # and ERNIE_COORDINATOR_ADDRESS set (ernie sets them): MultiWorkerMirroredStrategy
    # continue a run that was stopped, from its last checkpoint in OUT/checkpoints
    python train_tf.py ... --out out --resume

The strategy is chosen (tf_strategy.py) before TensorFlow is imported, because a TPU launch sets
variables TensorFlow reads as it loads; the training itself lives in tf_pretrain.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import data  # noqa: E402  (these import no TensorFlow)
import tf_strategy  # noqa: E402
from presets import PRESETS, get_preset  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags (train_torch.py's, name for name), validated against each other and the data before anything runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help=f"model size: {', '.join(PRESETS)}")
    parser.add_argument("--data-dir", type=Path, required=True, help="prepared data (prep_data.py)")
    parser.add_argument("--out", type=Path, required=True, help="where mlperf.log, result.json, checkpoints go")
    parser.add_argument("--seq-len", type=int, default=None, help="must match the data (default: the data's)")
    parser.add_argument("--global-batch", type=int, default=32, help="sequences per optimizer step, all replicas")
    parser.add_argument("--max-steps", type=int, default=1000, help="stop after this many optimizer steps")
    parser.add_argument("--target-accuracy", type=float, default=0.720,
                        help="stop when masked-LM eval accuracy reaches this (MLPerf: 0.720)")
    parser.add_argument("--optimizer", choices=("adamw", "lamb"), default="adamw", help="LAMB is MLPerf's")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up (default: 1%% of max steps)")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="not applied to biases and LayerNorms")
    parser.add_argument("--beta1", type=float, default=0.9, help="first-moment decay")
    parser.add_argument("--beta2", type=float, default=0.999, help="second-moment decay")
    parser.add_argument("--eps", type=float, default=1e-6, help="optimizer epsilon")
    parser.add_argument("--clip-grad-norm", type=float, default=1.0, help="global gradient-norm clip; 0: off")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="auto: mixed_bfloat16 on TPUs and Ampere+ GPUs, fp32 on CPUs (tf_strategy.py)")
    parser.add_argument("--dropout", type=float, default=None, help="override the preset's dropout (0: none)")
    parser.add_argument("--eval-every", type=int, default=1000, help="evaluate every N steps, and at the end")
    parser.add_argument("--eval-samples", type=int, default=10000, help="eval examples per evaluation, at most")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="checkpoint every N steps, and at the end")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out if any")
    parser.add_argument("--log-every", type=int, default=10, help="tracked_stats every N steps")
    parser.add_argument("--timing-warmup", type=int, default=5,
                        help="first steps left out of the throughput figures (XLA compilation)")
    parser.add_argument("--seed", type=int, default=12345, help="model init, data order and dropout")
    parser.add_argument("--port", type=int, default=23456,
                        help="several hosts: the coordinator's rendezvous port; workers serve on port+1+index")
    args = parser.parse_args(argv)

    try:
        preset = get_preset(args.preset)
    except ValueError as exc:
        parser.error(f"--preset: {exc}")
    for flag in ("global_batch", "max_steps", "eval_every", "eval_samples", "checkpoint_every", "log_every"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.lr <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if args.clip_grad_norm < 0 or args.weight_decay < 0:
        parser.error("--clip-grad-norm and --weight-decay must not be negative")
    if args.dropout is not None and not 0.0 <= args.dropout < 1.0:
        parser.error(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.warmup_steps is None:
        args.warmup_steps = max(1, args.max_steps // 100)
    if args.warmup_steps < 0 or args.warmup_steps >= args.max_steps:
        parser.error(f"--warmup-steps must be in 0..{args.max_steps - 1} (below --max-steps), got {args.warmup_steps}")
    try:
        meta = data.read_meta(args.data_dir)
    except data.DataError as exc:
        parser.error(f"--data-dir: {exc}")
    if args.seq_len is not None and args.seq_len != meta["seq_len"]:
        parser.error(f"--seq-len {args.seq_len} differs from the data's {meta['seq_len']}: prepare data at that length")
    args.seq_len = meta["seq_len"]
    if args.seq_len > preset.max_position:
        parser.error(f"the data's seq len {args.seq_len} exceeds preset {preset.name}'s {preset.max_position} positions")
    if meta["vocab_size"] > preset.vocab_size:
        parser.error(f"the data's vocab ({meta['vocab_size']}) is larger than preset {preset.name}'s ({preset.vocab_size})")
    args.max_predictions = meta["max_predictions"]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        plan = tf_strategy.choose(args.port)
    except (ValueError, RuntimeError) as exc:  # a malformed ERNIE_* variable, a rendezvous that timed out
        sys.exit(f"train_tf.py: error: {exc}")
    # TensorFlow's C++ start-up chatter buries the config block; on a host without GPUs that includes an
    # ERROR line for the CUDA driver it looks for, so there only fatal messages are kept.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if plan.accelerator == "cpu" else "2")
    import tf_pretrain  # only now: TensorFlow must load after tf_strategy has set its environment

    tf_pretrain.run(args, plan)


if __name__ == "__main__":
    main()
