"""Push a bundle to many workers through the user's link once: one worker gets it, the others relay it.

A direct push sends every host its own copy from this machine, so a slice of N workers costs N bundles
through the user's uplink. A relay push sends one worker (the seed) its copy exactly as a direct push
does; every other worker then gets what it lacks from a worker that already has the bundle, over SSH
between the workers (the cloud's own network), with a key made for this push alone.

The sha256 delta rule holds at every hop: through its own connection ernie lists the target's digests,
deletes what left the bundle and writes the target's list of pushed files (a few hundred bytes), and
only the files whose digest differs travel from the source. So a re-push of an unchanged bundle moves
nothing and a changed file crosses the user's link once.

The per-push key is an ed25519 pair made in memory here. Its private half goes to every worker (mode 600,
under ~/ernie/relay/TAG), its public half into every worker's authorized_keys, allowed only from the
workers' private addresses, only to run `tar -x` into the bundle directory (a forced command), and only
for a few hours (expiry-time), so it can do nothing else and stops working even where the clean-up cannot
reach. Both are removed from every worker that answers when the push ends, whatever happened.

Every worker that has the bundle serves up to FANOUT hops at once, so the copies double each round. A hop
that fails is retried from another source; a source that no longer answers is dropped, and when none is
left the next worker is pushed directly from here (a new seed). A worker that cannot get the bundle is
named with the reason, as a direct push names it.
"""

from __future__ import annotations

import re
import secrets
import shlex
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import paramiko
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from ernie.errors import ErnieError
from ernie.inventory import Inventory
from ernie.remote.connect import Outcome, RemoteError, Session, Timeouts, fan_out
from ernie.remote.push import Bundle, Delta, PushResult, prepare, push

MODES = ("auto", "direct", "relay")
FAST_LINK_BYTES_S = 40e6
"""At or above this rate (measured on the seed's push, 320 Mbit/s) the user's link is the cloud's own network
or close to it: a hop between workers would save little, so the others are pushed directly too."""
MEASURABLE_BYTES = 1 << 20  # a seed push that sent less than this says nothing about the link's rate
FANOUT = 4  # hops one source serves at once: a worker's NIC and CPU share them
MAX_ATTEMPTS = 3  # hops a target may fail from sources that still answer before it is named
KEY_LIFETIME = timedelta(hours=6)  # the relay key's expiry-time, in case the clean-up cannot reach a worker
MARKER = "ernie-relay-"  # the authorized_keys comment, followed by the push's tag
# What goes between double quotes in authorized_keys, and into the forced command: nothing to escape.
_QUOTABLE = re.compile(r"[A-Za-z0-9/._@+:-]{1,512}")
_SSH_OPTIONS = ("-F /dev/null -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes "
                "-o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=15 -o ServerAliveInterval=5 "
                "-o ServerAliveCountMax=3 -o Compression=no -o LogLevel=ERROR "
                # AES-GCM first: with AES-NI about twice chacha20's rate, and the workers' CPUs do the hops.
                "-o Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
                "aes128-ctr,aes256-ctr")


@dataclass(frozen=True)
class Choice:
    """How the bundle goes out, and why (printed by `ernie run`)."""

    mode: str  # "direct" or "relay"
    reason: str


@dataclass
class PushReport:
    """Every host's outcome, the choice made and what happened to the relay on the way."""

    outcomes: dict[str, Outcome[PushResult]]
    choice: Choice
    notes: list[str] = field(default_factory=list)  # dropped sources, new seeds, keys not removed


def check_mode(mode: str) -> str:
    """The --push value, or an error naming the choices."""
    if mode not in MODES:
        raise ErnieError(f"--push: {mode!r} is not one of {', '.join(MODES)}")
    return mode


def choose(requested: str, hosts: int, seed_rate: float | None) -> Choice:
    """Direct for one host or a fast link, relay for several hosts; `requested` (--push) overrides."""
    if requested == "direct":
        return Choice("direct", "--push direct")
    if hosts == 1:
        return Choice("direct", "one host")
    if requested == "relay":
        return Choice("relay", "--push relay")
    if seed_rate is not None and seed_rate >= FAST_LINK_BYTES_S:
        return Choice("direct", f"{hosts} hosts, but the link to the first carried {seed_rate / 1e6:.0f} MB/s, "
                                f"fast enough (>= {FAST_LINK_BYTES_S / 1e6:.0f} MB/s) that relaying saves little")
    rate = f"the link to the first carried {seed_rate / 1e6:.1f} MB/s" if seed_rate is not None else \
        "the link's rate is not known (little to send)"
    return Choice("relay", f"{hosts} hosts and {rate}: the bundle crosses it once and the workers pass it on")


