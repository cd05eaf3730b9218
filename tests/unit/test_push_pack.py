"""The bundle is packed ahead, in the background, while the hosts answer and list what they have (ernie/run.py)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from ernie.remote import push


def make_workload(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "train.py").write_text("print('train')\n" * 200)
    (root / "weights.bin").write_bytes(os.urandom(64 << 10))  # incompressible: the plain archive
    return root


def counted(bundle: push.Bundle, monkeypatch: pytest.MonkeyPatch, gate: threading.Event | None = None) -> list[str]:
    """The archive builds, by tar mode; with `gate`, each build waits for it (so others arrive meanwhile)."""
    built, tar = [], bundle._tar

    def _tar(mode: str, names: list[str]) -> bytes:
        built.append(mode)
        if gate is not None:
            gate.wait(10)
        return tar(mode, names)

    monkeypatch.setattr(bundle, "_tar", _tar)
    return built


def test_a_push_during_the_pack_ahead_waits_for_it_and_nothing_is_packed_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = push.Bundle.from_directory(make_workload(tmp_path / "w"), extra={"ernie_run.json": b"{}"})
    gate = threading.Event()
    built = counted(bundle, monkeypatch, gate)
    bundle.pack_ahead()
    got: list[list[tuple[str, bytes]]] = []
    pushes = [threading.Thread(target=lambda: got.append(bundle.archives(frozenset(bundle.files)))) for _ in range(3)]
    for t in pushes:
        t.start()
    gate.set()
    for t in pushes:
        t.join(10)
    assert built == ["w:gz", "w"]  # one build of each archive, whoever asked first
    assert len(got) == 3 and all(g is got[0] for g in got)
    assert [flags for flags, _ in got[0]] == ["-xzf", "-xf"]


def test_a_failed_pack_ahead_fails_the_push_that_needs_it(tmp_path: Path) -> None:
    workload = make_workload(tmp_path / "w")
    bundle = push.Bundle.from_directory(workload)
    (workload / "weights.bin").unlink()  # gone between hashing and packing
    bundle.pack_ahead()
    with pytest.raises(FileNotFoundError, match="weights.bin"):
        bundle.archives(frozenset(bundle.files))


def test_a_bundle_over_the_bound_is_not_packed_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = push.Bundle.from_directory(make_workload(tmp_path / "w"))
    started = []
    monkeypatch.setattr(push.threading, "Thread", lambda **kw: started.append(kw))
    monkeypatch.setattr(push, "PACK_AHEAD_MAX", bundle.total_bytes - 1)
    bundle.pack_ahead()
    assert started == [] and bundle._archives == {}
    monkeypatch.setattr(push, "PACK_AHEAD_MAX", bundle.total_bytes)
    with pytest.raises(AttributeError):  # the stand-in above has no start(): at the bound, it is packed ahead
        bundle.pack_ahead()
    assert started[0]["name"] == "pack-ahead"
