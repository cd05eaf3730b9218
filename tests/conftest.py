"""Shared fixtures. Each area keeps its own fixtures in its own module; only what several areas use lives here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from testing.sshhosts import ssh_hosts  # noqa: F401 - namespace SSH hosts (remote runs; the preemption drill)

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


@pytest.fixture
def pulumi_mocks():
    """Pulumi's runtime pointed at fresh ErnieMocks (ernie/mocks.py): realistic ids, IPs and ARNs per resource
    type, invokes such as aws:ec2/getAmi:getAmi and gcp TPU lookups answered. `.resources` records every
    resource declared, with its inputs as the engine sees them (camelCase). Use with `@pulumi.runtime.test`."""
    from ernie import mocks

    return mocks.install(stack="test")
