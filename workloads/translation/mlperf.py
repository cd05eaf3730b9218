"""MLPerf-format logging (`:::MLLOG {...}` lines) through mlperf-logging, written by worker 0 only.

Lines go to OUT/mlperf.log and to stdout, where ernie streams progress from the "tracked_stats"
lines (metadata.step = fairseq's num_updates). Keys come from `mlperf_logging.mllog.constants`.
"""

from __future__ import annotations

import ast
import logging
import sys
from pathlib import Path
from typing import Any

from mlperf_logging.mllog import constants
from mlperf_logging.mllog.mllog import MLLogger

from recipes import Recipe

LOG_FILE = "mlperf.log"
TRACKED_STATS = "tracked_stats"


def eval_accuracy(recipe: Recipe, bleu: float) -> float:
    """BLEU as the log carries it: MLPerf's transformer rules want a fraction (target 0.25), so the MLPerf
    recipe logs BLEU / 100; the other recipes log BLEU points, as result.json's `eval` holds them."""
    return bleu / 100.0 if recipe.mlperf else bleu


def mllog_unit(recipe: Recipe) -> str:
    """What eval_accuracy in mlperf.log is measured in (result.json's `eval.mllog_unit`)."""
    return "fraction" if recipe.mlperf else "points"


class MLPerfLog:
    """Writes :::MLLOG lines when `enabled`, nothing otherwise, so every worker can call it."""

    def __init__(self, out_dir: Path, *, enabled: bool) -> None:
        self.enabled = enabled
        self._handlers: list[logging.Handler] = []
        if not enabled:
            return
        self._logger = logging.getLogger(f"translation.mlperf.{id(self)}")  # never the shared mllog logger
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._handlers = [logging.FileHandler(out_dir / LOG_FILE, mode="w"), logging.StreamHandler(sys.stdout)]
        for handler in self._handlers:
            self._logger.addHandler(handler)
        self._mllog = MLLogger(logger=self._logger, default_stack_offset=2)

    def event(self, key: str, value: Any = None, metadata: dict | None = None) -> None:
        if self.enabled:
            self._mllog.event(key=key, value=value, metadata=metadata)

    def start(self, key: str, value: Any = None, metadata: dict | None = None) -> None:
        if self.enabled:
            self._mllog.start(key=key, value=value, metadata=metadata)

    def end(self, key: str, value: Any = None, metadata: dict | None = None) -> None:
        if self.enabled:
            self._mllog.end(key=key, value=value, metadata=metadata)

    def submission(self, benchmark: str, platform: str) -> None:
        """The submission_* keys and cache_clear that open an MLPerf log (division open: not reviewed).

        `benchmark` is MLPerf's name only for a run of MLPerf's own task (Recipe.benchmark); anything else
        is logged under its own name, so that nothing reading the log mistakes it for an MLPerf result.
        """
        for key, value in (
            (constants.SUBMISSION_BENCHMARK, benchmark),
            (constants.SUBMISSION_ORG, "ernie"),
            (constants.SUBMISSION_DIVISION, constants.OPEN),
            (constants.SUBMISSION_STATUS, constants.CLOUD),
            (constants.SUBMISSION_PLATFORM, platform),
            (constants.CACHE_CLEAR, True),
        ):
            self.event(key, value)

    def hyperparameters(self, recipe: Recipe, *, global_batch: int, update_freq: int, seed: int,
                        pairs: dict[str, int]) -> None:
        """The keys MLPerf's transformer rules ask for (compliance_checker training_0.7.0/closed_transformer.yaml
        and common.yaml), read from the recipe's fairseq flags; a flag the recipe leaves to fairseq's
        default is logged with that default."""
        beta_1, beta_2 = ast.literal_eval(recipe.flag("--adam-betas") or "(0.9, 0.999)")
        for key, value, metadata in (
            (constants.GLOBAL_BATCH_SIZE, global_batch, {"unit": "tokens"}),
            (constants.GRADIENT_ACCUMULATION_STEPS, update_freq, None),
            (constants.SEED, seed, None),
            (constants.OPT_NAME, recipe.flag("--optimizer"), None),
            (constants.OPT_BASE_LR, float(recipe.flag("--lr") or 0.0), None),
            (constants.OPT_LR_WARMUP_STEPS, int(recipe.flag("--warmup-updates") or 0), None),
            (constants.OPT_ADAM_BETA_1, beta_1, None),
            (constants.OPT_ADAM_BETA_2, beta_2, None),
            (constants.OPT_ADAM_EPSILON, float(recipe.flag("--adam-eps") or 1e-8), None),
            # Batches are by tokens; the longest training pair the run keeps, and how longer ones are handled.
            (constants.MAX_SEQUENCE_LENGTH, recipe.max_train_pieces or int(recipe.flag("--max-target-positions") or 1024),
             {"method": "discard"}),
            (constants.TRAIN_SAMPLES, pairs.get("train"), None),
            (constants.EVAL_SAMPLES, pairs.get(recipe.bleu_subset), None),
        ):
            self.event(key, value, metadata)

    def tracked_stats(self, step: int, **values: float) -> None:
        if self.enabled:  # straight to mllog, so the line's file/lineno name our caller
            self._mllog.event(key=TRACKED_STATS, value=values, metadata={"step": step})

    def close(self) -> None:
        for handler in self._handlers:
            handler.flush()
            handler.close()
            self._logger.removeHandler(handler)
        self._handlers = []
