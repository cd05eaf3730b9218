"""The training recipe's flags, shared name for name by train_torch.py and train_tf.py, and their checks.

Both trainers must train the same recipe for the comparison to mean anything, so the flags that define it
(model, data, batch, schedule, optimizer, eval, checkpoints) are declared and validated here once; each
trainer adds only what is its own (torch: --micro-batch, --compile; TensorFlow: --port).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import data
from presets import PRESETS, Preset, get_preset


def add_recipe_arguments(parser: argparse.ArgumentParser, *, precisions: Sequence[str], precision_help: str,
                         timing_warmup_help: str) -> None:
    """The recipe's flags; `precisions` and the help texts are the trainer's own."""
    parser.add_argument("--preset", default="tiny", help=f"model size: {', '.join(PRESETS)}")
    parser.add_argument("--data-dir", type=Path, required=True, help="prepared data (prep_data.py)")
    parser.add_argument("--out", type=Path, required=True, help="where mlperf.log, result.json, checkpoints go")
    parser.add_argument("--seq-len", type=int, default=None, help="must match the data (default: the data's)")
    parser.add_argument("--global-batch", type=int, default=32, help="sequences per optimizer step, all workers")
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
    parser.add_argument("--precision", choices=tuple(precisions), default="auto", help=precision_help)
    parser.add_argument("--dropout", type=float, default=None, help="override the preset's dropout (0: none)")
    parser.add_argument("--eval-every", type=int, default=1000, help="evaluate every N steps, and at the end")
    parser.add_argument("--eval-samples", type=int, default=10000, help="eval examples per evaluation, at most")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="checkpoint every N steps, and at the end")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out if any")
    parser.add_argument("--log-every", type=int, default=10, help="tracked_stats every N steps")
    parser.add_argument("--timing-warmup", type=int, default=5, help=timing_warmup_help)
    parser.add_argument("--seed", type=int, default=12345, help="model init, data order and dropout")


def check_recipe(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Preset:
    """The checks that need no data: ranges, and --seq-len against the preset. Returns the preset."""
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
    if args.seq_len is not None and args.seq_len > preset.max_position:
        parser.error(
            f"--seq-len {args.seq_len} exceeds preset {preset.name}'s {preset.max_position} position embeddings"
        )
    if args.warmup_steps is None:
        args.warmup_steps = max(1, args.max_steps // 100)
    if args.warmup_steps < 0 or args.warmup_steps >= args.max_steps:
        parser.error(f"--warmup-steps must be in 0..{args.max_steps - 1} (below --max-steps), got {args.warmup_steps}")
    return preset


def bind_data(parser: argparse.ArgumentParser, args: argparse.Namespace, preset: Preset) -> None:
    """Read the data's meta.json, check it fits the preset, and take its seq len and max predictions."""
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
