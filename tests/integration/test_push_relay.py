"""Relay push (issue 21) over real SSH: eight namespace hosts, this machine's link to them shaped to 50 Mbit/s.

What a test finds in a host's home travelled there (each host has its own home); the bytes through the
shaped link are the bridge device's transmit counter, so "crossed the user's link once" is measured, not
assumed. Host-to-host traffic does not pass that device, as a cloud's internal network does not pass the
user's uplink.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from testing.sshhosts import SshHosts, ssh_hosts_up

from ernie.errors import ErnieError
from ernie.inventory import load_inventory_file
from ernie.remote.connect import Connector, Session, Timeouts, fan_out
from ernie.remote.layout import Layout
from ernie.remote.push import PUSHED_LIST, Bundle
from ernie.remote import relay
from ernie.remote.collect import SharedFetches, collect_host, sha256_file
from ernie.remote.relay import MARKER, PushReport, choose, push_all
from ernie.run import RunOptions, options, run_workload
from ernie.workload import find_workload, resolve

ECHO = Path(__file__).parents[1] / "workloads" / "echo"
FAST = Timeouts(connect=5, command=60, wait_ssh=30, poll=2)
UPLINK_MBIT = 50


@pytest.fixture
def eight() -> Iterator[SshHosts]:
    """Eight hosts, files in memory (each cloud worker has a disk of its own), the user's link at 50 Mbit/s."""
    with ssh_hosts_up(8, uplink_mbit=UPLINK_MBIT, in_memory=True) as hosts:
        yield hosts


def make_bundle(root: Path, mib: int = 3) -> Path:
    """About `mib` MiB: text that compresses, random bytes that do not, and a nested directory."""
    rng = random.Random(21)
    (root / "pkg" / "sub").mkdir(parents=True)
    for i in range(40):
        (root / "pkg" / f"mod{i}.py").write_text(f"# module {i}\n" + "x = 1\n" * (200 + i))
    (root / "pkg" / "sub" / "weights.bin").write_bytes(rng.randbytes(mib << 20))
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    return root


def sessions(hosts: SshHosts, tmp: Path) -> list[Session]:
    inventory = load_inventory_file(hosts.inventory_path)
    connector = Connector(inventory, tmp / "known_hosts", FAST)
    opened = fan_out(connector.open, inventory.hosts, timeout=60, name=lambda h: h.name)
    assert all(o.ok for o in opened.values()), opened
    return sorted((o.value for o in opened.values()), key=lambda s: s.host.worker)