def push_all(sessions: Sequence[Session], bundle: Bundle, dests: dict[str, str], inventory: Inventory,
             mode: str = "auto", timeouts: Timeouts | None = None, announce: Callable[[str], None] = print,
             on_hop: Callable[[str, str], None] | None = None) -> PushReport:
    """Bring every host's `dests[name]` to the bundle's content, direct or by relay (see `choose`).

    `announce` gets the choice and its reason as one line; `on_hop(source, target)` is called as each relay
    hop starts (tests use it to break a source mid-push).
    """
    check_mode(mode)
    timeouts = timeouts or (sessions[0].timeouts if sessions else Timeouts())
    order = sorted(sessions, key=lambda s: s.host.worker)
    by_name = {s.host.name: s for s in order}

    def direct(targets: Sequence[Session]) -> dict[str, Outcome[PushResult]]:
        return fan_out(lambda s: push(s, bundle, dests[s.host.name]), targets, timeout=timeouts.command * 2,
                       name=lambda s: s.host.name)

    if mode == "direct" or len(order) <= 1 or not all(s.is_ssh for s in order):
        choice = choose("direct" if mode == "direct" else "auto", 1 if len(order) <= 1 else len(order), None) \
            if all(s.is_ssh for s in order) else Choice("direct", "this machine is the host")
        announce(f"push: {choice.mode} ({choice.reason})")
        return PushReport(direct(order), choice)

    # The seed: the first worker that takes a direct push, timed to learn the link's rate. Meanwhile the
    # others list what they have (the delta rule's first step, needed whichever way they are served).
    listed: dict[str, Outcome[Delta]] = {}
    lister = threading.Thread(target=lambda: listed.update(fan_out(
        lambda s: prepare(s, bundle, dests[s.host.name]), order[1:], timeout=timeouts.command,
        name=lambda s: s.host.name)), daemon=True)
    lister.start()
    outcomes: dict[str, Outcome[PushResult]] = {}
    seed, rate = None, None
    for s in order:
        if s is not order[0]:
            lister.join()
            if not listed[s.host.name].ok:
                outcomes[s.host.name] = Outcome(error=listed[s.host.name].error)
                continue
        start = time.monotonic()
        delta = listed.pop(s.host.name).value if s.host.name in listed else None
        (outcome,) = fan_out(lambda s: push(s, bundle, dests[s.host.name], delta), [s],
                             timeout=timeouts.command * 2, name=lambda s: s.host.name).values()
        outcomes[s.host.name] = outcome
        if outcome.ok:
            seed = s.host.name
            if outcome.value.content_bytes >= MEASURABLE_BYTES:
                rate = outcome.value.content_bytes / max(time.monotonic() - start, 1e-6)
            break
    lister.join()
    for name, o in listed.items():
        if not o.ok:
            outcomes.setdefault(name, Outcome(error=o.error))
    deltas = {name: o.value for name, o in listed.items() if o.ok and name not in outcomes}
    choice = choose(mode, len(order), rate)
    announce(f"push: {choice.mode} ({choice.reason})")
    if seed is None or not deltas:
        return PushReport(outcomes, choice)
    if choice.mode == "direct":
        return PushReport({**outcomes, **fan_out(lambda s: push(s, bundle, dests[s.host.name], deltas[s.host.name]),
                                                 [by_name[n] for n in deltas], timeout=timeouts.command * 2,
                                                 name=lambda s: s.host.name)}, choice)
    relay = _Relay(by_name, bundle, dests, inventory, timeouts, on_hop)
    try:
        outcomes.update(relay.run(seed, deltas))
    finally:
        relay.clean_up()
    return PushReport(outcomes, choice, relay.notes)


