"""What the three BERT trainers share around their framework's step: the eval set, the MLPerf timeline of
the training loop, and result.json.

tf_pretrain.py, jax_pretrain.py and train_torch.py differ in how a step runs; what a step is part of does
not differ: the eval set's size and the run's MLPerf standing come from the shards' headers before
run_start, the loop alternates blocks and evaluations as the rules lay them out, and the run ends with
train_samples, run_stop and result.json. Each of those is written here once. Imports no framework.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import numpy as np
from mlperf_logging.mllog import constants as mlc

import data
import formats
import recipe
import results
from mlperf import MLPerfLogger
from presets import Preset, get_preset
from recipe_args import conformance

CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2
TIMINGS = "step_times.tsv"


def fail(prog: str, message: str) -> NoReturn:
    """Stop the run with `prog: error: message`, the form of argparse's errors."""
    raise SystemExit(f"{prog}: error: {message}")


def recipe_preset(args: argparse.Namespace) -> Preset:
    """--preset, with --dropout in place of its own when given."""
    preset = get_preset(args.preset)
    return preset if args.dropout is None else dataclasses.replace(preset, dropout=args.dropout)


def last_step(args: argparse.Namespace) -> int:
    """The step the run stops at: --max-steps, or fewer where --max-samples-termination says so."""
    if args.max_samples_termination is None:
        return args.max_steps
    return min(args.max_steps, -(-args.max_samples_termination // args.global_batch))


def resume_problem(args: argparse.Namespace, checkpoint: object, step: int) -> str | None:
    """Why a checkpoint at `step` leaves this run nothing to do (it would time no step), or None."""
    last = last_step(args)
    return f"--resume: {checkpoint} already holds all {last} steps" if step >= last else None


# ---------------------------------------------------------------------------------------------- the eval set


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """The eval set as its shards' headers describe it (no example read yet), and the run's MLPerf standing,
    which depends on its size."""

    source: formats.Source
    count: int
    standing: recipe.Conformance


def open_eval(args: argparse.Namespace, prog: str) -> EvalSet:
    """--eval-data (or --data-dir's eval split), opened before run_start: the rules' clock starts before
    the data is touched, so only the headers are read here."""
    try:
        source = formats.open_source(args.eval_data or args.data_dir, "auto" if args.eval_data else args.data_format,
                                     split="eval", seq_len=args.seq_len, max_predictions=args.max_predictions)
        count = min(args.eval_samples, source.examples)
    except data.DataError as exc:
        fail(prog, f"--eval-data: {exc}")
    return EvalSet(source=source, count=count, standing=conformance(args, count))


def read_eval(args: argparse.Namespace, eval_set: EvalSet, vocab_size: int, prog: str) -> dict[str, np.ndarray]:
    """The eval examples (after run_start), checked against the model's vocabulary."""
    try:
        arrays = formats.read_examples(eval_set.source, limit=eval_set.count)
        formats.check_vocab(arrays, vocab_size=vocab_size, cls_id=data.CLS_ID, where=str(args.eval_data or args.data_dir))
    except data.DataError as exc:
        fail(prog, f"--eval-data: {exc}")
    return arrays


def standing_lines(standing: recipe.Conformance, resume_from: object | None) -> str:
    """The config block's closing lines: the MLPerf division, what differs from closed, the resumed checkpoint."""
    return (f"\n  MLPerf {standing.division} division"
            + "".join(f"\n    open: {why}" for why in standing.differences)
            + (f"\n  resuming from {resume_from}" if resume_from else ""))


# ---------------------------------------------------------------------------------------------- the loop


class Timeline:
    """A run's MLPerf log from run_start to run_stop, and its tallies: the step reached, each step's time and
    input wait, the last eval accuracy, the time to target. A block runs from one evaluation to the next; an
    evaluation is due every --eval-every steps (or --eval-every-samples samples) and at the last step."""

    def __init__(self, mllog: MLPerfLogger, args: argparse.Namespace, start_step: int) -> None:
        self.mllog, self.args = mllog, args
        self.step = start_step
        self.last_step = last_step(args)
        self.step_times: list[float] = []
        self.input_waits: list[float] = []
        self.accuracy: float | None = None
        self.time_to_target: float | None = None
        self.run_start = self.train_time = 0.0

    def open(self, *, resumed: bool, platform: str, eval_size: int, accumulation: int, division: str) -> None:
        """The log's opening (a resumed run appends the step it resumed at instead), then the clock starts."""
        if resumed:
            self.mllog.event(mlc.INIT_CHECKPOINT_STEP, self.step)
        else:
            self.mllog.open_run(self.args, platform=platform, eval_size=eval_size, accumulation=accumulation,
                                division=division)
        self.run_start = time.time()

    @property
    def samples(self) -> int:
        return self.step * self.args.global_batch

    @property
    def running(self) -> bool:
        return self.step < self.last_step

    def evaluate(self, epoch: int, evaluate: Callable[[], float]) -> float:
        """One evaluation, logged at `epoch` (the samples trained so far; 0 for the initial checkpoint's)."""
        self.mllog.start(mlc.EVAL_START, metadata={"epoch_num": epoch})
        self.accuracy = evaluate()
        self.mllog.event(mlc.EVAL_ACCURACY, self.accuracy, metadata={"epoch_num": epoch})
        self.mllog.end(mlc.EVAL_STOP, metadata={"epoch_num": epoch})
        return self.accuracy

    def begin_block(self) -> None:
        self.mllog.start(mlc.BLOCK_START, metadata={"samples_count": self.samples})

    def record(self, started: float, fed: float | None = None) -> None:
        """A step done: it began at `started` (perf_counter) and had its batch at `fed`, when measured."""
        self.step += 1
        self.step_times.append(time.perf_counter() - started)
        if fed is not None:
            self.input_waits.append(fed - started)

    def check_loss(self, loss: float, prog: str) -> None:
        """Stop (run_stop aborted) on a loss that is not a number: nothing after it could be."""
        if not math.isfinite(loss):
            self.mllog.end(mlc.RUN_STOP, metadata={"status": mlc.ABORTED})
            fail(prog, f"step {self.step}: the loss is {loss}; lower --lr or check the data")

    def log_due(self) -> bool:
        return self.step % self.args.log_every == 0 or self.step == self.last_step

    def tracked_stats(self, **values: float) -> None:
        """`values`, then the recent steps' samples/s and, where measured, their share spent waiting for input."""
        every = self.args.log_every
        recent = self.step_times[-every:]
        values["samples_per_s"] = round(len(recent) * self.args.global_batch / sum(recent), 2)
        if self.input_waits:
            values["input_wait"] = round(sum(self.input_waits[-every:]) / sum(recent), 4)
        self.mllog.tracked_stats(self.step, **values)

    def eval_due(self) -> bool:
        args = self.args
        if self.step == self.last_step:
            return True
        if args.eval_every_samples:
            return recipe.eval_due(self.samples - args.global_batch, self.samples, args.eval_every_samples)
        return self.step % args.eval_every == 0

    def end_of_step(self, evaluate: Callable[[], float]) -> bool:
        """Close the block and evaluate where due; True when the target is reached (the run stops there)."""
        if not self.eval_due():
            return False
        samples = self.samples
        self.mllog.end(mlc.BLOCK_STOP, metadata={"samples_count": samples})
        reached = self.evaluate(samples, evaluate) >= self.args.target_accuracy
        if reached:
            self.time_to_target = time.time() - self.run_start
        elif self.running:
            self.begin_block()
        return reached

    def stop(self) -> None:
        """train_samples (the samples to converge, or trained if it did not) and run_stop."""
        self.mllog.samples(train=self.samples)
        self.mllog.end(mlc.RUN_STOP, metadata={"status": mlc.SUCCESS if self.time_to_target is not None else mlc.ABORTED})
        self.train_time = time.time() - self.run_start

    @property
    def warmup(self) -> int:
        """The steps left out of the throughput figures: --timing-warmup, leaving at least one timed."""
        return min(self.args.timing_warmup, len(self.step_times) - 1)


# ---------------------------------------------------------------------------------------------- the results


def write_result(args: argparse.Namespace, standing: recipe.Conformance, timeline: Timeline, **fields) -> dict:
    """result.json (results.write_result) from the recipe's flags, the MLPerf standing and how the run went;
    `fields`: the trainer's own (framework, preset, params, device, chips, settings, versions...)."""
    throughput = results.summarize_steps(timeline.step_times, warmup_steps=timeline.warmup,
                                         global_batch_size=args.global_batch, seq_len=args.seq_len)
    return results.write_result(
        args.out / "result.json",
        global_batch_size=args.global_batch, seq_len=args.seq_len, max_predictions=args.max_predictions,
        steps=timeline.step, throughput=throughput, eval_value=timeline.accuracy, eval_target=args.target_accuracy,
        time_to_target_s=timeline.time_to_target, train_time_s=timeline.train_time,
        command=shlex.join([Path(sys.executable).name, *sys.argv]),
        mlperf={"division": standing.division, "differences": list(standing.differences), "ruleset": recipe.RULESET},
        **fields,
    )


def write_timings(out: Path, timeline: Timeline) -> float:
    """step_times.tsv (seconds per step, seconds waited for its input), for the frameworks benchmark's
    input-wait share; returns that share over the timed steps."""
    (out / TIMINGS).write_text("".join(f"{s:.6f}\t{w:.6f}\n" for s, w in zip(timeline.step_times, timeline.input_waits)))
    warmup = timeline.warmup
    return sum(timeline.input_waits[warmup:]) / sum(timeline.step_times[warmup:])


def summary(workload: str, timeline: Timeline, result: dict, wait_share: float | None = None) -> str:
    """The run's last printed line: steps, time, throughput, input wait (where measured), accuracy, MFU."""
    wait = f", input wait {wait_share:.2%}" if wait_share is not None else ""
    return (f"{workload}: {timeline.step} steps in {timeline.train_time:.1f}s, {result['samples_per_s']} samples/s "
            f"(p50 {result['step_time_ms_p50']} ms/step){wait}, eval accuracy {timeline.accuracy:.4f}, "
            f"mfu {result['mfu']}")
