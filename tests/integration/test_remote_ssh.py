"""Remote runs over real SSH: three namespace hosts (testing/sshhosts.py), no mocks.

A file is on a host only if it travelled there (each host has its own home), so what these tests find
in a host's home or in results/ was really pushed, run and collected.
"""

from __future__ import annotations

import io
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console
from testing.sshhosts import SshHosts

from ernie.errors import ErnieError
from ernie.inventory import load_inventory_file
from ernie.remote.collect import collect_host, sha256_file
from ernie.remote.connect import Connector, RemoteError, Timeouts
from ernie.remote.layout import Layout
from ernie.remote.push import Bundle, push
from ernie.run import RunOptions, run_workload
from ernie.workload import find_workload, resolve

WORKLOADS = Path(__file__).parents[1] / "workloads"
ECHO = WORKLOADS / "echo"
FAST = Timeouts(connect=3, command=30, wait_ssh=30, poll=2)


def ernie(ernie_cmd: list[str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*ernie_cmd, *args], capture_output=True, text=True, timeout=timeout)


def manifest(results: Path, run_id: str) -> dict:
    return json.loads((results / run_id / "manifest.json").read_text())


def timeline_steps(results: Path, run_id: str) -> list[str]:
    return [s["name"] for s in json.loads((results / run_id / "timeline.json").read_text())["steps"]]