class _Relay:
    """One relay push: the per-push key, the hops and their scheduling, and the clean-up."""

    def __init__(self, sessions: dict[str, Session], bundle: Bundle, dests: dict[str, str], inventory: Inventory,
                 timeouts: Timeouts, on_hop: Callable[[str, str], None] | None) -> None:
        self.sessions, self.bundle, self.dests = sessions, bundle, dests
        self.user, self.timeouts, self.on_hop = inventory.ssh_user, timeouts, on_hop
        self.addresses = {h.name: h.private_address for h in inventory.hosts if h.name in sessions}
        self.tag = secrets.token_hex(6)
        self.expires = datetime.now(timezone.utc) + KEY_LIFETIME
        key = Ed25519PrivateKey.generate()
        self.private = key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
        self.public = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
        self.notes: list[str] = []
        self.installed: set[str] = set()
        self.deltas: dict[str, Delta] = {}  # each target's first delta, listed before any key is made
        self.host_keys: dict[str, paramiko.PKey] = {}

    def _dir(self, name: str) -> str:
        return f"{self.sessions[name].base}/relay/{self.tag}"

    def _ssh(self, source: str, target: str) -> str:
        """The ssh command line a source runs to reach a target with the relay key."""
        where = self._dir(source)
        return (f"ssh {_SSH_OPTIONS} -i {where}/key -o UserKnownHostsFile={where}/known_hosts "
                f"{shlex.quote(self.user)}@{self.addresses[target]}")

    def _install(self, s: Session) -> None:
        """Key, the workers' host keys and the restricted authorized_keys entry, in one command."""
        name = s.host.name
        for what, value in (("private address", self.addresses[name]), ("bundle directory", self.dests[name]),
                            ("base directory", s.base)):
            if not _QUOTABLE.fullmatch(value):
                raise RemoteError(f"{name}: its {what} {value!r} has characters the relay key's options cannot "
                                  "hold; use --push direct")
        known = "".join(f"{self.addresses[n]} {key.get_name()} {key.get_base64()}\n" for n, key in self.host_keys.items())
        entry = (f'command="tar -xf - -C {self.dests[name]}",restrict,from="{",".join(self.addresses.values())}",'
                 f'expiry-time="{self.expires:%Y%m%d%H%M}Z" {self.public} {MARKER}{self.tag}')
        where = shlex.quote(self._dir(name))
        self.installed.add(name)  # from now on there may be something to remove
        s.pipe_in(f"umask 077 && mkdir -p {where} && cat > {where}/key && printf %s {shlex.quote(known)} > "
                  f"{where}/known_hosts && mkdir -p ~/.ssh && printf '%s\\n' {shlex.quote(entry)} >> "
                  "~/.ssh/authorized_keys", self.private)

    def _hop(self, source: str, target: str) -> PushResult:
        """`target` gets from `source` what its digests say it lacks. A RemoteError from the target's own
        session is raised as it is; one from the source's side is wrapped in _HopFailed."""
        # A retried hop lists the target again: what a failed hop left half-written is resent.
        delta = self.deltas.pop(target, None) or prepare(self.sessions[target], self.bundle, self.dests[target])
        sent = delta.bytes_sent
        if not delta.changed:
            return PushResult(host=target, files_sent=0, content_bytes=0, bytes_sent=sent,
                              files_deleted=delta.deleted)
        if self.on_hop is not None:
            self.on_hop(source, target)
        names = b"\0".join(n.encode() for n in sorted(delta.changed)) + b"\0"
        script = (f"set -o pipefail; tar -cf - -C {shlex.quote(self.dests[source])} --null --verbatim-files-from "
                  f"-T - | {self._ssh(source, target)} tar -xf -")  # the key's forced command decides the -C
        command = f"bash -c {shlex.quote(script)}"
        try:
            self.sessions[source].pipe_in(command, names)
        except RemoteError as exc:
            raise _HopFailed(exc) from exc
        return PushResult(host=target, files_sent=len(delta.changed), content_bytes=0,
                          bytes_sent=sent + len(command) + len(names), files_deleted=delta.deleted, via=source,
                          relayed_bytes=sum(self.bundle.files[n].size for n in delta.changed))

    def _answers(self, name: str) -> bool:
        try:
            return self.sessions[name].sh("true", timeout=self.timeouts.connect).exited == 0
        except RemoteError:
            return False

    def run(self, seed: str, deltas: dict[str, Delta]) -> dict[str, Outcome[PushResult]]:
        """Every target's outcome (`deltas`: what each lacks, by `prepare`): hops from whichever workers have
        the bundle, new seeds when none is left."""
        results: dict[str, Outcome[PushResult]] = {}
        targets = sorted(deltas, key=lambda n: self.sessions[n].host.worker)
        for name, delta in deltas.items():
            if not delta.changed:  # nothing to send: no hop, no key
                results[name] = Outcome(value=PushResult(host=name, files_sent=0, content_bytes=0,
                                                         bytes_sent=delta.bytes_sent, files_deleted=delta.deleted))
            else:
                self.deltas[name] = delta
        if not self.deltas:
            return results
        # Each worker's host key as this run's connections recorded it: the hops verify whom they reach.
        for name in [seed, *self.deltas]:
            transport = self.sessions[name].c.transport
            if transport is not None and transport.is_active():
                self.host_keys[name] = transport.get_remote_server_key()
        installed = fan_out(lambda s: self._install(s), [self.sessions[n] for n in [seed, *self.deltas]],
                            timeout=self.timeouts.command, name=lambda s: s.host.name)
        for name, o in installed.items():
            if not o.ok and name != seed:
                results[name] = Outcome(error=RemoteError(f"{name}: preparing the relay failed: {o.error}"))
        sources: dict[str, int] = {seed: 0} if installed[seed].ok else {}  # source -> hops it serves now
        if not sources:
            self.notes.append(f"{seed} could not serve as relay source ({installed[seed].error})")
        pending = deque(t for t in targets if t not in results)
        if not pending:
            return results
        failures: dict[str, int] = {t: 0 for t in targets}
        cond = threading.Condition()
        active = 0

        def hop(source: str | None, target: str) -> None:
            nonlocal active
            result, error, hop_failed, source_lost = None, None, False, False
            try:
                result = self._hop(source, target) if source else push(
                    self.sessions[target], self.bundle, self.dests[target], self.deltas.pop(target, None))
            except _HopFailed as exc:
                error, hop_failed = exc.__cause__, True
                source_lost = not self._answers(source)
            except Exception as exc:  # noqa: BLE001 - the target's own failure: named like a direct push's
                error = exc
            with cond:
                active -= 1
                if source in sources:
                    sources[source] -= 1
                if result is not None:
                    results[target] = Outcome(value=result)
                    sources[target] = 0  # it has the bundle now: it serves others
                elif source_lost:
                    sources.pop(source, None)
                    self.notes.append(f"{source} stopped answering as a relay source ({error}); "
                                      "its targets get the bundle from another")
                    pending.appendleft(target)
                elif hop_failed and failures[target] + 1 < MAX_ATTEMPTS:
                    failures[target] += 1
                    pending.append(target)
                else:
                    via = f" (last from {source})" if source else ""
                    results[target] = Outcome(error=RemoteError(f"{target}: could not get the bundle{via}: {error}")
                                              if source else error)
                cond.notify_all()

        with cond:
            while pending or active:
                free = [n for n, busy in sources.items() if busy < FANOUT]
                if pending and (free or (not sources and not active)):
                    target = pending.popleft()
                    source = min(free, key=lambda n: sources[n]) if free else None
                    if source is None:
                        self.notes.append(f"no relay source left: {target} is pushed directly as the new seed")
                    else:
                        sources[source] += 1
                    active += 1
                    threading.Thread(target=hop, args=(source, target), daemon=True).start()
                    continue
                cond.wait()
        return results

    def clean_up(self) -> None:
        """The relay key and its authorized_keys entry off every worker that answers; the others are noted."""
        marker = shlex.quote(f" {MARKER}{self.tag}")
        def remove(s: Session) -> None:
            s.check(f"rm -rf {shlex.quote(self._dir(s.host.name))}; f=~/.ssh/authorized_keys; "
                    f'if [ -f "$f" ]; then {{ grep -v -F -e {marker} "$f" || true; }} > "$f.ernie-{self.tag}" && '
                    f'cat "$f.ernie-{self.tag}" > "$f"; rm -f "$f.ernie-{self.tag}"; fi', "removing the relay key",
                    timeout=self.timeouts.connect * 2)
        done = fan_out(remove, [self.sessions[n] for n in sorted(self.installed)],
                       timeout=self.timeouts.connect * 3, name=lambda s: s.host.name)
        for name, o in sorted(done.items()):
            if not o.ok:
                self.notes.append(f"{name}: the relay key could not be removed ({o.error}); it is accepted nowhere "
                                  f"after {self.expires:%Y-%m-%d %H:%M} UTC")


class _HopFailed(Exception):
    """The relay command on the source failed: the source or the link between the two is at fault."""
