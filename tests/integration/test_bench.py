"""`ernie bench`: pulumi up -> run -> collect -> pulumi destroy, with a stand-in Pulumi CLI and real SSH hosts.

The stand-in answers `stack output inventory` with the namespace hosts' inventory, `stack export` with
$FAKE_PULUMI_EXPORT's deployment (none: an empty one), and logs every call;
when `destroy` is called it records what results/ held at that moment, which proves destroy came after
collection had finished. With $FAKE_PULUMI_UP_SECONDS its `up` takes that long and, like pulumi, takes
a SIGINT as "cancel gracefully": it needs a while to finish what is in flight, then logs `up-cancelled`
with the signals it got; with $FAKE_PULUMI_DESTROY_FAILS its `destroy` fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from testing.sshhosts import SshHosts

ECHO = Path(__file__).parents[1] / "workloads" / "echo"
STACK = "sshhosts"

FAKE_PULUMI = """#!{python}
import json, os, signal, sys, time
from pathlib import Path
args = sys.argv[1:]
results = Path(os.environ["FAKE_PULUMI_RESULTS"])
call = {{"args": args, "time": time.time()}}
if args[0] == "destroy":
    manifests = [json.loads(p.read_text()) for p in results.glob("*/manifest.json")]
    call["manifest_states"] = [{{n: h["state"] for n, h in m["hosts"].items()}} for m in manifests]

def log(entry):
    with open(os.environ["FAKE_PULUMI_LOG"], "a") as f:
        f.write(json.dumps(entry) + "\\n")

got = []
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda signum, frame: got.append(signal.Signals(signum).name))
log(call)
if args[:3] == ["stack", "output", "inventory"]:
    print(Path(os.environ["FAKE_PULUMI_INVENTORY"]).read_text())
if args[:2] == ["stack", "export"]:
    exported = os.environ.get("FAKE_PULUMI_EXPORT")
    print(Path(exported).read_text() if exported else '{{"version": 3, "deployment": {{"resources": []}}}}')
if args[0] == "up" and "FAKE_PULUMI_UP_SECONDS" in os.environ:
    end = time.time() + float(os.environ["FAKE_PULUMI_UP_SECONDS"])
    while not got and time.time() < end:
        time.sleep(0.05)
    if got:
        time.sleep(2)  # the operations in flight finish and the state is saved
        log({{"args": ["up-cancelled"], "signals": got, "time": time.time()}})
        sys.exit(255)
if args[0] == "destroy" and "FAKE_PULUMI_DESTROY_FAILS" in os.environ:
    print("error: the stand-in cannot delete a resource", file=sys.stderr)
    sys.exit(1)
