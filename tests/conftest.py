"""Shared fixtures. Each area keeps its own fixtures in its own module; only what several areas use lives here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture(scope="session")
def ernie_cmd() -> list[str]:
    """The `ernie` console script as a user runs it (installed by `make install`)."""
    exe = VENV_BIN / "ernie"
    if not exe.exists():
        raise RuntimeError(f"{exe} is missing: run `make install` first")
    return [str(exe)]


@pytest.fixture(autouse=True, scope="session")
def _offline_hub() -> None:
    """No model or data set may be downloaded at run time: make any hub access fail fast."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
