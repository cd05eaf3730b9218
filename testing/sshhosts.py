"""Real SSH hosts on this machine: one network namespace per host, each with its own openssh-server.

Each host is a network namespace joined to a bridge in the root namespace by a veth pair, with its own
address in a private /24 under 10.213.0.0/16, its own sshd (Debian openssh-server) and its own
`/etc/passwd`, `/etc/group` and `/etc/shadow` (bind-mounted by `ip netns exec` from `/etc/netns/NAME/`),
so the same user name has a different home on every host: a file is on a host only if it travelled there.

    with ssh_hosts_up(3) as hosts:
        hosts.inventory_path      # an inventory file (docs/inventory.md's contract) for the three hosts
        hosts.link_down(hosts[0]) # cut worker 0 off the network; link_up() brings it back
        hosts.kill(hosts[1])      # the host "dies": its sshd and every process in it are killed

    with ssh_hosts_up(8, uplink_mbit=50) as hosts:
        hosts.uplink_bytes()      # bytes this machine has sent to the hosts so far, through the shaped link

The shaped link is a token-bucket filter (tc tbf) on the bridge device: it holds what this machine (the
user's side) sends to the hosts, while host-to-host traffic is forwarded between the bridge's ports without
passing it, as a cloud's internal network does not pass through the user's uplink.

Making hosts needs root (CAP_NET_ADMIN), iproute2 and openssh-server: where any is missing this raises
(a test that needs hosts fails loudly; it never skips). The namespaces, links, /etc/netns entries and
files are always removed afterwards.
"""

from __future__ import annotations

import contextlib
import io
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
    bridge: str = ""  # the root-namespace bridge: this machine's side of every host's link
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

    def start_sshd(self, host: SshHost, wait: bool = True) -> None:
        """(Re)start the host's sshd and (unless `wait` is False) wait until it answers on port 22."""
        log = (host.root / "sshd.log").open("ab")
        self._sshd[host.name] = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, SSHD, "-D", "-e", "-f", str(host.root / "sshd_config")],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )
        log.close()
        if wait:
            self.wait_sshd(host)

    def wait_sshd(self, host: SshHost) -> None:
        """Wait until the host's sshd answers on port 22."""
        _wait_port(host.address, 22, self._sshd[host.name], host.root / "sshd.log")

    def shape_uplink(self, mbit: float) -> None:
        """Limit what this machine sends to the hosts to `mbit` Mbit/s (tc tbf on the bridge); host-to-host
        traffic is not limited. netem does not work here; tbf does."""
        _sh("tc", "qdisc", "replace", "dev", self.bridge, "root", "tbf", "rate", f"{mbit}mbit",
            "burst", "64kb", "latency", "100ms")

    def uplink_bytes(self) -> int:
        """Bytes this machine has sent towards the hosts (the bridge device's transmit counter)."""
        return int(Path(f"/sys/class/net/{self.bridge}/statistics/tx_bytes").read_text())

    def sent_by(self, host: SshHost) -> int:
        """Bytes `host` has sent over its own link (its veth's root-side receive counter), retransmissions
        included: per host, so one host's retransmitted segments cannot pass for another host's transfer."""
        return int(Path(f"/sys/class/net/{host.link}/statistics/rx_bytes").read_text())

    def add_to_path(self, host: SshHost, directory: Path) -> None:
        """Put `directory` first on PATH for every SSH session on this host (via ~/.ssh/environment)."""
        self.set_environment(host, PATH=f"{directory}:/usr/local/bin:/usr/bin:/bin")

    def set_environment(self, host: SshHost, **variables: str) -> None:
        """Set variables for every SSH session on this host (~/.ssh/environment), keeping the others."""
        env = host.home / ".ssh" / "environment"
        current = dict(line.split("=", 1) for line in env.read_text().splitlines() if "=" in line) \
            if env.exists() else {}
        current.update(variables)
        env.write_text("".join(f"{k}={v}\n" for k, v in current.items()))
        os.chown(env, UID, UID)