"""


def pulumi_env(tmp_path: Path, inventory: Path, **extra: str) -> dict[str, str]:
    """The environment that puts the stand-in Pulumi CLI in place for `ernie bench`."""
    exe = tmp_path / "pulumi"
    exe.write_text(FAKE_PULUMI.format(python=sys.executable))
    exe.chmod(0o755)
    return {**os.environ, "ERNIE_PULUMI": str(exe), "FAKE_PULUMI_LOG": str(tmp_path / "pulumi.log"),
            "FAKE_PULUMI_RESULTS": str(tmp_path / "results"), "FAKE_PULUMI_INVENTORY": str(inventory), **extra}


@pytest.fixture
def fake_pulumi(tmp_path: Path, ssh_hosts: SshHosts) -> dict[str, str]:
    """The stand-in Pulumi CLI, whose stack is the namespace hosts."""
    return pulumi_env(tmp_path, ssh_hosts.write_inventory(tmp_path / "inv.json", stack=STACK))


def local_stack(tmp_path: Path) -> Path:
    """An inventory whose one host is this machine (local runner): a bench with no SSH hosts."""
    path = tmp_path / "local.json"
    path.write_text(json.dumps({"cloud": "local", "runner": "local", "stack": STACK,
                                "hosts": [{"name": "local", "address": "127.0.0.1", "worker": 0}]}))
    return path


def calls(env: dict[str, str]) -> list[dict]:
    path = Path(env["FAKE_PULUMI_LOG"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def bench(ernie_cmd: list[str], env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ernie_cmd, "bench", "-s", STACK, str(ECHO), "--results", env["FAKE_PULUMI_RESULTS"],
                           *args], capture_output=True, text=True, env=env, timeout=180)


def timeline(env: dict[str, str]) -> list[str]:
    (path,) = Path(env["FAKE_PULUMI_RESULTS"]).glob("*/timeline.json")
    return [s["name"] for s in json.loads(path.read_text())["steps"]]


def test_success_destroys_after_collection(ernie_cmd: list[str], fake_pulumi: dict[str, str]) -> None:
    proc = bench(ernie_cmd, fake_pulumi, "--set", "steps=2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = calls(fake_pulumi)
    # A refresh first (the state learns what a TTL or a preemption took), then up.
    assert [c["args"][:2] for c in log] == [["refresh", "--yes"], ["stack", "export"], ["up", "--yes"],
                                            ["stack", "output"], ["destroy", "--yes"]]
    assert log[2]["args"][:4] == ["up", "--yes", "--skip-preview", "-s"] and "sshhosts" in log[2]["args"]
    assert "--replace" not in log[2]["args"]
    assert log[4]["manifest_states"] == [{"w0": "complete", "w1": "complete", "w2": "complete"}]
    assert timeline(fake_pulumi) == ["provision", "wait_ssh", "push", "setup", "run", "collect", "destroy"]


def test_a_failing_workload_is_still_collected_then_destroyed(ernie_cmd: list[str],
                                                              fake_pulumi: dict[str, str]) -> None:
    proc = bench(ernie_cmd, fake_pulumi, "--set", "steps=2", "--set", "fail_worker=2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    log = calls(fake_pulumi)
    assert [c["args"][0] for c in log][-1] == "destroy"
    assert log[-1]["manifest_states"] == [{"w0": "complete", "w1": "complete", "w2": "failed"}]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_mid_run_stops_collects_then_destroys(ernie_cmd: list[str], fake_pulumi: dict[str, str],
                                                      sig: signal.Signals) -> None:
    results = Path(fake_pulumi["FAKE_PULUMI_RESULTS"])
    proc = subprocess.Popen([*ernie_cmd, "bench", "-s", STACK, str(ECHO), "--results", str(results),
                             "--set", "steps=400", "--set", "sleep=0.25"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=fake_pulumi)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(results.glob("*/worker0.stream.log")):
            time.sleep(0.3)
        assert list(results.glob("*/worker0.stream.log")), "the workload never started"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, out
    log = calls(fake_pulumi)
    assert [c["args"][0] for c in log] == ["refresh", "stack", "up", "stack", "destroy"]
    # Stopped (exit 143 recorded by each worker's wrapper) and collected before the destroy.
    assert log[-1]["manifest_states"] == [{"w0": "failed", "w1": "failed", "w2": "failed"}]
    (manifest,) = results.glob("*/manifest.json")
    assert {h["exit_code"] for h in json.loads(manifest.read_text())["hosts"].values()} == {143}
    names = timeline(fake_pulumi)
    assert names[-2:] == ["collect", "destroy"] and "provision" in names


@pytest.mark.parametrize("sig, to_group", [(signal.SIGINT, True), (signal.SIGHUP, False)], ids=["ctrl-c", "sighup"])
def test_a_signal_during_up_lets_pulumi_cancel_cleanly_before_destroy(ernie_cmd: list[str], tmp_path: Path,
                                                                      sig: signal.Signals, to_group: bool) -> None:
    env = pulumi_env(tmp_path, local_stack(tmp_path), FAKE_PULUMI_UP_SECONDS="60")
    proc = subprocess.Popen([*ernie_cmd, "bench", "-s", STACK, str(ECHO), "--results", env["FAKE_PULUMI_RESULTS"]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not [c for c in calls(env) if c["args"][0] == "up"]:
            time.sleep(0.1)
        assert [c for c in calls(env) if c["args"][0] == "up"], "pulumi up never started"
        if to_group:
            os.killpg(proc.pid, sig)  # as the terminal's Ctrl-C does: to every process of the foreground group
        else:
            proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig, out
    log = calls(env)
    # pulumi got one SIGINT (a graceful cancel; a second would force it), was let finish, then destroy ran.
    assert [c["args"][0] for c in log] == ["refresh", "stack", "up", "up-cancelled", "destroy"], out
    assert log[3]["signals"] == ["SIGINT"] and log[4]["time"] >= log[3]["time"]
    assert "Traceback" not in out
    steps = json.loads(next(Path(env["FAKE_PULUMI_RESULTS"]).glob("*/timeline.json")).read_text())["steps"]
    assert [(st["name"], st["ok"]) for st in steps] == [("provision", False), ("destroy", True)]


def test_a_preempted_tpu_node_is_replaced_and_a_healthy_one_kept(ernie_cmd: list[str], tmp_path: Path) -> None:
    """After a refresh the state says which nodes a preemption left dead: `up` replaces those, and only those."""
    node = "urn:pulumi:sshhosts::ernie::ernie:gcp:TpuSlice$gcp:tpu/v2Vm:V2Vm::tpu-tpu"
    deployment = {"version": 3, "deployment": {"resources": [
        {"urn": node, "type": "gcp:tpu/v2Vm:V2Vm", "outputs": {"state": "PREEMPTED"}},
        {"urn": node + "-other", "type": "gcp:tpu/v2Vm:V2Vm", "outputs": {"state": "READY"}},
        {"urn": "urn:pulumi:sshhosts::ernie::gcp:storage/bucket:Bucket::b", "type": "gcp:storage/bucket:Bucket",
         "outputs": {"state": "PREEMPTED"}}]}}
    (tmp_path / "export.json").write_text(json.dumps(deployment))
    env = pulumi_env(tmp_path, local_stack(tmp_path), FAKE_PULUMI_EXPORT=str(tmp_path / "export.json"))
    proc = bench(ernie_cmd, env, "--set", "steps=1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (up,) = [c["args"] for c in calls(env) if c["args"][0] == "up"]
    assert [up[i + 1] for i, a in enumerate(up) if a == "--replace"] == [node]
    assert "replaced 1 resource(s)" in proc.stdout


def test_keep_skips_destroy_and_says_how(ernie_cmd: list[str], fake_pulumi: dict[str, str]) -> None:
    proc = bench(ernie_cmd, fake_pulumi, "--set", "steps=2", "--keep")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [c["args"][0] for c in calls(fake_pulumi)] == ["refresh", "stack", "up", "stack"]
    assert "pulumi destroy -s sshhosts" in proc.stdout


def test_resume_on_a_stack_refreshes_and_brings_the_hosts_back_first(ernie_cmd: list[str], tmp_path: Path) -> None:
    """`ernie run --resume` of a run made on a stack: refresh and up (a preempted node replaced) before the
    inventory is read again and the workers are looked at."""
    node = "urn:pulumi:sshhosts::ernie::ernie:gcp:TpuSlice$gcp:tpu/v2Vm:V2Vm::tpu-tpu"
    env = pulumi_env(tmp_path, local_stack(tmp_path))
    proc = bench(ernie_cmd, env, "--set", "steps=1", "--keep")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_id,) = [p.name for p in Path(env["FAKE_PULUMI_RESULTS"]).iterdir() if p.is_dir()]
    before = len(calls(env))
    (tmp_path / "export.json").write_text(json.dumps({"deployment": {"resources": [
        {"urn": node, "type": "gcp:tpu/v2Vm:V2Vm", "outputs": {"state": "PREEMPTED"}}]}}))
    resumed = subprocess.run([*ernie_cmd, "run", "--resume", run_id, "--results", env["FAKE_PULUMI_RESULTS"]],
                             capture_output=True, text=True, timeout=120,
                             env={**env, "FAKE_PULUMI_EXPORT": str(tmp_path / "export.json")})
    later = [c["args"] for c in calls(env)[before:]]
    assert [a[:2] for a in later] == [["refresh", "--yes"], ["stack", "export"], ["up", "--yes"], ["stack", "output"]]
    assert later[2][later[2].index("--replace") + 1] == node
    # The run had finished: with its hosts back, there is nothing to resume.
    assert resumed.returncode != 0 and "nothing to resume" in resumed.stdout + resumed.stderr


@pytest.mark.parametrize(("body", "message"), [
    ("echo 'error: no stack named gcp' >&2; exit 255", "`pulumi stack export -s gcp` failed (255): error: no stack"),
    ("echo '[1, 2]'", "`pulumi stack export -s gcp` is not a deployment"),
    ("echo 'not json'", "`pulumi stack export -s gcp` is not a deployment"),
])
def test_an_unreadable_export_is_one_clear_error_and_nothing_is_brought_up(tmp_path: Path, body: str,
                                                                           message: str) -> None:
    """What a refresh left unrecoverable is read from `pulumi stack export`: when that cannot be read, `up` does
    not run on a guess."""
    from ernie.errors import ErnieError
    from ernie.pulumi_cli import PulumiCli

    exe = tmp_path / "pulumi"
    exe.write_text(f'#!/bin/sh\necho "$1" >> {tmp_path}/calls\ncase "$1" in stack) {body};; esac\n')
    exe.chmod(0o755)
    with pytest.raises(ErnieError, match=re.escape(message)):
        PulumiCli(executable=str(exe)).bring_up("gcp")
    assert (tmp_path / "calls").read_text().split() == ["refresh", "stack"]


def test_bad_workload_fails_before_provisioning(ernie_cmd: list[str], fake_pulumi: dict[str, str]) -> None:
    proc = bench(ernie_cmd, fake_pulumi, "--set", "stepz=2")
    assert proc.returncode == 2 and "--set stepz" in proc.stderr
    assert calls(fake_pulumi) == []


def test_missing_pulumi_cli_is_a_clear_error(ernie_cmd: list[str], fake_pulumi: dict[str, str]) -> None:
    env = {**fake_pulumi, "ERNIE_PULUMI": "pulumi-is-not-installed"}
    proc = bench(ernie_cmd, env)
    assert proc.returncode == 2 and "the Pulumi CLI is not installed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_failed_destroy_says_how_to_finish_and_fails_the_bench(ernie_cmd: list[str], tmp_path: Path) -> None:
    env = pulumi_env(tmp_path, local_stack(tmp_path), FAKE_PULUMI_DESTROY_FAILS="1")
    proc = bench(ernie_cmd, env, "--set", "steps=2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "stack sshhosts may still be up: run `pulumi destroy -s sshhosts`" in proc.stdout
    assert [(st["name"], st["ok"]) for st in json.loads(next(Path(env["FAKE_PULUMI_RESULTS"]).glob(
        "*/timeline.json")).read_text())["steps"]][-2:] == [("collect", True), ("destroy", False)]


def test_a_failed_destroy_does_not_hide_the_error_before_it(ernie_cmd: list[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"runner": "tpu-vm", "hosts": [')
    env = pulumi_env(tmp_path, broken, FAKE_PULUMI_DESTROY_FAILS="1")
    proc = bench(ernie_cmd, env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "stack sshhosts: the inventory output is not JSON" in proc.stderr  # the first error, still the verdict
    assert "stack sshhosts may still be up: run `pulumi destroy -s sshhosts`" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert [c["args"][0] for c in calls(env)] == ["refresh", "stack", "up", "stack", "destroy"]


def test_ctrl_c_outside_a_command_is_one_line_and_130(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from ernie import cli

    def interrupted() -> None:
        raise KeyboardInterrupt  # where typer's own handling does not reach (it turns one in a command into 130)

    monkeypatch.setattr(cli, "app", interrupted)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 130
    assert capsys.readouterr().err.strip() == "interrupted"
