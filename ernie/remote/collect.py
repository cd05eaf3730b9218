"""Bring a worker's output home, resumably, and prove what arrived.

The host lists its output files with sha256 and size. A file already here with the same digest is
skipped; a partly fetched one (`NAME.part`) is resumed from its length; every fetched file is verified
against the host's digest before it takes its final name. So a second collect fetches only what is
missing or changed, and an interrupted one loses nothing.

What a host lists is untrusted: a workload running as the SSH user can make it answer anything. Every
name goes through `ernie.names.path_under` before it becomes a local path; one that would leave the
host's directory (`../x`, `/abs`, through a symbolic link already there) is refused, recorded with the
reason, and never written, while the host's other files are collected as usual.

Large outputs that several workers hold alike (the same sha256: a checkpoint every data-parallel worker
saves, say) cross the user's link once: the first host's collect fetches the content, the others wait for
it and take a verified local copy (`SharedFetches`). What each host's manifest lists does not change.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shlex
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ernie.names import UnsafeName, path_under
from ernie.remote.connect import RemoteError, Session
from ernie.remote.layout import Layout
from ernie.rundir import EXIT_CODE, STDERR_LOG, STDOUT_LOG

RUNNER_FILES = (STDOUT_LOG, STDERR_LOG, EXIT_CODE)  # always collected, whatever the globs say
# Between the sizes and the digests: an entry of its own that starts with `/`, which neither a size entry
# ("SIZE NAME") nor a name find prints with %P can be, so no file name can be taken for it.
_SEPARATOR = "/ernie-digests"
_SIZE = re.compile(r"[0-9]{1,20}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
    refused: dict[str, str] = field(default_factory=dict)  # name -> why it was not written
    shared_files: int = 0  # large files taken from another host's fetch of the same content, not fetched


LARGE_OUTPUT = 1 << 20  # from this size a content several hosts hold is fetched once


class SharedFetches:
    """One run's large outputs by sha256, across its hosts' collects: the first to need a content fetches it,
    the others wait for that fetch and copy its verified result."""

    def __init__(self, wait_s: float = 3600.0) -> None:
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._fetches: dict[str, tuple[threading.Event, list[Path]]] = {}

    def claim(self, digest: str) -> tuple[bool, threading.Event, list[Path]]:
        """(first, done, where): `first` fetches and then appends the local path to `where` and sets `done`."""
        with self._lock:
            first = digest not in self._fetches
            if first:
                self._fetches[digest] = (threading.Event(), [])
            return (first, *self._fetches[digest])


def wanted(name: str, globs: tuple[str, ...]) -> bool:
    """Whether a file matches the workload's collect globs (`**/` also matches no directory at all)."""
    return name in RUNNER_FILES or any(
        fnmatch.fnmatchcase(name, g) or (g.startswith("**/") and fnmatch.fnmatchcase(name, g[3:])) for g in globs)


def remote_files(s: Session, layout: Layout) -> tuple[dict[str, RemoteFile], dict[str, str]]:
    """Every finished file under the host's output directory, with size and sha256; and the listing
    entries that could not be read (entry -> why).

    Entries end in NUL and `sha256sum -z` leaves names unescaped, so any file name (newline, backslash) is
    listed as it is (GNU find; coreutils 8.30 or later, as on every Ubuntu image ernie's stacks use).
    """
    files = "find . -type f ! -name '*.tmp'"
    listing = s.check(
        f"cd {shlex.quote(layout.output)} && {files} -printf '%s %P\\0' && printf '%s\\0' {_SEPARATOR} && "
        f"{files} -print0 | xargs -0 -r sha256sum -z --", "listing the output", timeout=s.timeouts.command)
    entries = listing.split("\0")
    if _SEPARATOR not in entries:
        raise RemoteError(f"{s.host.name}: the output listing lacks its digests (is GNU find there?)")
    at = entries.index(_SEPARATOR)
    sizes, unreadable = {}, {}
    for entry in filter(None, entries[:at]):
        size, _, name = entry.partition(" ")
        if _SIZE.fullmatch(size) and name:
            sizes[name] = int(size)
        else:
            unreadable[entry] = "not a 'SIZE NAME' entry in the host's listing"
    found = {}
    for entry in filter(None, entries[at + 1:]):
        digest, _, name = entry.partition("  ")
        if not _SHA256.fullmatch(digest) or not name.startswith("./"):
            unreadable[entry] = "not a 'SHA256  ./NAME' entry in the host's listing"
            continue
        name = name.removeprefix("./")
        if name in sizes:  # a file that appeared between the two listings waits for the next collect
            found[name] = RemoteFile(name=name, size=sizes[name], sha256=digest)
    return found, unreadable