def _sh(*argv: str, check: bool = True, timeout: float = 30,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
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
def ssh_hosts_up(count: int = 3, uplink_mbit: float | None = None, in_memory: bool = False) -> Iterator[SshHosts]:
    """Make `count` namespace SSH hosts; remove every trace of them on exit.

    `uplink_mbit`: shape this machine's link to them (see `SshHosts.shape_uplink`). `in_memory`: their files on
    a tmpfs (/dev/shm), as each cloud worker writes to a disk of its own, where eight hosts on this machine's
    one virtual disk would queue behind each other (and behind whatever else the machine writes)."""
    _check_prerequisites()
    tag = secrets.token_hex(2)
    base = Path(tempfile.mkdtemp(prefix=f"ernie-sshhosts-{tag}-", dir="/dev/shm" if in_memory else None))
    base.chmod(0o755)
    bridge = f"ebr{tag}"
    netnses: list[str] = []
    hosts = SshHosts(hosts=[], key_path=base / "id_ed25519", inventory_path=base / "inventory.json", base=base,
                     bridge=bridge)
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
            hosts.start_sshd(host, wait=False)
        for host in hosts.hosts:  # every sshd starts at once: the fixture's start-up stays short at 8 hosts
            hosts.wait_sshd(host)
        if uplink_mbit is not None:
            hosts.shape_uplink(uplink_mbit)
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


# --- A real container engine and a registry with authentication (issue 14) -------------------------------------
#
#     with ssh_hosts_up(2) as hosts, containers_up(hosts) as engines:
#         engines.registry.address        # "10.213.X.1:5000", htpasswd auth, user/password below
#         engines.push_image("ernie/dlc-like:1")   # a DLC-like image (entrypoint ending in eval "$@", Python, pip)
#
# Each host gets its own root podman service (Debian podman, runc, cgroupfs, `default_ulimits = []`: the default
# limits cannot be raised on this machine) with its own image store, in the host's network namespace; the login
# user reaches it through a socket owned by its group (as the docker group does on a GPU host) with Debian's
# `docker` (podman-docker). The registry (Debian docker-registry) listens on the hosts' bridge, plain HTTP on a
# private network, so podman is told it is insecure there.

PODMAN = "/usr/bin/podman"
DOCKER_CLI = "/usr/bin/docker"  # podman-docker: `docker` runs podman
REGISTRY = "/usr/bin/docker-registry"
HTPASSWD = "/usr/bin/htpasswd"
REGISTRY_PORT = 5000
REGISTRY_USER = "ernie-tests"
RUNROOTS = Path("/run/ernie-podman")  # podman refuses a run root longer than 50 characters
DLC_ENTRYPOINT = "/usr/local/bin/dockerd_entrypoint.sh"
_ENTRYPOINT_SCRIPT = """#!/bin/bash
# Like the PyTorch DLC's dockerd_entrypoint.sh: prepare the environment, then evaluate the arguments again
# (they are joined with spaces and split anew).
eval "$@"
"""
_CONTAINERS_CONF = """[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


@dataclass
class Registry:
    """A distribution registry with htpasswd authentication on the hosts' bridge."""

    address: str
    username: str
    password: str
    proc: subprocess.Popen


@dataclass
class Containers:
    """The engines on the hosts and the registry they pull from."""

    hosts: SshHosts
    registry: Registry
    base: Path
    services: dict[str, subprocess.Popen] = field(default_factory=dict)

    def runroot(self, name: str) -> Path:
        return RUNROOTS / f"{self.base.parent.name.split('-')[2]}-{name}"

    def socket(self, host: SshHost) -> Path:
        return host.root / "podman.sock"

    def podman(self, host: SshHost, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """podman, as root, against `host`'s engine (e.g. to list what it holds)."""
        return subprocess.run([PODMAN, "--remote", "--url", f"unix://{self.socket(host)}", *args],
                              capture_output=True, text=True, timeout=timeout, env=_podman_env(self.base))

    def push_image(self, name: str) -> str:
        """Build the DLC-like image here and push it to the registry; its reference for `docker pull`."""
        rootfs = self.base / "rootfs.tar"
        if not rootfs.exists():
            python_rootfs(rootfs)
        store = ["--root", str(self.base / "builder" / "storage"), "--runroot", str(self.runroot("builder"))]
        local = f"localhost/{name}"
        _sh(PODMAN, *store, "import", "--change", f'ENTRYPOINT ["bash", "-m", "{DLC_ENTRYPOINT}"]',
            "--change", "ENV PATH=/usr/local/bin:/usr/bin:/bin", str(rootfs), local, timeout=300,
            env=_podman_env(self.base))
        ref = f"{self.registry.address}/{name}"
        _sh(PODMAN, *store, "push", "-q", "--creds", f"{self.registry.username}:{self.registry.password}", local,
            f"docker://{ref}", timeout=300, env=_podman_env(self.base))
        return ref

    def password_file(self, host: SshHost) -> Path:
        """The registry password in the login user's home on `host` (what `registry_login` reads)."""
        path = host.home / ".registry-password"
        path.write_text(self.registry.password + "\n")
        path.chmod(0o600)
        os.chown(path, UID, UID)
        return path


def _podman_env(base: Path) -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(base / "containers.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(base / "registries.conf")}


def _check_container_prerequisites() -> None:
    for tool, package in ((PODMAN, "podman"), (DOCKER_CLI, "podman-docker"), ("/usr/sbin/runc", "runc"),
                          (REGISTRY, "docker-registry"), (HTPASSWD, "apache2-utils"),
                          ("/bin/bash-static", "bash-static"), ("/bin/busybox", "busybox-static"),
                          ("/usr/bin/python3.11", "python3.11"), ("/usr/share/python-wheels", "python3-pip-whl")):
        if not Path(tool).exists():
            raise HostSetupError(f"{tool} is missing: `apt-get install {package}` (.ci/run installs it)")


@contextlib.contextmanager
def containers_up(hosts: SshHosts) -> Iterator[Containers]:
    """A podman service on every host and an authenticated registry on their bridge; all gone afterwards."""
    _check_container_prerequisites()
    base = hosts.base / "containers"
    base.mkdir(mode=0o755)
    gateway = hosts[0].address.rsplit(".", 1)[0] + ".1"
    address = f"{gateway}:{REGISTRY_PORT}"
    (base / "containers.conf").write_text(_CONTAINERS_CONF)
    (base / "registries.conf").write_text(
        f'unqualified-search-registries = []\n[[registry]]\nlocation = "{address}"\ninsecure = true\n')
    for name in ("containers.conf", "registries.conf"):
        (base / name).chmod(0o644)
    password = secrets.token_urlsafe(12)
    htpasswd = _sh(HTPASSWD, "-Bbn", REGISTRY_USER, password).stdout
    (base / "htpasswd").write_text(htpasswd)
    (base / "registry.yml").write_text(json.dumps({  # YAML is a superset of JSON
        "version": 0.1, "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(base / "registry")}},
        "http": {"addr": address, "secret": secrets.token_hex(16)},
        "auth": {"htpasswd": {"realm": "ernie-tests", "path": str(base / "htpasswd")}}}))
    log = (base / "registry.log").open("ab")
    proc = subprocess.Popen([REGISTRY, "serve", str(base / "registry.yml")], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    log.close()
    engines = Containers(hosts, Registry(address, REGISTRY_USER, password, proc), base)
    try:
        _wait_port(gateway, REGISTRY_PORT, proc, base / "registry.log")
        for host in hosts.hosts:
            _start_engine(engines, host)
        yield engines
    finally:
        for host in hosts.hosts:
            with contextlib.suppress(Exception):
                engines.podman(host, "rm", "-af", "-t", "0", timeout=60)
        for service in [*engines.services.values(), proc]:
            service.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.wait(timeout=20)
            if service.poll() is None:
                service.kill()
                service.wait(timeout=10)
        for name, store in [*((h.name, h.root / "containers") for h in hosts.hosts), ("builder", base / "builder")]:
            # Image layers are mounted under the store: podman unmounts them before the files go.
            subprocess.run([PODMAN, "--root", str(store / "storage"), "--runroot", str(engines.runroot(name)),
                            "system", "reset", "-f"], capture_output=True, timeout=120, env=_podman_env(base))
            shutil.rmtree(engines.runroot(name), ignore_errors=True)


def _start_engine(engines: Containers, host: SshHost) -> None:
    """The host's root podman service in its network namespace (nsenter keeps this mount namespace, where the
    cgroup hierarchies are; `ip netns exec` would remount /sys without them)."""
    store = host.root / "containers"
    sock = engines.socket(host)
    log = (store.parent / "podman.log").open("ab")
    engines.services[host.name] = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{host.netns}", PODMAN, "--root", str(store / "storage"),
         "--runroot", str(engines.runroot(host.name)), "system", "service", "--time=0", f"unix://{sock}"],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=_podman_env(engines.base))
    log.close()
    deadline = time.monotonic() + 30
    while not sock.exists():
        if engines.services[host.name].poll() is not None or time.monotonic() > deadline:
            raise HostSetupError(f"podman service on {host.name} did not start: "
                                 f"{(store.parent / 'podman.log').read_text()[-2000:]}")
        time.sleep(0.1)
    # The login user's group may use the engine, as the docker group may use dockerd's socket.
    os.chown(sock, 0, UID)
    sock.chmod(0o660)
    (host.home / "bin").mkdir(exist_ok=True)
    os.chown(host.home / "bin", UID, UID)
    docker = host.home / "bin" / "docker"
    if not docker.is_symlink():
        docker.symlink_to(DOCKER_CLI)  # ahead of any other `docker` on PATH
    engines.hosts.set_environment(host, CONTAINER_HOST=f"unix://{sock}",
                                  CONTAINERS_REGISTRIES_CONF=str(engines.base / "registries.conf"))


def python_rootfs(path: Path) -> Path:
    """A root filesystem tar with this machine's Python (its standard library and pip), bash and busybox, and an
    entrypoint that evaluates its arguments as the PyTorch DLC's does: `podman import` makes an image of it."""
    import tarfile
    import zipfile

    python = Path("/usr/bin/python3.11")
    stdlib = Path("/usr/lib/python3.11")
    libs = set(_shared_libraries(python))
    for so in (stdlib / "lib-dynload").glob("*.so"):
        libs.update(_shared_libraries(so))
    skip = {"test", "__pycache__", "idlelib", "tkinter", "turtledemo", "EXTERNALLY-MANAGED"}
    with tarfile.open(path, "w") as tar:
        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_bytes(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        def add_link(name: str, target: str) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)

        for d in ("bin", "etc", "lib", "lib64", "root", "usr", "usr/bin", "usr/lib", "usr/local", "usr/local/bin",
                  "usr/local/lib", "usr/local/lib/python3.11", "usr/local/lib/python3.11/dist-packages", "var"):
            add_dir(d)
        add_dir("tmp", 0o1777)
        tar.add(python, "usr/bin/python3.11")
        add_link("usr/bin/python3", "python3.11")
        add_link("usr/bin/python", "python3.11")
        tar.add(stdlib, "usr/lib/python3.11", filter=lambda t: None if Path(t.name).name in skip else t)
        for lib in sorted(libs):
            tar.add(lib.resolve(), str(lib).lstrip("/"))
        tar.add("/bin/bash-static", "bin/bash")
        tar.add("/bin/busybox", "bin/busybox")
        for applet in ("sh", "cat", "echo", "ls", "mkdir", "rm", "sleep", "env", "id", "printf", "grep", "tail",
                       "test", "true", "false", "cp", "mv", "touch", "head", "wc", "sed"):
            add_link(f"bin/{applet}", "busybox")
        add_link("usr/bin/env", "/bin/busybox")
        add_bytes("etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n")
        add_bytes("etc/group", b"root:x:0:\n")
        add_bytes(DLC_ENTRYPOINT.lstrip("/"), _ENTRYPOINT_SCRIPT.encode(), 0o755)
        # pip, from Debian's self-contained wheel, where this Python looks for site packages.
        (wheel,) = Path("/usr/share/python-wheels").glob("pip-*.whl")
        with zipfile.ZipFile(wheel) as whl:
            for member in whl.infolist():
                if not member.is_dir():
                    add_bytes(f"usr/local/lib/python3.11/dist-packages/{member.filename}", whl.read(member))
    return path


def _shared_libraries(binary: Path) -> list[Path]:
    out = _sh("ldd", str(binary), check=False).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        for part in parts:
            if part.startswith("/") and Path(part).exists():
                found.append(Path(part))
    return found


@pytest.fixture
def container_hosts() -> Iterator[tuple[SshHosts, Containers]]:
    """Two namespace SSH hosts, each with a real container engine, and an authenticated registry."""
    with ssh_hosts_up(2) as hosts, containers_up(hosts) as engines:
        yield hosts, engines
