"""Follow a running workload: worker 0's progress as a rich bar, any worker's errors, until every worker ends.

Every poll asks each host, in parallel and under a timeout, whether its process group still runs and
how long its logs are, then reads only the new bytes. Byte offsets are kept here, so when a connection
drops the follower reconnects and resumes exactly where it was: nothing is missed or shown twice. Bytes
are decoded incrementally, so a read that ends inside a UTF-8 character leaves its start for the next.
A host that stays unreachable longer than `lost_after` is given up on; the others are still followed.
"""

from __future__ import annotations

import codecs
import json
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from ernie.inventory import Host
from ernie.remote.connect import Connector, Session, fan_out
from ernie.remote.layout import Layout
from ernie.remote.runners import probe
from ernie.rundir import STDERR_LOG, STDOUT_LOG
from ernie.terminal import remote

MLLOG_PREFIX = ":::MLLOG "
_ERROR_LINE = re.compile(r"error|traceback|exception|killed", re.IGNORECASE)
_READ_LIMIT = 4 << 20  # at most this many new bytes per log per poll
LOGS = (STDOUT_LOG, STDERR_LOG)


def utf8_decoder() -> codecs.IncrementalDecoder:
    """A decoder that keeps a character cut by a byte-counted read until its other bytes arrive."""
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def progress_step(line: str, regex: re.Pattern[str] | None) -> int | None:
    """The step a log line reports: the workload's regex if it has one, else MLPerf `tracked_stats`."""
    if regex is not None:
        match = regex.search(line)
        return int(match.group(1)) if match else None
    if not line.startswith(MLLOG_PREFIX):
        return None
    try:
        record = json.loads(line[len(MLLOG_PREFIX):])
        if record.get("key") == "tracked_stats":
            return int(record["metadata"]["step"])
    except (ValueError, KeyError, TypeError):
        return None
    return None


@dataclass
class HostFollow:
    """What the follower knows of one host."""

    host: Host
    session: Session | None
    offsets: dict[str, int] = field(default_factory=lambda: {STDOUT_LOG: 0, STDERR_LOG: 0})
    partial: dict[str, str] = field(default_factory=lambda: {STDOUT_LOG: "", STDERR_LOG: ""})
    decoders: dict[str, codecs.IncrementalDecoder] = field(default_factory=lambda: {log: utf8_decoder()
                                                                                     for log in LOGS})
    running: bool = True
    exit_code: int | None = None
    unreachable_since: float | None = None
    lost: str | None = None  # why it was given up on


@dataclass(frozen=True)
class FollowResult:
    """Which hosts were given up on (and why), and whether the run's deadline passed first."""

    lost: dict[str, str]
    timed_out: bool


