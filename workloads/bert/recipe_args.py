"""The training recipe's flags, shared name for name by train_torch.py and train_tf.py, and their checks.

Both trainers must train the same recipe for the comparison to mean anything, so the flags that define it
(model, data, batch, schedule, optimizer, eval, checkpoints) are declared and validated here once; each
trainer adds only what is its own (torch: --micro-batch, --compile; TensorFlow: --port).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import checkpoint_tf1
import data
import formats
import recipe
from presets import PRESETS, Preset, get_preset


def add_recipe_arguments(parser: argparse.ArgumentParser, *, precisions: Sequence[str], precision_help: str,
                         timing_warmup_help: str) -> None:
    """The recipe's flags; `precisions` and the help texts are the trainer's own."""
    parser.add_argument("--preset", default="tiny", help=f"model size: {', '.join(PRESETS)}")
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="training data: prepared by prep_data.py, or the reference's hdf5 / TFRecord shards")
    parser.add_argument("--data-format", choices=("auto", *formats.FORMATS), default="auto",
                        help="--data-dir's format (auto: meta.json -> ernie, .hdf5/.h5 -> hdf5, else tfrecord)")
    parser.add_argument("--eval-data", type=Path, default=None,
                        help="the eval set (MLPerf's 10,000 samples) in any format; default: --data-dir's eval split")
    parser.add_argument("--init-checkpoint", type=Path, default=None,
                        help="start from the reference's TF1 checkpoint prefix (model.ckpt-28252); default: random")
    parser.add_argument("--recipe", default=None,
                        help=f"a published MLPerf recipe ({', '.join(recipe.RECIPES)}); explicit flags override it")
    parser.add_argument("--out", type=Path, required=True, help="where mlperf.log, result.json, checkpoints go")
    parser.add_argument("--seq-len", type=int, default=None, help="must match the data (default: the data's)")
    parser.add_argument("--global-batch", type=int, default=32, help="sequences per optimizer step, all workers")
    parser.add_argument("--max-steps", type=int, default=1000, help="stop after this many optimizer steps")
    parser.add_argument("--target-accuracy", type=float, default=0.720,
                        help="stop when masked-LM eval accuracy reaches this (MLPerf: 0.720)")
    parser.add_argument("--optimizer", choices=("adamw", "lamb"), default="adamw", help="LAMB is MLPerf's")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up (default: 1%% of max steps)")
    parser.add_argument("--start-warmup-step", type=int, default=0,
                        help="the step the warm-up starts from (MLPerf's start_warmup_step; may be negative)")
    parser.add_argument("--poly-power", type=float, default=1.0, help="power of the polynomial decay (1: linear)")
    parser.add_argument("--max-samples-termination", type=int, default=None,
                        help="stop after this many training samples (default: --max-steps x --global-batch)")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="not applied to biases and LayerNorms")
    parser.add_argument("--beta1", type=float, default=0.9, help="first-moment decay")
    parser.add_argument("--beta2", type=float, default=0.999, help="second-moment decay")
    parser.add_argument("--eps", type=float, default=1e-6, help="optimizer epsilon")
    parser.add_argument("--clip-grad-norm", type=float, default=1.0, help="global gradient-norm clip; 0: off")
    parser.add_argument("--precision", choices=tuple(precisions), default="auto", help=precision_help)
    parser.add_argument("--dropout", type=float, default=None, help="override the preset's dropout (0: none)")
    parser.add_argument("--eval-every", type=int, default=1000, help="evaluate every N steps, and at the end")
    parser.add_argument("--eval-every-samples", default=None,
                        help="evaluate every N samples instead of --eval-every; 'rules': the MLPerf rules' interval")
    parser.add_argument("--eval-samples", type=int, default=10000, help="eval examples per evaluation, at most")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="checkpoint every N steps, and at the end")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out if any")
    parser.add_argument("--log-every", type=int, default=10, help="tracked_stats every N steps")
    parser.add_argument("--timing-warmup", type=int, default=5, help=timing_warmup_help)
    parser.add_argument("--seed", type=int, default=12345, help="model init, data order and dropout")


def check_recipe(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Preset:
    """The checks that need no data: ranges, and --seq-len against the preset. Returns the preset."""
    if args.recipe is not None:
        try:
            published = recipe.get_recipe(args.recipe)
        except ValueError as exc:
            parser.error(f"--recipe: {exc}")
        for dest, value in published.flags().items():  # a flag left at its default takes the recipe's value
            if getattr(args, dest) == parser.get_default(dest):
                setattr(args, dest, value)
        if args.eval_every_samples is None:
            args.eval_every_samples = "rules"
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
    if args.warmup_steps < 0 or args.start_warmup_step + args.warmup_steps >= args.max_steps:
        parser.error(f"--warmup-steps must be in 0..{args.max_steps - 1 - args.start_warmup_step} (the warm-up ends "
                     f"below --max-steps), got {args.warmup_steps}")
    if args.eval_every_samples == "rules":
        args.eval_every_samples = recipe.eval_interval_samples(args.global_batch)
    elif args.eval_every_samples is not None:
        try:
            args.eval_every_samples = int(args.eval_every_samples)
        except ValueError:
            parser.error(f"--eval-every-samples must be a number of samples or 'rules', got {args.eval_every_samples!r}")
        if args.eval_every_samples < 1:
            parser.error(f"--eval-every-samples must be at least 1, got {args.eval_every_samples}")
    if args.max_samples_termination is not None and args.max_samples_termination < 1:
        parser.error(f"--max-samples-termination must be at least 1, got {args.max_samples_termination}")
    if args.poly_power <= 0:
        parser.error(f"--poly-power must be positive, got {args.poly_power}")
    return preset


def bind_data(parser: argparse.ArgumentParser, args: argparse.Namespace, preset: Preset) -> None:
    """Open --data-dir (and --eval-data), check they fit the preset and each other, and take their seq len and
    max predictions. Sets args.data_format, and args.eval_format (None: the eval split of ernie's own data)."""
    try:
        fmt = formats.detect_format(args.data_dir) if args.data_format == "auto" else args.data_format
        if fmt == "ernie":
            meta = data.read_meta(args.data_dir)
            seq_len, max_predictions, vocab = meta["seq_len"], meta["max_predictions"], meta["vocab_size"]
        else:
            source = formats.open_source(args.data_dir, fmt, seq_len=args.seq_len)
            seq_len, max_predictions, vocab = source.seq_len, source.max_predictions, None
    except data.DataError as exc:
        parser.error(f"--data-dir: {exc}")
    args.data_format = fmt
    if args.seq_len is not None and args.seq_len != seq_len:
        parser.error(f"--seq-len {args.seq_len} differs from the data's {seq_len}: prepare data at that length")
    args.seq_len = seq_len
    if args.seq_len > preset.max_position:
        parser.error(f"the data's seq len {args.seq_len} exceeds preset {preset.name}'s {preset.max_position} positions")
    if vocab is not None and vocab > preset.vocab_size:
        parser.error(f"the data's vocab ({vocab}) is larger than preset {preset.name}'s ({preset.vocab_size})")
    args.max_predictions = max_predictions
    args.eval_format = None
    if args.eval_data is not None:
        try:
            args.eval_format = formats.open_source(args.eval_data, split="eval", seq_len=args.seq_len,
                                                   max_predictions=args.max_predictions).format
        except data.DataError as exc:
            parser.error(f"--eval-data: {exc}")
    elif fmt != "ernie":
        parser.error(f"--eval-data is needed with {fmt} training data: give the eval set (MLPerf's 10,000 samples)")
    if args.init_checkpoint is not None and not (
        Path(str(args.init_checkpoint) + ".index").is_file() or checkpoint_tf1.cache_path(args.init_checkpoint).is_file()
    ):
        parser.error(f"--init-checkpoint: {args.init_checkpoint}.index does not exist (give the checkpoint's prefix, "
                     "e.g. phase1/model.ckpt-28252)")


def conformance(args: argparse.Namespace, eval_samples: int) -> recipe.Conformance:
    """How the run differs from MLPerf's closed BERT (recipe.conformance), from its resolved flags."""
    return recipe.conformance(recipe.RunFacts(
        data_format=args.data_format, seq_len=args.seq_len, max_predictions=args.max_predictions,
        eval_format=args.eval_format, eval_samples=eval_samples, init_checkpoint=args.init_checkpoint is not None,
        preset=args.preset, vocab_size=get_preset(args.preset).vocab_size, optimizer=args.optimizer,
        target_accuracy=args.target_accuracy,
        eval_interval_samples=args.eval_every_samples or args.eval_every * args.global_batch,
        global_batch=args.global_batch,
    ))


def recipe_fingerprint(args: argparse.Namespace) -> dict:
    """What must not change between a run and its resumption: a checkpoint of other settings is refused."""
    return {k: getattr(args, k) for k in ("preset", "global_batch", "seq_len", "seed", "optimizer", "max_steps")}
