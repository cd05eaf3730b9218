"""Real SSH hosts on this machine: one network namespace per host, each with its own openssh-server.

Each host is a network namespace joined to a bridge in the root namespace by a veth pair, with its own
address in a private /24 under 10.213.0.0/16, its own sshd (Debian openssh-server) and its own
`/etc/passwd`, `/etc/group` and `/etc/shadow` (bind-mounted by `ip netns exec` from `/etc/netns/NAME/`),
so the same user name has a different home on every host: a file is on a host only if it travelled there.

    with ssh_hosts_up(3) as hosts:
        hosts.inventory_path      # an inventory file (ARCHITECTURE.md's contract) for the three hosts
        hosts.link_down(hosts[0]) # cut worker 0 off the network; link_up() brings it back
        hosts.kill(hosts[1])      # the host "dies": its sshd and every process in it are killed

Making hosts needs root (CAP_NET_ADMIN), iproute2 and openssh-server: where any is missing this raises
(a test that needs hosts fails loudly; it never skips). The namespaces, links, /etc/netns entries and
files are always removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
USER = "ernie"
UID = 4242
SUBNET_PREFIX = "10.213"


class HostSetupError(RuntimeError):
    """The SSH hosts could not be made: the message says what is missing."""


@dataclass(frozen=True)
class SshHost:
    """One namespace host, as seen from this machine."""

    name: str  # the inventory's host name: w0, w1, ...
    worker: int
    netns: str
    address: str
    link: str  # the root-namespace end of its veth pair: down cuts the host off
    home: Path  # the user's home directory on this host, as a path on this machine
    root: Path  # this host's private files (sshd config, host key, logs)

    @property
    def host_key_pub(self) -> str:
        """The host's public key as known_hosts holds it (`ssh-ed25519 AAAA...`, no comment)."""
        return " ".join((self.root / "ssh_host_ed25519_key.pub").read_text().split()[:2])