class Follower:
    """Polls every host of a run until each has ended, is lost, or the run's deadline passes."""

    def __init__(self, connector: Connector, sessions: dict[str, Session], layouts: dict[str, Layout],
                 console: Console, *, total: int | None, regex: str | None, stream_copy: Path,
                 lost_after: float, interval: float = 1.0) -> None:
        self.connector = connector
        self.layouts = layouts
        self.console = console
        self.hosts = {name: HostFollow(host=s.host, session=s) for name, s in sessions.items()}
        self.total = total
        self.regex = re.compile(regex) if regex else None
        self.stream_copy = stream_copy
        self.lost_after = lost_after
        self.interval = interval

    def follow(self, deadline: float, description: str) -> FollowResult:
        """Poll every `interval` seconds, drawing worker 0's progress, until no worker is left to wait for."""
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task(description, total=self.total)
            while True:
                active = [h for h in self.hosts.values() if h.running and h.lost is None]
                if not active:
                    break
                if time.monotonic() > deadline:
                    return self._result(timed_out=True)
                limit = self.connector.timeouts.poll + self.connector.timeouts.connect + 5
                outcomes = fan_out(self._poll, active, timeout=limit, name=lambda h: h.host.name)
                for follow in active:
                    outcome = outcomes[follow.host.name]
                    if outcome.ok:
                        self._print(follow, bar, task)
                    else:
                        self._unreachable(follow, outcome.error)
                if any(h.running and h.lost is None for h in self.hosts.values()):
                    time.sleep(self.interval)
        return self._result(timed_out=False)

    def _result(self, timed_out: bool) -> FollowResult:
        return FollowResult(lost={n: h.lost for n, h in self.hosts.items() if h.lost}, timed_out=timed_out)

    def _poll(self, follow: HostFollow) -> None:
        """One host: reconnect if needed, read its state and the new bytes of its logs."""
        if follow.session is None:
            follow.session = self.connector.open(follow.host)
            self.console.print(remote(f"{follow.host.name}: reconnected; resuming its logs at byte "
                                      f"{follow.offsets[STDOUT_LOG]}", "green"))
        s, layout = follow.session, self.layouts[follow.host.name]
        out = shlex.quote(layout.output)
        state = probe(s, layout, timeout=s.timeouts.poll)
        behind = False  # a worker that has ended is followed until its logs are read to the end
        for log, size in ((STDOUT_LOG, state.stdout_bytes), (STDERR_LOG, state.stderr_bytes)):
            if log == STDOUT_LOG and follow.host.worker != 0:
                continue
            start = follow.offsets[log]
            if size > start:
                raw = s.pipe_in(f"tail -c +{start + 1} {out}/{log} | head -c {min(size - start, _READ_LIMIT)}",
                                b"", timeout=s.timeouts.poll)
                follow.partial[log] += follow.decoders[log].decode(raw)
                follow.offsets[log] = start + len(raw)
            behind = behind or follow.offsets[log] < size
            if not state.running and not behind:
                follow.partial[log] += follow.decoders[log].decode(b"", final=True)
        follow.unreachable_since = None
        follow.exit_code, follow.running = state.exit_code, state.running or behind

    def _print(self, follow: HostFollow, bar: Progress, task: int) -> None:
        for log in (STDOUT_LOG, STDERR_LOG):
            lines = follow.partial[log].split("\n")
            follow.partial[log] = lines.pop()  # an unfinished last line waits for the next poll
            if log == STDOUT_LOG and follow.host.worker == 0 and lines:
                with self.stream_copy.open("a", encoding="utf-8") as f:
                    f.write("\n".join(lines) + "\n")
            for line in lines:
                if log == STDOUT_LOG:
                    step = progress_step(line, self.regex)
                    if step is not None:
                        bar.update(task, completed=step)
                elif _ERROR_LINE.search(line):
                    # The host's own words: escapes and markup in them must not reach the terminal.
                    self.console.print(Text.assemble(remote(f"{follow.host.name}: ", "red"), remote(line)))
        if not follow.running:
            if follow.host.worker == 0 and follow.partial[STDOUT_LOG]:
                with self.stream_copy.open("a", encoding="utf-8") as f:
                    f.write(follow.partial[STDOUT_LOG])
                follow.partial[STDOUT_LOG] = ""
            status = "exit code 0" if follow.exit_code == 0 else (
                f"exit code {follow.exit_code}" if follow.exit_code is not None else "ended without an exit code")
            style = "green" if follow.exit_code == 0 else "red"
            self.console.print(remote(f"{follow.host.name}: worker {follow.host.worker} finished, {status}", style))

    def _unreachable(self, follow: HostFollow, error: BaseException | None) -> None:
        now = time.monotonic()
        if follow.unreachable_since is None:
            follow.unreachable_since = now
            self.console.print(remote(f"{error}; reconnecting", "yellow"), highlight=False)
        if follow.session is not None:
            follow.session.close()
            follow.session = None
        if now - follow.unreachable_since > self.lost_after:
            follow.lost = f"unreachable for {self.lost_after:.0f}s ({error})"
            self.console.print(remote(f"{follow.host.name}: giving up on it: {follow.lost}", "red"), highlight=False)
