"""Whatever sessions a command opened are closed by one context manager (ernie.remote.connect.closing_sessions):
every one, even when another fails to close, and the ones a reconnect swapped in (issue 18)."""

from __future__ import annotations

import pytest

from ernie.remote.connect import close_all, closing_sessions


class _Session:
    def __init__(self, name: str, fails: bool = False) -> None:
        self.name, self.fails, self.closed = name, fails, False

    def close(self) -> None:
        self.closed = True
        if self.fails:
            raise OSError(f"{self.name}: socket already gone")


def test_every_session_is_closed_even_when_one_fails_to_close() -> None:
    sessions = [_Session("w0"), _Session("w1", fails=True), _Session("w2")]
    with pytest.raises(OSError, match="w1"):
        close_all(sessions)
    assert all(s.closed for s in sessions)


def test_the_sessions_held_on_leaving_are_closed_on_error_too() -> None:
    first, second = _Session("w0"), _Session("w1")
    replaced, reconnected = _Session("w1-old"), _Session("w1-new")
    with pytest.raises(RuntimeError), closing_sessions({"w0": first, "w1": replaced}) as sessions:
        sessions["w1"] = reconnected  # a reconnect swaps the session in place
        raise RuntimeError("the step failed")
    assert first.closed and reconnected.closed
    assert not replaced.closed  # swapped out: its closer was whoever replaced it
    with closing_sessions({"w1": second}):
        pass
    assert second.closed
