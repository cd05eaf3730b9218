"""The docker runner against a real container engine and an authenticated registry (testing/sshhosts.py), no stand-in.

Issue 14's runner defects, as a first GPU run would meet them: 1 the DLC entrypoint evaluates its arguments again,
2 the pull needs the login user signed in and the host's boot script finished, 3 requirements go into a derived
image built once, 8 python3-venv may be missing on a TPU VM, 10 EFA devices, memlock and libfabric settings reach
the container.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import socket
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import pytest
from testing.sshhosts import Containers, SshHosts, container_hosts  # noqa: F401 - the fixture

from ernie.remote.runners import render_venv_script

WORKLOAD = Path(__file__).parents[1] / "workloads" / "container"
ECHO = Path(__file__).parents[1] / "workloads" / "echo"


def ernie(ernie_cmd: list[str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*ernie_cmd, *args], capture_output=True, text=True, timeout=timeout)


def probe_wheel(directory: Path) -> Path:
    """A one-module wheel, `ernie_probe`, that only the derived image will have."""
    directory.mkdir(parents=True)
    wheel = directory / "ernie_probe-1.0-py3-none-any.whl"
    info = "ernie_probe-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as whl:
        whl.writestr("ernie_probe/__init__.py", 'VERSION = "1.0"\n')
        whl.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: ernie-probe\nVersion: 1.0\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: ernie-tests\nRoot-Is-Purelib: true\n"
                                      "Tag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", f"ernie_probe/__init__.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n"
                                       f"{info}/RECORD,,\n")
    return wheel


def serve_directory(directory: Path, address: str) -> tuple[subprocess.Popen, int]:
    """A plain HTTP server for `directory` on `address` (a package index pip's --find-links reads)."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(["python3", "-m", "http.server", str(port), "--bind", address, "--directory",
                             str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"http.server on {address}:{port} did not start")