@dataclass
class SshHosts:
    """A set of namespace hosts and the files a client needs to reach them."""

    hosts: list[SshHost]
    key_path: Path  # the client's ed25519 private key
    inventory_path: Path
    base: Path
    user: str = USER
    _sshd: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __getitem__(self, index: int) -> SshHost:
        return self.hosts[index]

    def __len__(self) -> int:
        return len(self.hosts)

    def inventory(self, **overrides: object) -> dict:
        """The inventory dict for these hosts; keyword arguments replace top-level fields."""
        inv: dict = {
            "cloud": "local",
            "stack": "sshhosts",
            "ssh_user": self.user,
            "ssh_key_path": str(self.key_path),
            "runner": "tpu-vm",
            "hosts": [
                {"name": h.name, "address": h.address, "private_address": h.address, "worker": h.worker,
                 "accelerator": "cpu", "chips": 1}
                for h in self.hosts
            ],
            "price_per_hour_usd": 0.0,
            "price_source": "namespace hosts on the test machine",
            "ttl_minutes": None,
        }
        inv.update(overrides)
        return inv

    def write_inventory(self, path: Path, **overrides: object) -> Path:
        """Write `inventory(**overrides)` to `path` as JSON and return the path."""
        path.write_text(json.dumps(self.inventory(**overrides), indent=2))
        return path

    def link_down(self, host: SshHost) -> None:
        """Cut the host off the network (its processes go on running)."""
        _sh("ip", "link", "set", host.link, "down")

    def link_up(self, host: SshHost) -> None:
        """Reconnect a host cut off by `link_down`."""
        _sh("ip", "link", "set", host.link, "up")

    def kill(self, host: SshHost) -> None:
        """The host dies: SIGKILL its sshd and every process running in its namespace."""
        _kill_netns_processes(host.netns)
        proc = self._sshd.pop(host.name, None)
        if proc is not None:
            proc.wait(timeout=10)

    def start_sshd(self, host: SshHost) -> None:
        """(Re)start the host's sshd and wait until it answers on port 22."""
        log = (host.root / "sshd.log").open("ab")
        self._sshd[host.name] = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, SSHD, "-D", "-e", "-f", str(host.root / "sshd_config")],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )
        log.close()
        _wait_port(host.address, 22, self._sshd[host.name], host.root / "sshd.log")

    def add_to_path(self, host: SshHost, directory: Path) -> None:
        """Put `directory` first on PATH for every SSH session on this host (via ~/.ssh/environment)."""
        env = host.home / ".ssh" / "environment"
        env.write_text(f"PATH={directory}:/usr/local/bin:/usr/bin:/bin\n")
        os.chown(env, UID, UID)


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise HostSetupError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _kill_netns_processes(netns: str) -> None:
    pids = _sh("ip", "netns", "pids", netns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def _wait_port(address: str, port: int, proc: subprocess.Popen, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HostSetupError(f"sshd on {address} exited {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
            return
        time.sleep(0.1)
    raise HostSetupError(f"sshd on {address}:{port} did not answer within {timeout:.0f}s")


def _check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise HostSetupError("making SSH hosts needs root (network namespaces); run the tests as root, as CI does")
    for tool, package in ((SSHD, "openssh-server"), (SFTP_SERVER, "openssh-server"),
                          ("ssh-keygen", "openssh-client"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            raise HostSetupError(f"{tool} is missing: `apt-get install {package}` (.ci/run installs it)")


def _free_subnet() -> str:
    """A 10.213.X.0/24 no interface on this machine uses yet (several fixtures may run at once)."""
    used = _sh("ip", "-4", "-o", "addr", "show").stdout
    for _ in range(64):
        candidate = f"{SUBNET_PREFIX}.{secrets.randbelow(250) + 1}"
        if f" {candidate}." not in used:
            return candidate
    raise HostSetupError(f"no free /24 under {SUBNET_PREFIX}.0.0/16")


def _etc_files(netns_etc: Path, home: Path) -> None:
    """This host's own passwd/group/shadow: the system's accounts plus USER with this host's home."""
    netns_etc.mkdir(parents=True, exist_ok=True)
    passwd = [line for line in Path("/etc/passwd").read_text().splitlines() if not line.startswith(f"{USER}:")]
    group = [line for line in Path("/etc/group").read_text().splitlines() if not line.startswith(f"{USER}:")]
    shadow = [line for line in Path("/etc/shadow").read_text().splitlines() if not line.startswith(f"{USER}:")]
    passwd.append(f"{USER}:x:{UID}:{UID}:ernie test host:{home}:/bin/bash")
    group.append(f"{USER}:x:{UID}:")
    shadow.append(f"{USER}:*:19000:0:99999:7:::")  # '*' not '!': sshd refuses keys of a locked account
    (netns_etc / "passwd").write_text("\n".join(passwd) + "\n")
    (netns_etc / "group").write_text("\n".join(group) + "\n")
    (netns_etc / "shadow").write_text("\n".join(shadow) + "\n")
    (netns_etc / "shadow").chmod(0o640)


def _sshd_config(root: Path, address: str) -> str:
    return "\n".join([
        f"ListenAddress {address}",
        "Port 22",
        f"HostKey {root / 'ssh_host_ed25519_key'}",
        f"PidFile {root / 'sshd.pid'}",
        "AuthorizedKeysFile .ssh/authorized_keys",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin no",
        f"AllowUsers {USER}",
        "UsePAM no",
        "PermitUserEnvironment yes",
        "MaxStartups 64",
        "MaxSessions 64",
        "LogLevel ERROR",
        f"Subsystem sftp {SFTP_SERVER}",
        "",
    ])


@contextlib.contextmanager
def ssh_hosts_up(count: int = 3) -> Iterator[SshHosts]:
    """Make `count` namespace SSH hosts; remove every trace of them on exit."""
    _check_prerequisites()
    tag = secrets.token_hex(2)
    base = Path(tempfile.mkdtemp(prefix=f"ernie-sshhosts-{tag}-"))
    base.chmod(0o755)
    bridge = f"ebr{tag}"
    netnses: list[str] = []
    hosts = SshHosts(hosts=[], key_path=base / "id_ed25519", inventory_path=base / "inventory.json", base=base)
    try:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ernie-tests", "-f", str(hosts.key_path))
        subnet = _free_subnet()
        _sh("ip", "link", "add", bridge, "type", "bridge")
        _sh("ip", "addr", "add", f"{subnet}.1/24", "dev", bridge)
        _sh("ip", "link", "set", bridge, "up")
        pub = (base / "id_ed25519.pub").read_text()
        for i in range(count):
            netns, link, address = f"ernie-{tag}-{i}", f"ev{tag}{i}", f"{subnet}.{10 + i}"
            _sh("ip", "netns", "add", netns)
            netnses.append(netns)
            _sh("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns)
            _sh("ip", "link", "set", link, "master", bridge)
            _sh("ip", "link", "set", link, "up")
            _sh("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
            _sh("ip", "-n", netns, "link", "set", "eth0", "up")
            _sh("ip", "-n", netns, "link", "set", "lo", "up")
            root = base / f"h{i}"
            home = root / "home" / USER
            (home / ".ssh").mkdir(parents=True)
            for d in (root, root / "home"):
                d.chmod(0o755)
            (home / ".ssh" / "authorized_keys").write_text(pub)
            (home / ".ssh").chmod(0o700)
            for p in (home, home / ".ssh", home / ".ssh" / "authorized_keys"):
                os.chown(p, UID, UID)
            _etc_files(Path("/etc/netns") / netns, home)
            _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "ssh_host_ed25519_key"))
            (root / "sshd_config").write_text(_sshd_config(root, address))
            host = SshHost(name=f"w{i}", worker=i, netns=netns, address=address, link=link, home=home, root=root)
            hosts.hosts.append(host)
            hosts.add_to_path(host, home / "bin")
            hosts.start_sshd(host)
        hosts.write_inventory(hosts.inventory_path)
        yield hosts
    finally:
        for netns in netnses:
            _kill_netns_processes(netns)
        for proc in hosts._sshd.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for netns in netnses:
            _sh("ip", "netns", "del", netns, check=False)
            shutil.rmtree(Path("/etc/netns") / netns, ignore_errors=True)
        _sh("ip", "link", "del", bridge, check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def ssh_hosts() -> Iterator[SshHosts]:
    """Three fresh namespace SSH hosts (w0, w1, w2) with an inventory file; removed afterwards."""
    with ssh_hosts_up(3) as hosts:
        yield hosts