def sha256_file(path: Path) -> str:
    """The driver's one file digest (workloads and lambda_layers/, which may not import ernie, call
    hashlib.file_digest themselves)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def collect_host(s: Session, layout: Layout, dest: Path, globs: tuple[str, ...],
                 shared: SharedFetches | None = None) -> Collected:
    """Fetch the host's output files into `dest`, skipping those already here and verified.

    A name that cannot be written under `dest` is refused (Collected.refused), whatever the globs say.
    With `shared` (one per run), a large content another host's collect fetches is copied, not fetched.
    """
    found, refused = remote_files(s, layout)
    files, fetched_files, fetched_bytes, shared_files = {}, 0, 0, 0
    for rf in found.values():
        try:
            local, part = _local_paths(dest, rf.name)
        except UnsafeName as exc:
            refused[rf.name] = str(exc)
            continue
        if not wanted(rf.name, globs):
            continue
        if not (local.is_file() and sha256_file(local) == rf.sha256):
            remote = f"{layout.output}/{rf.name}"
            if shared is None or rf.size < LARGE_OUTPUT:
                fetched_bytes += _fetch_verified(s, remote, local, part, rf)
                fetched_files += 1
            else:
                fetched = _fetch_or_share(s, remote, local, part, rf, shared)
                fetched_bytes += fetched or 0
                fetched_files += fetched is not None
                shared_files += fetched is None
        files[rf.name] = {"size": rf.size, "sha256": rf.sha256}
    return Collected(host=s.host.name, files=files, fetched_files=fetched_files, fetched_bytes=fetched_bytes,
                     refused=refused, shared_files=shared_files)


def _fetch_or_share(s: Session, remote: str, local: Path, part: Path, rf: RemoteFile,
                    shared: SharedFetches) -> int | None:
    """Bytes fetched; None when another host's fetch of the same content became `local` (verified).

    The first host to claim a content fetches it at once, so a host waiting here waits only for a fetch
    under way, never for another wait: no two hosts can wait for each other.
    """
    first, done, where = shared.claim(rf.sha256)
    if first:
        try:
            fetched = _fetch_verified(s, remote, local, part, rf)
            where.append(local)
            return fetched
        finally:
            done.set()  # a failed fetch leaves `where` empty: the others fetch for themselves
    if done.wait(shared.wait_s) and where:
        local.parent.mkdir(parents=True, exist_ok=True)
        part.unlink(missing_ok=True)
        try:
            os.link(where[0], part)  # the same content on the same disk: no second copy of a checkpoint
        except OSError:
            shutil.copyfile(where[0], part)
        if sha256_file(part) == rf.sha256:
            part.replace(local)
            return None
        part.unlink()  # changed here since it was fetched: fetch it after all
    return _fetch_verified(s, remote, local, part, rf)


def _local_paths(dest: Path, name: str) -> tuple[Path, Path]:
    """Where a host's file goes under `dest`, and its `.part`; UnsafeName when either would lead elsewhere."""
    local = path_under(dest, name)
    part = path_under(dest, name + ".part")
    if local.is_dir():
        raise UnsafeName(f"{name} is a directory in {dest}")
    return local, part


def _fetch_verified(s: Session, remote: str, local: Path, part: Path, rf: RemoteFile) -> int:
    """Resume or start `part`, verify it, then rename it into place. Returns the bytes fetched."""
    local.parent.mkdir(parents=True, exist_ok=True)
    fetched = 0
    for _ in range(2):  # a resumed part that does not verify is fetched once more from scratch
        offset = part.stat().st_size if part.exists() else 0
        if offset > rf.size:
            part.unlink()
            offset = 0
        # O_NOFOLLOW: a link put in its place since it was checked is refused, not written through.
        with os.fdopen(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644), "ab") as f:
            fetched += s.fetch(remote, f, offset)
        if sha256_file(part) == rf.sha256:
            part.replace(local)
            return fetched
        part.unlink()
    raise RemoteError(f"{s.host.name}: {rf.name!r} does not match its sha256 after fetching it twice")
