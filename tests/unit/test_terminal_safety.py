"""What a host, a cloud or an endpoint says reaches the user's terminal as text: no escape sequence (window
title, clipboard, clear screen, hidden text) and no rich markup (`[red]`, `[link=...]`) gets through.

Each test captures what ernie prints (a rich Console on a StringIO, a colour terminal's where rich would
style) and looks for the hostile bytes; rich's own colours are CSI ... m, so OSC (`ESC ]`) must not appear
at all: a `[link=...]` read as markup would come out as an OSC 8 hyperlink.
"""

from __future__ import annotations

import io
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from rich.console import Console

from ernie import cli
from ernie.errors import ErnieError
from ernie.terminal import SafeConsole, clean

TITLE = "\x1b]0;pwned-title\x07"
CLIPBOARD = "\x1b]52;c;cm0gLXJmIH4=\x1b\\"
CLEAR = "\x1b[2J\x1b[H"
HIDDEN = "\x1b[8msecret-hidden\x1b[0m"
MARKUP = "[red]not-red[/] [link=https://evil.example]click[/link]"
HOSTILE = f"error: {TITLE}{CLIPBOARD}{CLEAR}{HIDDEN} {MARKUP}"
# What must never reach the terminal: the escapes themselves, and what markup would have made of MARKUP.
FORBIDDEN = ("\x1b]", "\x1b[2J", "\x1b[H", "\x1b[8m", "\x07", "pwned-title", "cm0gLXJmIH4=")


def terminal(console_type: type[Console] = Console) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return console_type(file=buf, force_terminal=True, color_system="truecolor", width=400), buf


def assert_safe(printed: str) -> None:
    for bad in FORBIDDEN:
        assert bad not in printed, f"{bad!r} reached the terminal: {printed!r}"
    assert "[red]not-red[/]" in printed and "[link=https://evil.example]click[/link]" in printed, \
        f"markup must be shown as the text it is: {printed!r}"


@pytest.mark.parametrize("sequence", [
    TITLE, CLIPBOARD, CLEAR, "\x1b[8m", "\x1b]8;;https://x\x1b\\", "\x9b2J", "\x9d0;t\x9c", "\x1bPq#0\x1b\\",
    "\x1bc", "\x1b7", "\r", "\x08", "\x0c", "\x7f", "\u202e",
])
def test_clean_removes_every_escape_and_control_but_tab_and_newline(sequence: str) -> None:
    assert clean(f"a{sequence}b\tc\nd") == "ab\tc\nd"


def test_an_unterminated_title_goes_to_the_end_of_its_line_as_a_terminal_would_take_it() -> None:
    assert clean("a\x1b]0;evil title\tstill title\nnext") == "a\nnext"


def test_clean_keeps_ordinary_text() -> None:
    text = "step 10: été ✓ 日本語 [bold] 50% (a|b) <c>\tend\n"
    assert clean(text) == text


def test_safe_console_strips_escapes_from_strings_but_keeps_ernies_own_colours() -> None:
    console, buf = terminal(SafeConsole)
    console.print(f"[green]ok[/] {TITLE}{CLEAR}done")
    printed = buf.getvalue()
    assert "\x1b]" not in printed and "\x1b[2J" not in printed and "pwned-title" not in printed
    assert "\x1b[32m" in printed and "done" in printed  # ernie's own markup still styles


def test_streamed_error_lines_and_host_names_print_as_text(tmp_path: Path) -> None:
    """The live stream of a run prints a worker's stderr error lines: the host wrote them."""
    from ernie.inventory import local_inventory
    from ernie.remote import stream
    from ernie.remote.connect import Connector, Timeouts
    from ernie.remote.layout import Layout

    inventory = local_inventory()
    connector = Connector(inventory, tmp_path / "known_hosts", Timeouts(connect=3, command=30, wait_ssh=30, poll=5))
    session = connector.open(inventory.hosts[0])
    layout = Layout(base=str(tmp_path / "base"), workload="w", run_id="r")
    output = Path(layout.output)
    output.mkdir(parents=True)
    (output / "stdout.log").write_text("step 1\n", encoding="utf-8")
    (output / "stderr.log").write_text(f"{HOSTILE}\nTraceback {CLEAR}{MARKUP}\n", encoding="utf-8")
    (output / "exit_code").write_text("0\n")
    console, buf = terminal()
    follower = stream.Follower(connector, {"local": session}, {"local": layout}, console, total=None, regex=None,
                               stream_copy=tmp_path / "stream.log", lost_after=30, interval=0)
    assert follower.follow(time.monotonic() + 60, "w") == stream.FollowResult(lost={}, timed_out=False)
    printed = buf.getvalue()
    assert_safe(printed)
    assert "secret-hidden" in printed and "Traceback" in printed, "the lines are shown, only made harmless"


