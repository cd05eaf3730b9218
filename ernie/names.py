"""Names that become paths or script text, checked in one place.

Patterns are matched whole (`fullmatch`): `re.match` with `$` also accepts a trailing newline, which would
split a comment line of a generated `run.sh` into a command. A file name that comes from elsewhere (a host's
listing, a manifest someone could edit) is resolved under its directory by `path_under` or refused: it
must be relative, with no empty, `.` or `..` part and no NUL, and no part of it already on disk may be a
symbolic link (which would carry a write, or a read, somewhere else).
"""

from __future__ import annotations

import re
from pathlib import Path

from catalog.inventory import HOST_NAME  # noqa: F401 - a host's name, re-exported: the inventory's schema checks it

# A workload's name becomes a directory on every host and part of the run id.
WORKLOAD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# `YYYYmmdd-HHMMSS-<workload>-<4 hex>`, as ernie.rundir.new_run_id makes it.
RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-(?P<workload>[A-Za-z0-9][A-Za-z0-9._-]{0,63})-[0-9a-f]{4}")


class UnsafeName(ValueError):
    """A name that cannot become a path under its directory; the message says why."""


def relative_name_problem(name: str) -> str | None:
    """Why `name` is not a plain relative POSIX path (None when it is)."""
    if not isinstance(name, str) or not name:
        return "an empty name"
    if "\0" in name:
        return "a NUL byte in the name"
    if name.startswith("/"):
        return "an absolute path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "an empty, '.' or '..' path component"
    return None


def path_under(root: Path, name: str) -> Path:
    """`root/name`, checked: UnsafeName when the name, or a symbolic link already under `root`, leads elsewhere.

    Parts that exist must be directories (the last may be anything but a link): what is not there yet is
    created by the caller, under directories this has checked.
    """
    problem = relative_name_problem(name)
    if problem:
        raise UnsafeName(problem)
    parts = name.split("/")
    path = root
    for depth, part in enumerate(parts, start=1):
        path = path / part
        try:
            if path.is_symlink():
                raise UnsafeName(f"{'/'.join(parts[:depth])} is a symbolic link in {root}")
            if depth < len(parts) and path.exists() and not path.is_dir():
                raise UnsafeName(f"{'/'.join(parts[:depth])} is a file in {root}, not a directory")
        except OSError as exc:  # a part too long for this file system, say
            raise UnsafeName(f"it cannot be a path here ({exc.strerror})") from exc
    return path
