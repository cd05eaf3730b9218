"""Bring a worker's output home, resumably, and prove what arrived.

The host lists its output files with sha256 and size. A file already here with the same digest is
skipped; a partly fetched one (`NAME.part`) is resumed from its length; every fetched file is verified
against the host's digest before it takes its final name. So a second collect fetches only what is
missing or changed, and an interrupted one loses nothing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path

from ernie.remote.connect import RemoteError, Session
from ernie.remote.layout import Layout

RUNNER_FILES = ("stdout.log", "stderr.log", "exit_code")  # always collected, whatever the globs say
_SEPARATOR = "--ernie-digests--"


@dataclass(frozen=True)
class RemoteFile:
    name: str  # relative to $ERNIE_OUTPUT_DIR, POSIX
    size: int
    sha256: str


@dataclass(frozen=True)
class Collected:
    """One host's collection."""

    host: str
    files: dict[str, dict[str, int | str]]  # name -> {"size", "sha256"}, as in manifest.json
    fetched_files: int
    fetched_bytes: int


def wanted(name: str, globs: tuple[str, ...]) -> bool:
    """Whether a file matches the workload's collect globs (`**/` also matches no directory at all)."""
    return name in RUNNER_FILES or any(
        fnmatch.fnmatchcase(name, g) or (g.startswith("**/") and fnmatch.fnmatchcase(name, g[3:])) for g in globs)


def remote_files(s: Session, layout: Layout) -> dict[str, RemoteFile]:
    """Every finished file under the host's output directory, with size and sha256.

    Entries end in NUL and `sha256sum -z` leaves names unescaped, so any file name (newline, backslash) is
    listed as it is (GNU find; coreutils 8.30 or later, as on every Ubuntu image ernie's stacks use).
    """
    files = "find . -type f ! -name '*.tmp'"
    listing = s.check(
        f"cd {shlex.quote(layout.output)} && {files} -printf '%s %P\\0' && printf '%s\\0' {_SEPARATOR} && "
        f"{files} -print0 | xargs -0 -r sha256sum -z --", "listing the output", timeout=s.timeouts.command)
    sizes_part, _, digests_part = listing.partition(f"{_SEPARATOR}\0")
    sizes = dict(reversed(entry.split(" ", 1)) for entry in sizes_part.split("\0") if entry)
    found = {}
    for entry in digests_part.split("\0"):
        digest, _, name = entry.partition("  ")
        name = name.removeprefix("./")
        if name in sizes:  # a file that appeared between the two listings waits for the next collect
            found[name] = RemoteFile(name=name, size=int(sizes[name]), sha256=digest)
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def collect_host(s: Session, layout: Layout, dest: Path, globs: tuple[str, ...]) -> Collected:
    """Fetch the host's output files into `dest`, skipping those already here and verified."""
    files, fetched_files, fetched_bytes = {}, 0, 0
    for rf in remote_files(s, layout).values():
        if not wanted(rf.name, globs):
            continue
        local = dest / rf.name
        if not (local.is_file() and sha256_file(local) == rf.sha256):
            fetched_bytes += _fetch_verified(s, f"{layout.output}/{rf.name}", local, rf)
            fetched_files += 1
        files[rf.name] = {"size": rf.size, "sha256": rf.sha256}
    return Collected(host=s.host.name, files=files, fetched_files=fetched_files, fetched_bytes=fetched_bytes)


def _fetch_verified(s: Session, remote: str, local: Path, rf: RemoteFile) -> int:
    """Resume or start `local.part`, verify it, then rename it into place. Returns the bytes fetched."""
    local.parent.mkdir(parents=True, exist_ok=True)
    part = local.with_name(local.name + ".part")
    fetched = 0
    for _ in range(2):  # a resumed part that does not verify is fetched once more from scratch
        offset = part.stat().st_size if part.exists() else 0
        if offset > rf.size:
            part.unlink()
            offset = 0
        with part.open("ab") as f:
            fetched += s.fetch(remote, f, offset)
        if sha256_file(part) == rf.sha256:
            part.replace(local)
            return fetched
        part.unlink()
    raise RemoteError(f"{s.host.name}: {rf.name} does not match its sha256 after fetching it twice")