def do_push(hosts: SshHosts, opened: list[Session], bundle_dir: Path, mode: str, dest: str = "t",
            on_hop=None) -> tuple[PushReport, int, list[str]]:
    """One push: its report, the bytes that crossed the shaped link, and what it announced."""
    said: list[str] = []
    before = hosts.uplink_bytes()
    report = push_all(opened, Bundle.from_directory(bundle_dir), {s.host.name: f"{s.base}/bundles/{dest}"
                                                                  for s in opened},
                      load_inventory_file(hosts.inventory_path), mode, FAST, said.append, on_hop)
    return report, hosts.uplink_bytes() - before, said


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (but ernie's list) by relative name, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != PUSHED_LIST}


def on_host(hosts: SshHosts, index: int, dest: str = "t") -> Path:
    return hosts[index].home / "ernie" / "bundles" / dest


def relay_leftovers(hosts: SshHosts, index: int) -> list[str]:
    """Anything of a relay key still on the host: its files, its authorized_keys entries."""
    host = hosts[index]
    relay_dir = host.home / "ernie" / "relay"
    files = [str(p) for p in relay_dir.rglob("*")] if relay_dir.exists() else []
    keys = [line for line in (host.home / ".ssh" / "authorized_keys").read_text().splitlines() if MARKER in line]
    return files + keys


def test_relay_gives_eight_hosts_identical_bundles_through_one_upload_and_a_repush_moves_nothing(
        eight: SshHosts, tmp_path: Path) -> None:
    src = make_bundle(tmp_path / "bundle")
    opened = sessions(eight, tmp_path)
    size = Bundle.from_directory(src).total_bytes

    report, uplink, said = do_push(eight, opened, src, "relay")
    assert all(o.ok for o in report.outcomes.values()), report.outcomes
    assert said == ["push: relay (--push relay)"]
    for i in range(8):
        assert tree(on_host(eight, i)) == tree(src), f"w{i}'s bundle differs from the local one"
        assert (on_host(eight, i) / "run.sh").stat().st_mode & 0o111, "the mode did not travel"
    relayed = {n: o.value.via for n, o in report.outcomes.items() if o.value.via}
    assert sorted(relayed) == [f"w{i}" for i in range(1, 8)], report.notes
    # One bundle (the text gzip'd) plus listings and commands, where a direct push sends eight.
    assert uplink < 1.3 * size, f"{uplink:,} bytes crossed the shaped link for a {size:,}-byte bundle"

    report, uplink, _ = do_push(eight, opened, src, "relay")
    assert all(o.ok and o.value.files_sent == 0 for o in report.outcomes.values())
    assert uplink < 0.01 * size, f"an unchanged re-push sent {uplink:,} bytes ({uplink / size:.2%} of the bundle)"

    # A changed file crosses the link once; a file that left the bundle leaves every host.
    (src / "pkg" / "sub" / "weights.bin").write_bytes(random.Random(7).randbytes(1 << 20))
    (src / "pkg" / "mod3.py").unlink()
    report, uplink, _ = do_push(eight, opened, src, "relay")
    assert all(o.ok for o in report.outcomes.values()), report.outcomes
    assert uplink < (1 << 20) * 1.3, f"{uplink:,} bytes crossed the link for one changed 1 MiB file"
    for i in range(8):
        assert tree(on_host(eight, i)) == tree(src), f"w{i} did not follow the change"
        assert not (on_host(eight, i) / "pkg" / "mod3.py").exists()


def test_the_relay_key_exists_only_for_the_push_and_can_only_untar(eight: SshHosts, tmp_path: Path) -> None:
    src = make_bundle(tmp_path / "bundle")
    opened = sessions(eight, tmp_path)
    seen: list[tuple[str, str]] = []

    def during(source: str, target: str) -> None:
        s, t = int(source[1:]), int(target[1:])
        entries = [line for line in (eight[t].home / ".ssh" / "authorized_keys").read_text().splitlines()
                   if MARKER in line]
        assert len(entries) == 1 and ",restrict," in entries[0]
        assert entries[0].startswith('command="case $SSH_ORIGINAL_COMMAND in z) exec tar -xf - -C ')
        assert 'from="' in entries[0] and 'expiry-time="' in entries[0]
        (key,) = (eight[s].home / "ernie" / "relay").glob("*/key")
        assert key.stat().st_mode & 0o777 == 0o600
        if not seen:  # the key runs nothing but the forced tar, whatever the source asks for
            proc = subprocess.run(
                ["ip", "netns", "exec", eight[s].netns, "su", "-s", "/bin/sh", eight.user, "-c",
                 f"ssh -F /dev/null -i {key} -o BatchMode=yes -o StrictHostKeyChecking=no "
                 f"-o UserKnownHostsFile=/dev/null {eight.user}@{eight[t].address} id </dev/null"],
                capture_output=True, text=True, timeout=30)
            assert proc.returncode != 255 and "uid=" not in proc.stdout, (proc.returncode, proc.stdout, proc.stderr)
        seen.append((source, target))

    report, _, _ = do_push(eight, opened, src, "relay", on_hop=during)
    assert all(o.ok for o in report.outcomes.values()), report.outcomes
    assert len(seen) == 7, seen
    for i in range(8):
        assert relay_leftovers(eight, i) == [], f"w{i} keeps the relay key"
        assert tree(on_host(eight, i)) == tree(src)


@pytest.mark.parametrize("way", ["stream", "hops"])
def test_a_relay_source_killed_mid_push_is_replaced_and_a_worker_without_the_bundle_is_named(
        eight: SshHosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str) -> None:
    """stream: the seed dies while it passes the stream on (the next worker becomes the seed); hops: with no
    stream, the seed dies as its hops run (another worker that has the bundle serves them)."""
    if way == "hops":
        monkeypatch.setattr(relay, "STREAM_FANOUT", 0)
    src = make_bundle(tmp_path / "bundle", mib=8)  # 1.3 s through the link: the seed dies 0.3 s into it
    opened = sessions(eight, tmp_path)
    eight.kill(eight[7])  # w7 is gone before the push: it cannot get the bundle
    hops: list[tuple[str, str]] = []

    def kill_the_seed(source: str, target: str) -> None:
        hops.append((source, target))
        if way == "stream" and len(hops) == 1:  # the upload and its stream are under way: the seed dies
            threading.Thread(target=lambda: (time.sleep(0.3), eight.kill(eight[0])), daemon=True).start()
        if way == "hops" and len(hops) == 2:  # the seed's first hop is under way: the seed dies
            eight.kill(eight[0])

    report, _, _ = do_push(eight, opened, src, "relay", on_hop=kill_the_seed)
    assert not report.outcomes["w7"].ok and "w7" in str(report.outcomes["w7"].error)
    if way == "stream":
        assert not report.outcomes["w0"].ok, "the seed died before the upload ended"
        assert any(note.startswith("w0 failed as the seed") for note in report.notes), report.notes
        assert report.outcomes["w1"].value.via is None, "w1 became the seed, pushed from here"
    else:
        assert any(note.startswith("w0 stopped answering as a relay source") for note in report.notes), report.notes
        assert report.outcomes[hops[1][1]].value.via != "w0", "the hop the seed died in came from another source"
    for i in range(1, 7):
        outcome = report.outcomes[f"w{i}"]
        assert outcome.ok, outcome.error
        assert tree(on_host(eight, i)) == tree(src), f"w{i}'s bundle differs"
        assert relay_leftovers(eight, i) == [], f"w{i} keeps the relay key"


def test_direct_and_relay_leave_the_same_bundle_and_runs_give_the_same_manifest(
        eight: SshHosts, tmp_path: Path) -> None:
    src = make_bundle(tmp_path / "bundle")
    opened = sessions(eight, tmp_path)
    for mode in ("direct", "relay"):
        report, _, said = do_push(eight, opened, src, mode, dest=mode)
        assert all(o.ok for o in report.outcomes.values()) and said == [f"push: {mode} (--push {mode})"]
    for i in range(8):
        assert tree(on_host(eight, i, "direct")) == tree(on_host(eight, i, "relay")) == tree(src)
        assert (on_host(eight, i, "direct") / PUSHED_LIST).read_bytes() == \
            (on_host(eight, i, "relay") / PUSHED_LIST).read_bytes()
    for s in opened:
        s.close()

    # The whole run, once each way: the same hosts, files and exit codes in manifest.json.
    manifests = {}
    for mode in ("direct", "relay"):
        out = io.StringIO()
        results = tmp_path / f"results-{mode}"
        opts = RunOptions(results_root=results, timeouts=FAST, run_timeout_s=120, collect_timeout_s=60, push=mode)
        code = run_workload(resolve(find_workload(str(ECHO)), ["steps=2", "sleep=0"]),
                            load_inventory_file(eight.inventory_path), {"kind": "file", "value": "x"}, opts,
                            Console(file=out, width=200))
        assert code == 0, out.getvalue()
        assert f"push: {mode} (--push {mode})" in out.getvalue()
        (run_dir,) = results.iterdir()
        manifests[mode] = json.loads((run_dir / "manifest.json").read_text())["hosts"]
    shape = {mode: {h: (m["exit_code"], sorted(m["files"])) for h, m in hosts.items()}
             for mode, hosts in manifests.items()}
    assert shape["direct"] == shape["relay"] and len(shape["relay"]) == 8


def test_the_choice_is_automatic_and_says_why(eight: SshHosts, tmp_path: Path) -> None:
    src = make_bundle(tmp_path / "bundle")
    opened = sessions(eight, tmp_path)
    _, _, said = do_push(eight, opened[:1], src, "auto")
    assert said == ["push: direct (one host)"]
    report, uplink, said = do_push(eight, opened, src, "auto")  # seven hosts lack the whole bundle; 50 Mbit/s
    assert said[0].startswith("push: relay (8 hosts and the link carried "), said
    assert all(o.ok for o in report.outcomes.values()) and uplink < 0.5 * 8 * Bundle.from_directory(src).total_bytes
    _, _, said = do_push(eight, opened, src, "auto")  # nothing to send anywhere
    assert said[0].startswith("push: direct (8 hosts, but at most 0 bytes for each: too little to relay)"), said
    assert choose("auto", 8, 400e6, 20 << 20).mode == "direct"  # a link as fast as the workers' own: no hop
    assert choose("auto", 8, 6e6, 20 << 20).mode == "relay"
    assert choose("direct", 8, 1e6, 20 << 20).mode == "direct" and choose("relay", 8, 400e6, 0).mode == "relay"
    with pytest.raises(ErnieError, match="--push: 'sideways' is not one of auto, direct, relay"):
        options(tmp_path, push="sideways")


def test_a_large_output_every_worker_holds_alike_crosses_the_link_once(eight: SshHosts, tmp_path: Path) -> None:
    """Issue 21, part 3: the same checkpoint on eight workers is fetched once and copied seven times here;
    each worker's own files, the manifest's entries and a later collect stay as they were."""
    rng = random.Random(3)
    checkpoint = rng.randbytes(4 << 20)
    for i, host in enumerate(eight.hosts):
        out = host.home / "ernie" / "runs" / "r" / "output"
        out.mkdir(parents=True)
        (out / "ckpt.bin").write_bytes(checkpoint)
        (out / "own.bin").write_bytes(rng.randbytes(2 << 20))
        (out / "stdout.log").write_text(f"worker {i}\n")
    opened = sessions(eight, tmp_path)
    shared = SharedFetches()

    def collect(s: Session):
        return collect_host(s, Layout(s.base, "t", "r"), tmp_path / "results" / s.host.name, ("*.bin",), shared)

    before = {host.name: eight.sent_by(host) for host in eight.hosts}
    collected = fan_out(collect, opened, timeout=120, name=lambda s: s.host.name)
    sent = {host.name: eight.sent_by(host) - before[host.name] for host in eight.hosts}
    assert all(o.ok for o in collected.values()), collected
    assert sum(o.value.shared_files for o in collected.values()) == 7
    assert sum(o.value.fetched_bytes for o in collected.values()) < (4 << 20) + 8 * (2 << 20) + 4096
    # On the links: one worker sent the checkpoint and its own file, each other one its own file only. The
    # counters include TCP/SSH framing and retransmissions (eight streams at once on a loaded machine drop
    # and resend segments), hence 3 MiB of slack, which a second crossing of the 4 MiB checkpoint would exceed.
    fetcher, *others = sorted(sent, key=sent.get, reverse=True)
    assert sent[fetcher] >= (4 << 20) + (2 << 20), sent
    assert all(sent[name] < (2 << 20) + (3 << 20) for name in others), f"bytes each worker sent: {sent}"
    for i, host in enumerate(eight.hosts):
        out = host.home / "ernie" / "runs" / "r" / "output"
        files = collected[host.name].value.files
        for name in ("ckpt.bin", "own.bin", "stdout.log"):
            local = tmp_path / "results" / host.name / name
            assert sha256_file(local) == sha256_file(out / name) == files[name]["sha256"]
            assert files[name]["size"] == (out / name).stat().st_size
    again = fan_out(collect, opened, timeout=120, name=lambda s: s.host.name)
    assert all(o.ok and o.value.fetched_files == 0 and o.value.shared_files == 0 for o in again.values())


def test_a_worker_no_other_worker_can_reach_is_pushed_directly(eight: SshHosts, tmp_path: Path) -> None:
    src = make_bundle(tmp_path / "bundle")
    opened = sessions(eight, tmp_path)
    keys = eight[3].home / ".ssh" / "authorized_keys"

    def refuse_the_relay_key_on_w3(source: str, target: str) -> None:
        if target == "w3":  # as a worker whose sshd or firewall turns the other workers away
            keys.write_text("".join(line + "\n" for line in keys.read_text().splitlines() if MARKER not in line))

    report, _, _ = do_push(eight, opened, src, "relay", on_hop=refuse_the_relay_key_on_w3)
    assert all(o.ok for o in report.outcomes.values()), report.outcomes
    assert report.outcomes["w3"].value.via is None
    assert any(note.startswith(f"w3: {relay.MAX_ATTEMPTS} hops failed") for note in report.notes), report.notes
    for i in range(8):
        assert tree(on_host(eight, i)) == tree(src), f"w{i}'s bundle differs"
        assert relay_leftovers(eight, i) == [], f"w{i} keeps the relay key"
