"""The results database (`results/ernie.db`, SQLite): every run ever indexed, so runs accumulate.

A run is re-read only when its files changed: each row keeps a fingerprint of the run directory (every file's
relative path, size and modification time). A new derivation (SCHEMA_VERSION) re-reads every run; rows of runs
whose directories were since deleted are kept, so their figures and provenance stay reportable.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path

from ernie.errors import ErnieError
from ernie.results.figures import RunSummary, summarize
from ernie.results.rundir import read_run
from ernie.rundir import is_run_dir

DB_NAME = "ernie.db"
#: Bump when RunSummary or a derivation changes: every run is then read again from its files.
SCHEMA_VERSION = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    path        TEXT NOT NULL,
    workload    TEXT,
    cloud       TEXT,
    accelerator TEXT,
    framework   TEXT,
    status      TEXT NOT NULL,
    created     TEXT,
    summary     TEXT NOT NULL
)
"""


class ResultsIndex:
    """The SQLite index of the run directories under one results root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db_path = root / DB_NAME

    def _connect(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.db_path)
        except sqlite3.Error as exc:
            raise ErnieError(f"cannot open the results database {self.db_path}: {exc}") from exc
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            db.executescript(f"DROP TABLE IF EXISTS runs; PRAGMA user_version = {SCHEMA_VERSION};")
        db.execute(_SCHEMA)
        return db

    def run_dirs(self) -> list[Path]:
        """Every run directory under the root, oldest name first (run ids start with their timestamp)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if not p.name.startswith(".") and is_run_dir(p))

    def refresh(self, dirs: Iterable[Path]) -> int:
        """Index the run directories `dirs`, reading only those that changed; returns how many were read."""
        with closing(self._connect()) as db, db:
            known = dict(db.execute("SELECT run_id, fingerprint FROM runs"))
            changed = [(path, fp) for path in dirs if known.get(path.name) != (fp := fingerprint(path))]
            for path, fp in changed:
                s = summarize(read_run(path))
                db.execute(
                    "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (s.run_id, fp, str(path), s.workload, s.cloud, s.accelerator, s.framework,
                     s.status, s.created, s.to_json()),
                )
        return len(changed)

    def summaries(self, run_ids: list[str] | None = None) -> list[RunSummary]:
        """The indexed runs (all, or those named, in the order named), oldest first."""
        with closing(self._connect()) as db:
            if run_ids is None:
                rows = db.execute("SELECT summary FROM runs ORDER BY created, run_id").fetchall()
                return [RunSummary.from_json(r[0]) for r in rows]
            found = {}
            for chunk in _chunks(run_ids, 500):  # SQLite limits the number of bound parameters
                marks = ",".join("?" * len(chunk))
                found.update(db.execute(f"SELECT run_id, summary FROM runs WHERE run_id IN ({marks})", chunk))
        missing = [r for r in run_ids if r not in found]
        if missing:
            raise ErnieError(
                f"no run {', '.join(missing)} under {self.root}: "
                "pass a run id listed by `ernie report --all`, or --results DIR where it was collected"
            )
        return [RunSummary.from_json(found[r]) for r in run_ids]


def fingerprint(path: Path) -> str:
    """A digest of every file's relative path, size and mtime under `path`: it changes when any file does."""
    h = hashlib.sha256()
    for entry in sorted(_walk(path), key=lambda e: e[0]):
        h.update(f"{entry[0]}\0{entry[1]}\0{entry[2]}\n".encode())
    return h.hexdigest()


def _walk(path: Path, prefix: str = "") -> Iterator[tuple[str, int, int]]:
    with os.scandir(path) as it:
        for e in it:
            rel = prefix + e.name
            if e.is_dir(follow_symlinks=False):
                yield from _walk(Path(e.path), rel + "/")
            elif e.is_file(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                yield rel, st.st_size, st.st_mtime_ns


def _chunks(items: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
