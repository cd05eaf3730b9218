"""The `ernie` command's contract with a user: user errors are one clear line and exit 2, never a traceback."""

from __future__ import annotations

import subprocess


from ernie import cli
from ernie.errors import ErnieError


def test_help_runs(ernie_cmd: list[str]) -> None:
    out = subprocess.run([*ernie_cmd, "--help"], capture_output=True, text=True, check=True).stdout
    assert "Usage: ernie" in out


def test_user_error_is_one_line_and_exit_2(monkeypatch, capsys) -> None:
    def broken() -> None:
        raise ErnieError("ernie:ttlMinutes: 0 is below 1; set it with `pulumi config set ernie:ttlMinutes 120`")

    monkeypatch.setattr(cli, "app", broken)
    try:
        cli.main()
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("main() must exit 2 on ErnieError")
    err = capsys.readouterr().err
    assert "ttlMinutes" in err and "Traceback" not in err


def test_no_help_text_is_eaten_by_rich_markup() -> None:
    """typer renders help through rich, which drops a `[default: ...]` as an unknown markup tag: every
    command's and parameter's help must print as written."""
    import typer.main
    from rich.text import Text

    def commands(group):
        for name, command in group.commands.items():
            yield name, command
            yield from ((f"{name} {sub}", c) for sub, c in commands(command)) if hasattr(command, "commands") else ()

    eaten = [(name, text) for name, command in commands(typer.main.get_command(cli.app))
             for text in [command.help or "", *(p.help or "" for p in command.params if hasattr(p, "help"))]
             if Text.from_markup(text).plain != text]
    assert not eaten, f"rich markup would change these help texts (write (default: ...) instead): {eaten}"