def only_run(results: Path) -> str:
    (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
    return run_dir.name


def remote_output(hosts: SshHosts, index: int, run_id: str) -> Path:
    """A worker's $ERNIE_OUTPUT_DIR, as a path on this machine."""
    return hosts[index].home / "ernie" / "runs" / run_id / "output"


def run_in_process(hosts: SshHosts, results: Path, sets: list[str], on_started=None,
                   lost_after: float = 60.0) -> tuple[int, str, str]:
    """`ernie run` in this process (to act on the hosts mid-run): exit status, run id, console text."""
    out = io.StringIO()
    resolved = resolve(find_workload(str(ECHO)), sets)
    inventory = load_inventory_file(hosts.inventory_path)
    opts = RunOptions(results_root=results, timeouts=FAST, lost_after_s=lost_after, run_timeout_s=120,
                      collect_timeout_s=60)
    code = run_workload(resolved, inventory, {"kind": "file", "value": str(hosts.inventory_path)}, opts,
                        Console(file=out, width=200), on_started=on_started)
    return code, only_run(results), out.getvalue()


def later(delay: float, action) -> callable:
    """An on_started hook: do `action` in the background `delay` seconds after the workers started."""
    def hook(run_id: str) -> None:
        threading.Thread(target=lambda: (time.sleep(delay), action()), daemon=True).start()
    return hook


def test_three_workers_run_with_their_own_index_and_come_back_verified(ssh_hosts: SshHosts, tmp_path: Path,
                                                                       ernie_cmd: list[str]) -> None:
    results = tmp_path / "results"
    proc = ernie(ernie_cmd, "run", str(ECHO), "--inventory", str(ssh_hosts.inventory_path),
                 "--results", str(results), "--set", "steps=4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = only_run(results)
    assert run_id.split("-")[2:4] == ["echo", "test"] and len(run_id.rsplit("-", 1)[1]) == 4
    m = manifest(results, run_id)
    assert m["run_id"] == run_id and m["params"] == {"steps": 4, "sleep": 0.1, "fail_worker": -1}
    assert "ssh_key_path" not in json.dumps(m) and m["inventory"]["runner"] == "tpu-vm"
    for i, host in enumerate(ssh_hosts.hosts):
        entry = m["hosts"][host.name]
        assert (entry["worker"], entry["state"], entry["exit_code"]) == (i, "complete", 0)
        assert set(entry["files"]) == {"stdout.log", "stderr.log", "exit_code", "worker.json", "data/blob.bin"}
        for name, meta in entry["files"].items():
            local = results / run_id / host.name / name
            assert sha256_file(local) == meta["sha256"] == sha256_file(remote_output(ssh_hosts, i, run_id) / name)
            assert local.stat().st_size == meta["size"]
        env = json.loads((results / run_id / host.name / "worker.json").read_text())["env"]
        assert env == {"ERNIE_RUN_ID": run_id, "ERNIE_WORKER_INDEX": str(i), "ERNIE_NUM_WORKERS": "3",
                       "ERNIE_COORDINATOR_ADDRESS": ssh_hosts[0].address,
                       "ERNIE_OUTPUT_DIR": str(remote_output(ssh_hosts, i, run_id))}
        bundle = host.home / "ernie" / "bundles" / "echo-test"
        assert json.loads((bundle / "ernie_run.json").read_text())["run_id"] == run_id
    blobs = {sha256_file(results / run_id / h.name / "data" / "blob.bin") for h in ssh_hosts.hosts}
    assert len(blobs) == 3  # each worker's own file, not one host's copied three times
    assert timeline_steps(results, run_id) == ["wait_ssh", "push", "setup", "run", "collect"]
    known = (results / run_id / "known_hosts").read_text()
    assert all(f"{h.address} {h.host_key_pub}" in known for h in ssh_hosts.hosts)


def test_push_sends_only_what_changed(ssh_hosts: SshHosts, tmp_path: Path) -> None:
    src = tmp_path / "bundle"
    (src / "pkg").mkdir(parents=True)
    for i in range(20):
        (src / "pkg" / f"m{i}.py").write_text(f"VALUE = {i}\n" * 200)
    (src / "old.txt").write_text("to be removed")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "x.pyc").write_bytes(b"cache")
    inventory = load_inventory_file(ssh_hosts.inventory_path)
    s = Connector(inventory, tmp_path / "known_hosts", FAST).open(inventory.hosts[1])
    try:
        dest = f"{s.base}/bundles/t"
        first = push(s, Bundle.from_directory(src), dest)
        assert (first.files_sent, first.files_deleted) == (21, 0) and first.bytes_sent > 0
        remote = ssh_hosts[1].home / "ernie" / "bundles" / "t"
        assert (remote / "pkg" / "m7.py").read_text() == (src / "pkg" / "m7.py").read_text()
        assert not (remote / "__pycache__").exists()
        again = push(s, Bundle.from_directory(src), dest)
        assert (again.files_sent, again.content_bytes, again.files_deleted) == (0, 0, 0)
        names = sum(len(n) + 1 for n in Bundle.from_directory(src).files)
        assert again.bytes_sent < 600 + names  # one command (paths included) and the list of names, nothing else
        # What the workload writes into its own directory on the host (prepared data) is left alone.
        s.check(f"mkdir -p {dest}/data && echo prepared > {dest}/data/meta.json", "writing data")
        (src / "pkg" / "m3.py").write_text("VALUE = 'changed'\n")
        (src / "old.txt").unlink()
        before = {p: p.stat().st_mtime_ns for p in remote.rglob("*.py")}
        changed = push(s, Bundle.from_directory(src), dest)
        assert (changed.files_sent, changed.files_deleted) == (1, 1)
        assert (remote / "pkg" / "m3.py").read_text() == "VALUE = 'changed'\n" and not (remote / "old.txt").exists()
        assert (remote / "data" / "meta.json").read_text() == "prepared\n"
        rewritten = [p.name for p in remote.rglob("*.py") if p.stat().st_mtime_ns != before[p]]
        assert rewritten == ["m3.py"]
    finally:
        s.close()


def test_a_cut_connection_to_worker_0_is_resumed_and_the_run_completes(ssh_hosts: SshHosts, tmp_path: Path) -> None:
    results = tmp_path / "results"

    def cut() -> None:
        ssh_hosts.link_down(ssh_hosts[0])
        time.sleep(5)
        ssh_hosts.link_up(ssh_hosts[0])

    code, run_id, out = run_in_process(ssh_hosts, results, ["steps=20", "sleep=0.5"], on_started=later(2, cut))
    assert code == 0, out
    assert "reconnecting" in out and "w0: reconnected; resuming its logs at byte" in out
    m = manifest(results, run_id)
    assert all(h["state"] == "complete" for h in m["hosts"].values()), m
    # What the live stream printed, across the reconnect, is worker 0's stdout byte for byte.
    streamed = (results / run_id / "worker0.stream.log").read_bytes()
    assert streamed == (results / run_id / "w0" / "stdout.log").read_bytes()
    assert streamed.count(b'"key": "tracked_stats"') == 20


def test_a_dead_host_is_marked_missing_and_a_later_collect_loses_and_duplicates_nothing(
        ssh_hosts: SshHosts, tmp_path: Path, ernie_cmd: list[str]) -> None:
    results = tmp_path / "results"
    code, run_id, out = run_in_process(ssh_hosts, results, ["steps=10", "sleep=0.5"],
                                       on_started=later(1.5, lambda: ssh_hosts.kill(ssh_hosts[2])), lost_after=4)
    assert code != 0, out
    first = manifest(results, run_id)
    assert [first["hosts"][n]["state"] for n in ("w0", "w1", "w2")] == ["complete", "complete", "missing"]
    assert first["hosts"]["w2"]["exit_code"] is None and "w2" in first["hosts"]["w2"]["reason"]
    on_disk = sorted(str(p.relative_to(results)) for p in (results / run_id).rglob("*") if p.is_file())

    again = ernie(ernie_cmd, "collect", run_id, "--results", str(results), "--wait-ssh-seconds", "3")
    assert again.returncode == 1, again.stdout + again.stderr
    second = manifest(results, run_id)
    for name in ("w0", "w1"):
        assert second["hosts"][name]["files"] == first["hosts"][name]["files"]
        assert second["hosts"][name]["fetched"] == {"files": 0, "bytes": 0}
    assert second["hosts"]["w2"]["state"] == "missing"
    # `ernie collect` adds its step to the run's timeline; the run's own steps stay.
    assert timeline_steps(results, run_id) == ["wait_ssh", "push", "setup", "run", "collect", "collect"]
    assert sorted(str(p.relative_to(results)) for p in (results / run_id).rglob("*") if p.is_file()) == on_disk

    # The host comes back: its partial output is collected; the others are not fetched again.
    ssh_hosts.start_sshd(ssh_hosts[2])
    third_run = ernie(ernie_cmd, "collect", run_id, "--results", str(results), "--wait-ssh-seconds", "3")
    assert third_run.returncode == 1
    third = manifest(results, run_id)
    w2 = third["hosts"]["w2"]
    assert (w2["state"], w2["exit_code"]) == ("failed", None) and "killed" in w2["reason"]
    assert "data/blob.bin" in w2["files"] and w2["fetched"]["files"] == len(w2["files"])
    assert all(third["hosts"][n]["fetched"]["files"] == 0 for n in ("w0", "w1"))
    for name, meta in w2["files"].items():
        assert sha256_file(results / run_id / "w2" / name) == meta["sha256"]
    assert not list((results / run_id).rglob("*.part"))
    assert timeline_steps(results, run_id) == ["wait_ssh", "push", "setup", "run", "collect", "collect", "collect"]


def test_detached_workers_outlive_ernie_and_status_logs_stop_act_on_them(ssh_hosts: SshHosts, tmp_path: Path,
                                                                         ernie_cmd: list[str]) -> None:
    results = tmp_path / "results"
    inv = str(ssh_hosts.inventory_path)
    proc = subprocess.Popen([*ernie_cmd, "run", str(ECHO), "--inventory", inv, "--results", str(results),
                             "--set", "steps=400", "--set", "sleep=0.25"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(results.glob("*/worker0.stream.log")):
            time.sleep(0.5)
    finally:
        proc.kill()  # ernie itself dies; the workers must not
        proc.wait(timeout=30)
    run_id = only_run(results)
    status = ernie(ernie_cmd, "status", "--results", str(results))
    assert status.returncode == 0 and status.stdout.count("running") == 3, status.stdout + status.stderr
    logs = ernie(ernie_cmd, "logs", run_id, "--worker", "2", "--results", str(results))
    assert logs.returncode == 0 and ':::MLLOG {"namespace": ""' in logs.stdout
    bad = ernie(ernie_cmd, "logs", run_id, "--worker", "5", "--results", str(results))
    assert bad.returncode == 2 and "--worker 5" in bad.stderr
    follower = subprocess.Popen([*ernie_cmd, "logs", "--follow", "--results", str(results)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stopped = ernie(ernie_cmd, "stop", run_id, "--results", str(results))
    assert stopped.returncode == 0 and stopped.stdout.count("stopped") == 3, stopped.stdout + stopped.stderr
    followed, _ = follower.communicate(timeout=30)  # --follow ends by itself once the worker has ended
    assert follower.returncode == 0
    assert followed == (remote_output(ssh_hosts, 0, run_id) / "stdout.log").read_text()
    for i in range(3):
        assert (remote_output(ssh_hosts, i, run_id) / "exit_code").read_text().strip() == "143"
    collected = ernie(ernie_cmd, "collect", run_id, "--results", str(results))
    assert collected.returncode == 1
    assert {h["state"] for h in manifest(results, run_id)["hosts"].values()} == {"failed"}


def test_tpu_vm_requirements_go_into_a_venv_reused_while_unchanged(ssh_hosts: SshHosts, tmp_path: Path,
                                                                   ernie_cmd: list[str]) -> None:
    inventory = ssh_hosts.inventory()
    inventory["hosts"] = inventory["hosts"][:1]
    inv = tmp_path / "one.json"
    inv.write_text(json.dumps(inventory))
    outputs = []
    for attempt in range(2):
        results = tmp_path / f"results{attempt}"
        proc = ernie(ernie_cmd, "run", str(WORKLOADS / "pyenv"), "--inventory", str(inv), "--results", str(results),
                     timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outputs.append(proc.stdout)
        prefix = (results / only_run(results) / "w0" / "prefix.txt").read_text().strip()
        assert prefix.startswith(str(ssh_hosts[0].home / "ernie" / "venvs") + "/")
    assert "created" in outputs[0] and "reused" in outputs[1]


def test_local_runner_uses_this_interpreter(tmp_path: Path, ernie_cmd: list[str]) -> None:
    results = tmp_path / "results"
    proc = ernie(ernie_cmd, "run", str(ECHO), "--local", "--results", str(results), "--set", "steps=2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = only_run(results)
    assert manifest(results, run_id)["hosts"]["local"]["state"] == "complete"
    worker = json.loads((results / run_id / "local" / "worker.json").read_text())
    assert Path(worker["python"]).parent == Path(ernie_cmd[0]).parent


def test_a_failing_worker_fails_the_run_and_says_which(ssh_hosts: SshHosts, tmp_path: Path,
                                                       ernie_cmd: list[str]) -> None:
    results = tmp_path / "results"
    proc = ernie(ernie_cmd, "run", str(ECHO), "--inventory", str(ssh_hosts.inventory_path), "--results", str(results),
                 "--set", "steps=2", "--set", "fail_worker=1")
    assert proc.returncode == 1
    assert "w1: Error: this worker was told to fail" in proc.stdout
    m = manifest(results, only_run(results))
    assert [m["hosts"][n]["state"] for n in ("w0", "w1", "w2")] == ["complete", "failed", "complete"]
    assert m["hosts"]["w1"]["exit_code"] == 3


def test_wrong_key_unreachable_host_bad_inventory_and_unknown_workload_fail_clearly(
        ssh_hosts: SshHosts, tmp_path: Path, ernie_cmd: list[str]) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = ssh_hosts.write_inventory(tmp_path / "wrong.json", ssh_key_path=str(other))
    unreachable = ssh_hosts.inventory()
    unreachable["hosts"][1]["address"] = ssh_hosts[1].address.rsplit(".", 1)[0] + ".200"
    (tmp_path / "gone.json").write_text(json.dumps(unreachable))
    (tmp_path / "bad.json").write_text('{"runner": "tpu-vm", "hosts": [')
    cases = [
        (["--inventory", str(wrong)], "the SSH key was refused; check ssh_user and ssh_key_path"),
        (["--inventory", str(tmp_path / "gone.json")], "w1 (ernie@"),
        (["--inventory", str(tmp_path / "bad.json")], "not valid JSON"),
    ]
    for args, message in cases:
        start = time.monotonic()
        proc = ernie(ernie_cmd, "run", str(ECHO), *args, "--wait-ssh-seconds", "4", "--results", str(tmp_path / "r"))
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and time.monotonic() - start < 30
    assert "unreachable" in ernie(ernie_cmd, "run", str(ECHO), "--inventory", str(tmp_path / "gone.json"),
                                  "--wait-ssh-seconds", "4", "--results", str(tmp_path / "r")).stderr
    proc = ernie(ernie_cmd, "run", "no-such-workload", "--inventory", str(ssh_hosts.inventory_path))
    assert proc.returncode == 2 and "unknown workload 'no-such-workload'" in proc.stderr
    # None of those runs reached its hosts: none is the "latest run" that status, logs, collect and stop act on.
    status = ernie(ernie_cmd, "status", "--results", str(tmp_path / "r"))
    assert status.returncode == 2 and "no run under" in status.stderr and "reached its hosts" in status.stderr


def test_a_host_key_that_changes_within_a_run_is_refused(ssh_hosts: SshHosts, tmp_path: Path) -> None:
    inventory = load_inventory_file(ssh_hosts.inventory_path)
    known = tmp_path / "known_hosts"
    # A host that refuses our key (still booting, say) is not trusted yet: its key is not recorded.
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    refused = load_inventory_file(ssh_hosts.write_inventory(tmp_path / "other.json", ssh_key_path=str(other)))
    with pytest.raises(RemoteError, match="the SSH key was refused"):
        Connector(refused, known, FAST).open(refused.hosts[0])
    assert not known.exists()
    Connector(inventory, known, FAST).open(inventory.hosts[0]).close()
    assert known.read_text() == f"{ssh_hosts[0].address} {ssh_hosts[0].host_key_pub}\n"
    Connector(inventory, known, FAST).open(inventory.hosts[0]).close()  # the same key again: accepted
    # Another machine answering at worker 0's address: simulated by recording worker 1's key for it.
    known.write_text(f"{ssh_hosts[0].address} {ssh_hosts[1].host_key_pub}\n")
    with pytest.raises(ErnieError, match="its host key changed during this run"):
        Connector(inventory, known, FAST).open(inventory.hosts[0])


def test_an_interrupted_collect_resumes_from_its_part_file_and_verifies(ssh_hosts: SshHosts, tmp_path: Path) -> None:
    inventory = load_inventory_file(ssh_hosts.inventory_path)
    s = Connector(inventory, tmp_path / "known_hosts", FAST).open(inventory.hosts[0])
    try:
        layout = Layout(base=s.base, workload="w", run_id="r")
        s.check(f"mkdir -p {layout.output} && head -c 3000000 /dev/urandom > {layout.output}/big.bin", "writing")
        data = (ssh_hosts[0].home / "ernie" / "runs" / "r" / "output" / "big.bin").read_bytes()
        dest = tmp_path / "w0"
        dest.mkdir()
        (dest / "big.bin.part").write_bytes(data[:1_000_000])  # what an interrupted collect left
        first = collect_host(s, layout, dest, ("**/*",))
        assert first.fetched_bytes == 2_000_000 and (dest / "big.bin").read_bytes() == data
        assert not (dest / "big.bin.part").exists()
        (dest / "big.bin").unlink()
        (dest / "big.bin.part").write_bytes(b"x" * 1_000_000)  # a part that does not match: fetched anew
        second = collect_host(s, layout, dest, ("**/*",))
        assert second.fetched_bytes == 2_000_000 + 3_000_000 and (dest / "big.bin").read_bytes() == data
        assert collect_host(s, layout, dest, ("**/*",)).fetched_files == 0
    finally:
        s.close()


def test_the_stream_never_cuts_a_utf8_character_and_reads_an_ended_worker_to_the_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ernie.inventory import local_inventory
    from ernie.remote import stream

    monkeypatch.setattr(stream, "_READ_LIMIT", 5)  # byte-counted reads that end inside characters
    inventory = local_inventory()
    connector = Connector(inventory, tmp_path / "known_hosts", FAST)
    session = connector.open(inventory.hosts[0])
    layout = Layout(base=str(tmp_path / "base"), workload="w", run_id="r")
    output = Path(layout.output)
    output.mkdir(parents=True)
    text = "".join(f"step {i}: été ✓ 日本語\n" for i in range(6))
    (output / "stdout.log").write_text(text, encoding="utf-8")
    (output / "exit_code").write_text("0\n")  # the worker has already ended: no pid file
    copy = tmp_path / "stream.log"
    follower = stream.Follower(connector, {"local": session}, {"local": layout}, Console(file=io.StringIO()),
                               total=None, regex=None, stream_copy=copy, lost_after=30, interval=0)
    assert follower.follow(time.monotonic() + 60, "w") == stream.FollowResult(lost={}, timed_out=False)
    assert copy.read_text(encoding="utf-8") == text


def test_file_names_sha256sum_would_escape_are_collected_as_they_are(tmp_path: Path) -> None:
    from ernie.inventory import local_inventory

    inventory = local_inventory()
    session = Connector(inventory, tmp_path / "known_hosts", FAST).open(inventory.hosts[0])
    layout = Layout(base=str(tmp_path / "base"), workload="w", run_id="r")
    output = Path(layout.output)
    (output / "sub").mkdir(parents=True)
    odd = {"back\\slash.txt": b"one", "new\nline.txt": b"two", "sub/sp ace  two.txt": b"three", "plain": b"four"}
    for name, data in odd.items():
        (output / name).write_bytes(data)
    collected = collect_host(session, layout, tmp_path / "local", ("**/*",))
    assert set(collected.files) == set(odd)
    for name, data in odd.items():
        assert (tmp_path / "local" / name).read_bytes() == data
        assert collected.files[name]["sha256"] == sha256_file(output / name)
