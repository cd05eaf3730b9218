"""MLPerf-format logging (`:::MLLOG {...}` lines) through mlperf-logging, written by worker 0 only.

Lines go to OUT/mlperf.log and to stdout, where ernie streams progress from the "tracked_stats"
lines (metadata.step = fairseq's num_updates). Keys come from `mlperf_logging.mllog.constants`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from mlperf_logging.mllog import constants
from mlperf_logging.mllog.mllog import MLLogger

LOG_FILE = "mlperf.log"
TRACKED_STATS = "tracked_stats"


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

    def submission(self, platform: str) -> None:
        """The submission_* keys and cache_clear that open an MLPerf log (division open: not reviewed)."""
        for key, value in (
            (constants.SUBMISSION_BENCHMARK, constants.TRANSFORMER),
            (constants.SUBMISSION_ORG, "ernie"),
            (constants.SUBMISSION_DIVISION, constants.OPEN),
            (constants.SUBMISSION_STATUS, constants.CLOUD),
            (constants.SUBMISSION_PLATFORM, platform),
            (constants.CACHE_CLEAR, True),
        ):
            self.event(key, value)

    def tracked_stats(self, step: int, **values: float) -> None:
        if self.enabled:  # straight to mllog, so the line's file/lineno name our caller
            self._mllog.event(key=TRACKED_STATS, value=values, metadata={"step": step})

    def close(self) -> None:
        for handler in self._handlers:
            handler.flush()
            handler.close()
            self._logger.removeHandler(handler)
        self._handlers = []