def host_limit(pid: int, name: str) -> int:
    """A hard limit of the engine's process: once any --ulimit is given, podman sets nofile and nproc too, and
    this machine cannot raise any limit above what its engine has."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith(name):
            return int(line.split()[-2] if line.split()[-1] in ("files", "processes", "bytes") else line.split()[-1])
    raise KeyError(name)


def only_new_run(results: Path, seen: set[str]) -> str:
    (run_id,) = {p.name for p in results.iterdir() if p.is_dir()} - seen
    seen.add(run_id)
    return run_id


def test_a_dlc_like_image_runs_the_workload_from_an_authenticated_registry(
        container_hosts: tuple[SshHosts, Containers], tmp_path: Path, ernie_cmd: list[str]) -> None:
    hosts, engines = container_hosts
    image = engines.push_image("ernie/dlc-like:1")
    gateway = engines.registry.address.split(":")[0]
    index, port = serve_directory(probe_wheel(tmp_path / "wheels").parent, gateway)
    try:
        workload = tmp_path / "workload"
        shutil.copytree(WORKLOAD, workload)
        (workload / "requirements.txt").write_text(
            f"--no-index\n--find-links http://{gateway}:{port}/\n--trusted-host {gateway}\nernie-probe==1.0\n")
        # An EFA device node (uverbs' own numbers) that the container sees where EFA's would be.
        device = hosts.base / "uverbs0"
        subprocess.run(["mknod", str(device), "c", "231", "192"], check=True)
        engine_pid = engines.services["w0"].pid
        memlock = host_limit(engine_pid, "Max locked memory")
        ulimits = [f"memlock={memlock}:{memlock}",
                   *(f"{n}={v}:{v}" for n, v in (("nofile", host_limit(engine_pid, "Max open files")),
                                                 ("nproc", host_limit(engine_pid, "Max processes"))))]
        for host in hosts.hosts:
            engines.password_file(host)
            (host.home / "bootstrap.log").write_text("cloud-init: pulled the image\n")
        inventory = hosts.write_inventory(
            tmp_path / "docker.json", runner="docker", image=image,
            registry_login={"registry": engines.registry.address, "username": engines.registry.username,
                            "password_command": "cat ~/.registry-password"},
            container={"devices": [f"{device}:/dev/infiniband/uverbs0"], "ulimits": ulimits,
                       "env": {"FI_PROVIDER": "efa"}},
            bootstrap={"done_file": "~/bootstrap-done", "failed_file": "~/bootstrap-failed",
                       "log_file": "~/bootstrap.log", "timeout_s": 60})
        results, seen = tmp_path / "results", set()

        # Nothing is set up until every host's boot script is done: w1 finishes 3 s later.
        (hosts[0].home / "bootstrap-done").touch()
        threading.Timer(3.0, (hosts[1].home / "bootstrap-done").touch).start()
        first = ernie(ernie_cmd, "run", str(workload), "--inventory", str(inventory), "--results", str(results))
        assert first.returncode == 0, first.stdout + first.stderr
        run_id = only_new_run(results, seen)
        steps = json.loads((results / run_id / "timeline.json").read_text())["steps"]
        (waited,) = [s for s in steps if s["name"] == "wait_bootstrap"]
        assert waited["ok"] and waited["duration_s"] >= 2.5
        assert [s["name"] for s in steps][:2] == ["wait_ssh", "wait_bootstrap"]
        assert first.stdout.count(f"signed in to {engines.registry.address}") == 2
        assert first.stdout.count(f"pulled {image}") == 2 and first.stdout.count("built ernie-derived:") == 2

        for host in hosts.hosts:
            probe = json.loads((results / run_id / host.name / "probe.json").read_text())
            # The command ran (through the entrypoint's eval) with its quoted argument intact.
            assert probe["marker"] == "two words; and $HOME, quoted"
            assert probe["worker"] == str(host.worker) and probe["in_container"]
            assert probe["probe_version"] == "1.0"  # from the derived image
            assert probe["efa_device"] and probe["fi_provider"] == "efa" and probe["memlock"] == [memlock, memlock]
            # The GPU and EFA flags are on the command line (no GPU here to see them work).
            run_sh = (host.home / "ernie" / "runs" / run_id / "run.sh").read_text()
            assert " --gpus all " in run_sh and f" --device {device}:/dev/infiniband/uverbs0 " in run_sh
            assert f" --ulimit memlock={memlock}:{memlock} " in run_sh and " -e FI_PROVIDER=efa " in run_sh
            # Each host pulled the image and built the derived one in its own engine.
            images = engines.podman(host, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout
            assert "localhost/ernie-derived:" in images and image in images

        # A second run reuses the derived image on every host.
        second = ernie(ernie_cmd, "run", str(workload), "--inventory", str(inventory), "--results", str(results))
        assert second.returncode == 0, second.stdout + second.stderr
        only_new_run(results, seen)
        assert second.stdout.count("reused ernie-derived:") == 2 and "built" not in second.stdout
        assert second.stdout.count(f"present {image}") == 2

        # An exit status from inside the container reaches the manifest.
        failed = ernie(ernie_cmd, "run", str(workload), "--inventory", str(inventory), "--results", str(results),
                       "--set", "exit_code=3")
        assert failed.returncode == 1
        manifest = json.loads((results / only_new_run(results, seen) / "manifest.json").read_text())
        assert {(h["state"], h["exit_code"]) for h in manifest["hosts"].values()} == {("failed", 3)}

        # `ernie stop` ends the containers, and what they wrote is collected.
        long = subprocess.Popen([*ernie_cmd, "run", str(workload), "--inventory", str(inventory), "--results",
                                 str(results), "--set", "sleep=300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 240
        running: list[str] = []
        while time.monotonic() < deadline and len(running) < 2:
            running = [line for line in engines.podman(hosts[0], "ps", "--format", "{{.Names}}").stdout.split()
                       + engines.podman(hosts[1], "ps", "--format", "{{.Names}}").stdout.split()
                       if line.startswith("ernie-")]
            time.sleep(1)
        assert len(running) == 2, running
        run_id = only_new_run(results, seen)
        stopped = ernie(ernie_cmd, "stop", run_id, "--results", str(results))
        assert stopped.returncode == 0 and stopped.stdout.count("stopped") == 2, stopped.stdout + stopped.stderr
        long.communicate(timeout=120)
        for host in hosts.hosts:
            names = engines.podman(host, "ps", "-a", "--format", "{{.Names}}").stdout.split()
            assert not [n for n in names if n.startswith(f"ernie-{run_id}")]
        manifest = json.loads((results / run_id / "manifest.json").read_text())
        assert {h["state"] for h in manifest["hosts"].values()} == {"failed"}
        assert all("probe.json" in h["files"] for h in manifest["hosts"].values())
    finally:
        index.terminate()
        index.wait(timeout=10)


def test_the_entrypoints_eval_splits_a_bash_c_command_again(container_hosts: tuple[SshHosts, Containers]) -> None:
    """What ernie used to pass (`IMAGE bash -c "CMD ARGS"`) runs nothing in a DLC-like image; its replacement,
    `bash FILE`, reads the same evaluated or not."""
    hosts, engines = container_hosts
    image = engines.push_image("ernie/dlc-like:1")
    login = ["login", "-u", engines.registry.username, "-p", engines.registry.password, engines.registry.address]
    assert engines.podman(hosts[0], *login).returncode == 0
    old = engines.podman(hosts[0], "run", "--rm", "--network", "host", image, "bash", "-c", "echo RUNNING one two")
    assert old.returncode == 0 and "RUNNING" not in old.stdout
    script = hosts[0].home / "cmd.sh"
    script.write_text("echo RUNNING one two\n")
    new = engines.podman(hosts[0], "run", "--rm", "--network", "host", "-v", f"{script}:/ernie-command.sh:ro",
                         image, "bash", "/ernie-command.sh")
    assert new.stdout.strip() == "RUNNING one two", new.stdout + new.stderr


def test_a_failed_boot_script_stops_the_run_with_its_log(ssh_hosts: SshHosts, tmp_path: Path,
                                                          ernie_cmd: list[str]) -> None:
    (ssh_hosts[1].home / "boot.log").write_text("step 1 ok\nerror: docker login failed: no basic auth credentials\n")
    (ssh_hosts[1].home / "boot-failed").touch()
    for host in ssh_hosts.hosts[::2]:
        (host.home / "boot-done").touch()
    inventory = ssh_hosts.write_inventory(tmp_path / "inv.json", bootstrap={
        "done_file": "~/boot-done", "failed_file": "~/boot-failed", "log_file": "~/boot.log", "timeout_s": 120})
    started = time.monotonic()
    proc = ernie(ernie_cmd, "run", str(ECHO), "--inventory", str(inventory), "--results", str(tmp_path / "r"))
    assert proc.returncode != 0 and time.monotonic() - started < 60  # at once, not at the deadline
    text = proc.stdout + proc.stderr
    assert "w1: its boot script failed" in text and "docker login failed: no basic auth credentials" in text
    assert not (ssh_hosts[0].home / "ernie" / "bundles").exists()  # nothing was pushed


def test_a_boot_script_that_never_finishes_times_out(ssh_hosts: SshHosts, tmp_path: Path,
                                                     ernie_cmd: list[str]) -> None:
    inventory = ssh_hosts.write_inventory(tmp_path / "inv.json", bootstrap={"done_file": "~/never", "timeout_s": 3})
    proc = ernie(ernie_cmd, "run", str(ECHO), "--inventory", str(inventory), "--results", str(tmp_path / "r"))
    assert proc.returncode != 0 and "did not finish within 3s" in proc.stdout + proc.stderr


def test_python3_venv_is_installed_when_the_image_lacks_it(tmp_path: Path) -> None:
    """A TPU VM image without python3-venv: `python3 -m venv` cannot run until apt installs it."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    installed = tmp_path / "python3-venv-installed"
    real = shutil.which("python3")
    (bin_dir / "python3").write_text(
        f'#!/bin/sh\nif [ "$1" = -c ] && [ ! -e {installed} ]; then exit 1; fi\nexec {real} "$@"\n')
    (bin_dir / "sudo").write_text(
        f'#!/bin/sh\necho "sudo $*" >> {log}\ncase "$*" in *"install -y -qq python3-venv"*) touch {installed};; esac\n')
    for shim in ("python3", "sudo"):
        (bin_dir / shim).chmod(0o755)
    requirements = tmp_path / "req.txt"
    requirements.write_text("")
    script = render_venv_script(str(tmp_path / "venv"), str(requirements))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "created" and "installed python3-venv" in proc.stdout
    assert "apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3-venv" in log.read_text()
    assert (tmp_path / "venv" / "bin" / "python").exists()
    # Where python3-venv is there, apt is left alone.
    log.unlink()
    (tmp_path / "venv" / ".ernie-ready").unlink()
    again = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and not log.exists()