def test_an_unreachable_hosts_error_prints_as_text(tmp_path: Path) -> None:
    """A connection error quotes what the host answered (a banner, a remote stderr line)."""
    from ernie.inventory import local_inventory
    from ernie.remote import stream

    console, buf = terminal()
    follower = stream.Follower(None, {}, {}, console, total=None, regex=None, stream_copy=tmp_path / "s.log",
                               lost_after=0.0)
    follow = stream.HostFollow(host=local_inventory().hosts[0], session=None)
    follower._unreachable(follow, OSError(HOSTILE))
    time.sleep(0.01)
    follower._unreachable(follow, OSError(HOSTILE))  # past lost_after: given up on, quoting the error again
    printed = buf.getvalue()
    assert "giving up" in printed
    assert_safe(printed)


def test_a_user_error_quoting_a_host_prints_as_text(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def broken() -> None:
        raise ErnieError(f"w0: setup failed: {HOSTILE}")

    monkeypatch.setattr(cli, "app", broken)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    printed = capsys.readouterr().err  # the CLI's own console writes to stderr
    assert "error:" in printed and "setup failed" in printed
    assert_safe(printed)


def test_ernie_logs_prints_a_workers_stdout_as_text(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`ernie logs` hands each chunk of the remote stdout to the CLI's writer."""
    import ernie.control
    from typer.testing import CliRunner

    def fake_load_run(*_):
        return object(), object()

    def fake_logs_run(record, inventory, opts, worker, follow, write) -> None:
        write(HOSTILE[:20])  # an escape cut between two reads is removed too
        write(HOSTILE[20:] + "\n")

    monkeypatch.setattr(ernie.control, "load_run", fake_load_run)
    monkeypatch.setattr(ernie.control, "logs_run", fake_logs_run)
    result = CliRunner().invoke(cli.app, ["logs", "r1", "--local", "--results", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert_safe(result.output)  # the CLI's own console writes to stdout, which the runner captures


def test_report_tables_in_the_terminal_print_cells_as_text() -> None:
    from ernie.report.render import to_rich
    from ernie.report.tables import Table

    console, buf = terminal(SafeConsole)
    console.print(to_rich(Table("Not complete", ("run", "what is missing or failed"), [("r1", HOSTILE)])))
    assert_safe(buf.getvalue())


def test_invoke_prints_the_endpoints_answer_as_text() -> None:
    from ernie.serving.invoke import print_answer

    console, buf = terminal(SafeConsole)
    assert print_answer(502, HOSTILE, console) == 1
    assert_safe(buf.getvalue())

    # A JSON answer shows C0 controls as JSON escapes (\u001b: visible, inert); C1 and bidi controls go.
    console, buf = terminal(SafeConsole)
    assert print_answer(200, {"error": HOSTILE, "c1": "x\x9b2J\u202ey"}, console) == 0
    printed = buf.getvalue()
    assert "\\u001b]0;pwned-title" in printed and "[red]not-red[/]" in printed
    for bad in ("\x1b]", "\x1b[2J", "\x1b[8m", "\x07", "\x9b", "\u202e"):
        assert bad not in printed, f"{bad!r} reached the terminal: {printed!r}"


def test_sweep_prints_cloud_names_and_errors_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids, tags and a failed delete's message are the cloud's text (anyone may tag a resource)."""
    import ernie.sweep.aws
    from ernie.sweep import STACK_TAG, Tagged, command

    created = datetime.now(timezone.utc) - timedelta(hours=1)

    class Account:
        def __init__(self, region: str) -> None:
            self.region = region

        def tagged(self):
            yield Tagged("aws", "security-group", "sg-1", self.region, {STACK_TAG: f"gone{CLEAR}{HIDDEN}"}, created,
                         0.0, detail=HOSTILE)

        def delete(self, leftovers) -> list[str]:
            return [f"security-group sg-1: {HOSTILE}"]

    console, buf = terminal(SafeConsole)
    monkeypatch.setattr(ernie.sweep.aws, "AwsAccount", Account)
    monkeypatch.setattr(command, "console", console)
    assert command.sweep("aws", ["us-east-1"], None, [], ["live"], delete=True, yes=True) == 1
    printed = buf.getvalue()
    assert "1 leftover resource(s)" in printed and "not deleted" in printed
    assert printed.count("[red]not-red[/]") == 2, "the table and the failure both show the text as it is"
    assert_safe(printed)
