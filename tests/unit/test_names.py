"""Names and values that reach a shell or a path: matched whole, refused with an error naming the field."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ernie.errors import ErnieError
from ernie.inventory import parse_inventory
from ernie.remote.layout import Layout
from ernie.rundir import RunRecord
from ernie.workload import load_workload, resolve

PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-material\n-----END OPENSSH PRIVATE KEY-----\n"
RUN_ID = "20261128-081500-demo-3fa2"


def spec(tmp_path: Path, command: str, name: str = "demo") -> Path:
    path = tmp_path / "workload.toml"
    path.write_text(f"name = {json.dumps(name)}\ncommand = {json.dumps(command)}\n[params]\nwho = \"world\"\n")
    return path


@pytest.mark.parametrize(("command", "where"), [
    ('echo "hello {who}"', "inside quotes"),
    ("echo 'hello {who}'", "inside quotes"),
    ("echo $'hello {who}'", "inside quotes"),
    ('echo "$(echo {who})"', "inside quotes"),
    ("echo \\{who}", "after a backslash"),
    ("echo hi # greet {who}", "in a comment"),
    ("cat <<EOF\nhello {who}\nEOF", "in a here-document"),
    ("echo 'it''s' \"a {who}\"", "inside quotes"),
])
def test_a_placeholder_a_value_could_break_out_of_is_refused_at_load(tmp_path: Path, command: str,
                                                                      where: str) -> None:
    with pytest.raises(ErnieError, match=rf"workload.toml: command: \{{who\}} sits {where}, where a --set value "
                                         r"could run as shell code; put the placeholder on its own"):
        load_workload(spec(tmp_path, command))


@pytest.mark.parametrize("command", [
    "echo hello {who}", 'echo "$HOME" {who} "$ERNIE_OUTPUT_DIR"/{who}', "echo '#' {who} # {{not a placeholder",
    "echo \\\\ {who}", "echo $'it\\'s' {who}", "echo ${HOME} {who}", "printf '%s\\n' {who} <<< x",
])
def test_a_placeholder_outside_quotes_is_one_word_whatever_the_value(tmp_path: Path, command: str) -> None:
    resolved = resolve(load_workload(spec(tmp_path, command)), ["who=$(touch PWNED)`touch PWNED`'; touch PWNED"])
    subprocess.run(["bash", "-c", resolved.command], cwd=tmp_path, capture_output=True, timeout=30)
    assert not (tmp_path / "PWNED").exists()


def test_names_with_a_trailing_newline_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ErnieError, match=r"name: 'demo\\n' is not a plain name"):
        load_workload(spec(tmp_path, "true", name="demo\n"))
    hosts = [{"name": "w0\n", "address": "192.0.2.1", "worker": 0}]
    with pytest.raises(ErnieError, match=r"test: hosts\[0\]\.name: 'w0\\n' is not a plain host name"):
        parse_inventory({"runner": "tpu-vm", "ssh_user": "u", "ssh_private_key": PEM, "hosts": hosts}, "test")
    for key in ("workload", "run_id"):
        with pytest.raises(ValueError, match=rf"Layout\.{key}: 'x\\n' is not a plain name"):
            Layout(**{"base": "/b", "workload": "w", "run_id": "r", key: "x\n"})


def record(**overrides: object) -> dict:
    data = {"run_id": RUN_ID, "workload": "demo", "spec_file": "/w/workload.toml", "params": {}, "command": "true",
            "created": "2026-11-28T08:15:00Z", "inventory_source": {"kind": "local", "value": "local"},
            "inventory": {}, "collect_paths": ["**/*"], "progress_total": None, "progress_regex": None,
            "requirements": None, "requirements_sha256": None, "host_bases": {"local": "/home/u/ernie"}}
    return {**data, **overrides}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"run_id": RUN_ID + "\ntouch /tmp/x"}, r"run_id: '20261128-081500-demo-3fa2\\ntouch /tmp/x' is not a run id"),
    ({"run_id": "20261128-081500-demo-ffff"}, r"run_id: '20261128-081500-demo-ffff' is not the name of its "
                                              r"directory '20261128-081500-demo-3fa2'"),
    ({"workload": "other"}, r"workload: 'other' is not the workload its run id names \('demo'\)"),
    ({"host_bases": {"../w0": "/x"}}, r"host_bases: expected \{plain host name: its ernie directory\}"),
])
def test_a_forged_run_json_is_refused(tmp_path: Path, overrides: dict, message: str) -> None:
    (tmp_path / RUN_ID).mkdir()
    (tmp_path / RUN_ID / "run.json").write_text(json.dumps(record(**overrides)))
    with pytest.raises(ErnieError, match=rf"run\.json: {message}.*; restore the run's own run\.json"):
        RunRecord.load(tmp_path, RUN_ID)


def test_a_run_id_that_is_not_one_is_refused_before_any_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "run.json").write_text(json.dumps(record(run_id="elsewhere")))
    for run_id in ("../elsewhere", "elsewhere", RUN_ID + "\n"):
        with pytest.raises(ErnieError, match=r"RUN_ID .* is not a run id \(YYYYmmdd-HHMMSS-WORKLOAD-XXXX"):
            RunRecord.load(tmp_path, run_id)
    (tmp_path / RUN_ID).mkdir()
    (tmp_path / RUN_ID / "run.json").write_text(json.dumps(record()))
    assert RunRecord.load(tmp_path, None).run_id == RUN_ID, "a stray directory is not taken for the latest run"


def test_the_inventory_repr_holds_no_private_key() -> None:
    inv = parse_inventory({"runner": "tpu-vm", "ssh_user": "u", "ssh_private_key": PEM,
                           "hosts": [{"name": "w0", "address": "192.0.2.1", "worker": 0}]}, "test")
    assert inv.ssh_private_key == PEM
    assert "secret-material" not in repr(inv) and "ssh_private_key" not in repr(inv)
    assert "secret-material" not in str(inv) and "w0" in repr(inv)