@pytest.mark.parametrize(("field", "value", "message"), [
    ("bootstrap", {"failed_file": "/var/lib/ernie/failed"}, "bootstrap.done_file: required"),
    ("bootstrap", {"done_file": "ready; rm -rf ~"}, "not a plain absolute path"),
    ("bootstrap", {"done_file": "/r", "timeout_s": 0}, "bootstrap.timeout_s"),
    ("registry_login", {"registry": "r.example:5000", "username": "AWS"}, "registry_login.password_command: required"),
    ("registry_login", {"registry": "r.example/x y", "username": "u", "password_command": "c"}, "host[:port]"),
    ("container", {"devices": ["/dev/infiniband/uverbs0 --privileged"]}, "container.devices"),
    ("container", {"ulimits": ["memlock=-1 --privileged"]}, "NAME=SOFT[:HARD]"),
    ("container", {"env": {"FI PROVIDER": "efa"}}, "container.env.FI PROVIDER"),
    ("container", {"volumes": ["/:/host"]}, "container.volumes: unknown key"),
])
def test_inventory_refuses_bad_host_and_container_settings(field: str, value: dict, message: str) -> None:
    from ernie.errors import ErnieError
    from ernie.inventory import parse_inventory

    inventory = {"cloud": "aws", "runner": "docker", "image": "img", "ssh_user": "ubuntu", "ssh_private_key": "k",
                 "hosts": [{"name": "h", "address": "10.0.0.1", "worker": 0}], field: value}
    with pytest.raises(ErnieError, match=re.escape(message)):
        parse_inventory(inventory, source="test")
