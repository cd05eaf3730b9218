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
