"""The bundle is packed ahead, while the hosts are still answering and booting (ernie/run.py, execute)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ernie.remote import push


def make_workload(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "train.py").write_text("print('train')\n" * 200)
    (root / "weights.bin").write_bytes(os.urandom(64 << 10))  # incompressible: the plain archive
    return root


def test_pack_all_builds_what_a_first_push_sends_once(tmp_path: Path) -> None:
    bundle = push.Bundle.from_directory(make_workload(tmp_path / "w"), extra={"ernie_run.json": b"{}"})
    bundle.pack_all()
    everything = frozenset(bundle.files)
    packed = bundle._archives[everything]
    assert [flags for flags, _ in packed] == ["-xzf", "-xf"]
    assert bundle.archives(everything) is packed  # the push takes it as it is: nothing packed twice


def test_a_bundle_over_the_bound_is_not_packed_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = push.Bundle.from_directory(make_workload(tmp_path / "w"))
    monkeypatch.setattr(push, "PACK_AHEAD_MAX", bundle.total_bytes - 1)
    bundle.pack_all()
    assert bundle._archives == {}
