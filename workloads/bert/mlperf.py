"""MLPerf-format logging (`:::MLLOG {...}` lines) through mlperf-logging, from rank 0 only.

Lines go to OUT/mlperf.log and to stdout: stdout is how ernie streams a remote run's progress, from the
"tracked_stats" lines (metadata.step; value holds loss, samples/s, ...). Keys come from
`mlperf_logging.mllog.constants`; the submission keys say what ran. The division is the run's real
conformance (recipe.conformance): "closed" only for the reference data, checkpoint, eval set and recipe,
"open" otherwise; either way an ernie run is not a reviewed MLPerf submission.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from mlperf_logging.mllog.mllog import MLLogger
from mlperf_logging.mllog import constants

LOG_FILE = "mlperf.log"
TRACKED_STATS = "tracked_stats"


class MLPerfLogger:
    """Writes :::MLLOG lines when `rank` is 0 and nothing otherwise, so every rank can call it."""

    def __init__(self, out_dir: str | os.PathLike, *, rank: int = 0, append: bool = False) -> None:
        self.enabled = rank == 0
        self.path = Path(out_dir) / LOG_FILE
        self._handlers: list[logging.Handler] = []
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        logger = logging.getLogger(f"ernie.mlperf.{id(self)}")  # private: never the shared mllog logger
        logger.propagate = False
        logger.setLevel(logging.INFO)
        self._handlers = [logging.FileHandler(self.path, mode="a" if append else "w"), logging.StreamHandler(sys.stdout)]
        for handler in self._handlers:
            logger.addHandler(handler)
        self._logger = logger
        self._mllog = MLLogger(logger=logger)

    def _emit(self, event_type: str, key: str, value: Any, metadata: dict | None) -> None:
        if self.enabled:
            emit = {"start": self._mllog.start, "end": self._mllog.end, "event": self._mllog.event}[event_type]
            # Two frames (a public method, then this one) lie between the trainer and mllog: skip them so
            # the file/lineno metadata names the trainer's line.
            emit(key=key, value=value, metadata=metadata, stack_offset=3)

    def event(self, key: str, value: Any = None, metadata: dict | None = None) -> None:
        self._emit("event", key, value, metadata)

    def start(self, key: str, value: Any = None, metadata: dict | None = None) -> None:
        self._emit("start", key, value, metadata)

    def end(self, key: str, value: Any = None, metadata: dict | None = None) -> None:
        self._emit("end", key, value, metadata)

    def submission(self, *, platform: str, benchmark: str = constants.BERT, org: str = "ernie",
                   division: str = constants.OPEN) -> None:
        """The submission_* keys and cache_clear, as an MLPerf run opens."""
        if division not in (constants.OPEN, constants.CLOSED):
            raise ValueError(f"division must be {constants.OPEN!r} or {constants.CLOSED!r}, got {division!r}")
        for key, value in (
            (constants.SUBMISSION_BENCHMARK, benchmark),
            (constants.SUBMISSION_ORG, org),
            (constants.SUBMISSION_DIVISION, division),
            (constants.SUBMISSION_STATUS, constants.CLOUD),
            (constants.SUBMISSION_PLATFORM, platform),
        ):
            self._emit("event", key, value, None)
        self._emit("event", constants.CACHE_CLEAR, True, None)

    def open_run(self, args: Any, *, platform: str, accumulation: int, train_size: int | None = None,
                 eval_size: int | None = None, division: str = constants.OPEN) -> None:
        """The opening of a BERT run's log, the same from both trainers: submission and init keys, the
        recipe's hyper-parameters (from the recipe_args.py flags), init_stop, then run_start.

        A size left None is not logged here: the rules start the clock before the data is read, so a
        trainer that reads it after run_start logs it then (`samples`)."""
        self.submission(platform=platform, division=division)
        self.start(constants.INIT_START)
        sizes = [(k, v) for k, v in ((constants.TRAIN_SAMPLES, train_size), (constants.EVAL_SAMPLES, eval_size))
                 if v is not None]
        for key, value in (
            (constants.SEED, args.seed),
            (constants.GLOBAL_BATCH_SIZE, args.global_batch),
            (constants.GRADIENT_ACCUMULATION_STEPS, accumulation),
            (constants.MAX_SEQUENCE_LENGTH, args.seq_len),
            ("max_predictions_per_seq", args.max_predictions),
            *sizes,
            (constants.OPT_NAME, args.optimizer),
            (constants.OPT_BASE_LR, args.lr),
            (constants.OPT_LR_WARMUP_STEPS, args.warmup_steps),
            (constants.OPT_LR_TRAINING_STEPS, args.max_steps),
            ("num_warmup_steps", args.warmup_steps),
            ("start_warmup_step", getattr(args, "start_warmup_step", 0)),
            (constants.OPT_GRADIENT_CLIP_NORM, args.clip_grad_norm),
        ):
            self.event(key, value)
        prefix = "opt_lamb" if args.optimizer == "lamb" else "opt_adamw"
        for suffix, value in (("beta_1", args.beta1), ("beta_2", args.beta2), ("epsilon", args.eps)):
            self.event(f"{prefix}_{suffix}", value)
        decay_key = constants.OPT_LAMB_WEIGHT_DECAY if args.optimizer == "lamb" else constants.OPT_ADAMW_WEIGHT_DECAY
        self.event(decay_key, args.weight_decay)
        self.end(constants.INIT_STOP)
        self.start(constants.RUN_START)

    def samples(self, *, train: int | None = None, eval: int | None = None) -> None:
        """train_samples (the samples trained on, logged when the run ends: the rules' samples to converge)
        and eval_samples (logged once the eval set is read), when open_run did not log them."""
        if train is not None:
            self.event(constants.TRAIN_SAMPLES, train)
        if eval is not None:
            self.event(constants.EVAL_SAMPLES, eval)

    def tracked_stats(self, step: int, **values: float) -> None:
        """Progress for ernie's stream: the step and whatever figures the trainer tracks."""
        self._emit("event", TRACKED_STATS, values, {"step": step})

    def close(self) -> None:
        for handler in self._handlers:
            handler.flush()
            handler.close()
            self._logger.removeHandler(handler)
        self._handlers = []
