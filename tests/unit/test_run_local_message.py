"""`ernie run --local` says nothing of SSH: the local runner opens a shell on this machine, and waits for no
host; an SSH runner still says what it waits for and how long (issue 22)."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

from rich.console import Console

from ernie.inventory import local_inventory
from ernie.run import RunOptions, Timeline, _wait_for_ssh


class _Opens:
    """A connector whose hosts answer at once."""

    def wait(self, host, deadline):  # noqa: ANN001, ANN201 - Connector.wait's signature
        return _Session()


class _Session:
    def close(self) -> None:
        pass


def _waited(inventory, tmp_path: Path) -> tuple[str, list[str]]:  # noqa: ANN001
    buf = io.StringIO()
    timeline = Timeline(tmp_path / "timeline.json", "r1")
    sessions = _wait_for_ssh(_Opens(), inventory, RunOptions(), Console(file=buf, width=120), timeline)
    assert list(sessions) == [h.name for h in inventory.hosts]
    return buf.getvalue(), [s["name"] for s in timeline.steps]


def test_the_local_runner_does_not_claim_to_wait_for_ssh(tmp_path: Path) -> None:
    printed, steps = _waited(local_inventory(), tmp_path)
    assert "SSH" not in printed and "waiting" not in printed
    assert steps == ["wait_ssh"]  # the timeline keeps its step: the report's timeline reads it


def test_an_ssh_runner_still_says_what_it_waits_for(tmp_path: Path) -> None:
    remote = local_inventory().model_copy(update={"cloud": "aws", "stack": "s", "runner": "docker", "image": "img"})
    printed, _ = _waited(remote, tmp_path)
    assert "waiting for SSH on 1 host(s) (at most" in printed
