"""Push a bundle to many workers through the user's link once: one worker gets it, the others relay it.

A direct push sends every host its own copy from this machine, so a slice of N workers costs N bundles
through the user's uplink. A relay push sends one worker (the seed) its copy exactly as a direct push
does, and the seed passes each archive on to the other workers while it arrives, over SSH between the
workers (the cloud's own network) with a key made for this push alone; so the copies travel at the same
time as the upload instead of after it. A worker that lacks something else than the seed lacks (a
different delta) gets a hop afterwards from any worker that has the bundle.

The sha256 delta rule holds at every hop: through its own connection ernie lists every worker's digests,
deletes what left the bundle and writes its list of pushed files (a few hundred bytes), and only the
files whose digest differs travel. So a re-push of an unchanged bundle moves nothing and a changed file
crosses the user's link once.

The per-push key is an ed25519 pair made in memory here. Its private half goes to every worker that lacks
something (mode 600, under ~/ernie/relay/TAG), its public half into their authorized_keys, allowed only
from the workers' private addresses, only to run `tar -x` into the bundle directory (a forced command)
and only for a few hours (expiry-time), so it can do nothing else and stops working even where the
clean-up cannot reach. Both are removed from every worker that answers when the push ends, whatever
happened.

Failures: a seed that fails is named and the next worker becomes the seed (pushed from here); a worker
whose stream failed is listed again and gets a hop; a hop that fails is retried from another source,
and a source that no longer answers is dropped. A worker that cannot get the bundle is named with the
reason, as a direct push names it.
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
"""At or above this rate (320 Mbit/s, measured by a probe) the user's link is the cloud's own network or close
to it: the seed passing the bundle on would save little, and its own link would carry every copy."""
MEASURABLE_BYTES = 1 << 20  # with less than this to send to any host, direct costs the link next to nothing
PROBE_BYTES = 512 << 10  # the auto choice's link probe: 1/40 of a typical 20 MB bundle
STREAM_FANOUT = 16  # workers the seed passes the stream on to as it arrives; the others get hops afterwards
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


def choose(requested: str, hosts: int, link_rate: float | None, to_send: int) -> Choice:
    """Direct for one host, little to send or a fast link; relay for several hosts; `requested` (--push) overrides."""
    if requested == "direct":
        return Choice("direct", "--push direct")
    if hosts == 1:
        return Choice("direct", "one host")
    if requested == "relay":
        return Choice("relay", "--push relay")
    if to_send < MEASURABLE_BYTES:
        return Choice("direct", f"{hosts} hosts, but at most {to_send:,} bytes for each: too little to relay")
    if link_rate is not None and link_rate >= FAST_LINK_BYTES_S:
        return Choice("direct", f"{hosts} hosts, but the link carried {link_rate / 1e6:.0f} MB/s, fast enough "
                                f"(>= {FAST_LINK_BYTES_S / 1e6:.0f} MB/s) that relaying saves little")
    rate = f"the link carried {link_rate / 1e6:.1f} MB/s" if link_rate is not None else "the link's rate is unknown"
    return Choice("relay", f"{hosts} hosts and {rate}: the bundle crosses it once and the workers pass it on")


def probe_link(s: Session) -> float | None:
    """Bytes/s of a PROBE_BYTES transfer to the host (None if it failed): an underestimate on a long path,
    which only errs towards relaying."""
    start = time.monotonic()
    try:
        s.pipe_in("cat > /dev/null", secrets.token_bytes(PROBE_BYTES))
    except RemoteError:
        return None
    return PROBE_BYTES / max(time.monotonic() - start, 1e-6)


def push_all(sessions: Sequence[Session], bundle: Bundle, dests: dict[str, str], inventory: Inventory,
             mode: str = "auto", timeouts: Timeouts | None = None, announce: Callable[[str], None] = print,
             on_hop: Callable[[str, str], None] | None = None) -> PushReport:
    """Bring every host's `dests[name]` to the bundle's content, direct or by relay (see `choose`).

    `announce` gets the choice and its reason as one line; `on_hop(source, target)` is called as each relay
    stream or hop starts (tests use it to break a source mid-push).
    """
    check_mode(mode)
    timeouts = timeouts or (sessions[0].timeouts if sessions else Timeouts())
    order = sorted(sessions, key=lambda s: s.host.worker)
    by_name = {s.host.name: s for s in order}
    if mode == "direct" or len(order) <= 1 or not all(s.is_ssh for s in order):
        choice = Choice("direct", "this machine is the host") if not all(s.is_ssh for s in order) else \
            choose(mode, len(order), None, 0)
        announce(f"push: {choice.mode} ({choice.reason})")
        return PushReport(fan_out(lambda s: push(s, bundle, dests[s.host.name]), order, timeout=timeouts.command * 2,
                                  name=lambda s: s.host.name), choice)

    # Every host lists what it has (the delta rule's first step), whichever way it is then served.
    listed = fan_out(lambda s: prepare(s, bundle, dests[s.host.name]), order, timeout=timeouts.command,
                     name=lambda s: s.host.name)
    outcomes: dict[str, Outcome[PushResult]] = {n: Outcome(error=o.error) for n, o in listed.items() if not o.ok}
    deltas = {n: o.value for n, o in listed.items() if o.ok}
    to_send = max((sum(bundle.files[f].size for f in d.changed) for d in deltas.values()), default=0)
    rate = None
    if mode == "auto" and to_send >= MEASURABLE_BYTES:
        rate = probe_link(next(by_name[n] for n in deltas))
    choice = choose(mode, len(order), rate, to_send)
    announce(f"push: {choice.mode} ({choice.reason})")
    if choice.mode == "direct":
        outcomes.update(fan_out(lambda s: push(s, bundle, dests[s.host.name], deltas[s.host.name]),
                                [by_name[n] for n in deltas], timeout=timeouts.command * 2, name=lambda s: s.host.name))
        return PushReport(outcomes, choice)
    relay = _Relay(by_name, bundle, dests, inventory, timeouts, on_hop)
    try:
        outcomes.update(relay.run(deltas))
    finally:
        relay.clean_up()
    return PushReport(outcomes, choice, relay.notes)


class _Relay:
    """One relay push: the per-push key, the seed's stream, the hops and their scheduling, and the clean-up."""

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
        self.deltas: dict[str, Delta] = {}  # what each host lacks, as last listed; dropped once it is stale
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
        # The forced command: `z` from the source means a gzip'd archive, anything else a plain one.
        untar = f"tar -xf - -C {self.dests[name]}"
        forced = f"case $SSH_ORIGINAL_COMMAND in z) exec {untar} -z;; *) exec {untar};; esac"
        entry = (f'command="{forced}",restrict,from="{",".join(self.addresses.values())}",'
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
        script = (f"tar -cf - -C {shlex.quote(self.dests[source])} --null --verbatim-files-from -T - | "
                  f"{self._ssh(source, target)} x; {_BOTH_ENDS}")  # the forced command decides what x means
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

    def _stream_push(self, seed: str, delta: Delta, targets: list[str]) -> tuple[PushResult, dict[str, str]]:
        """Push the seed's delta from here while the seed passes each archive on to `targets` (whose delta is the
        same) as it arrives, so the hops overlap the upload. The seed's result, and why each target that did not
        get the bundle this way failed.

        The seed keeps a copy of each archive as it arrives (under the relay directory) and each hop reads
        that copy as it grows (`tail -f --pid`, which ends once the seed's upload has ended and it has read
        to the end): a slow hop never holds back the upload, nor the other hops.
        """
        s, q = self.sessions[seed], shlex.quote(self.dests[seed])
        polls = int(self.timeouts.command / 0.05)
        failed: dict[str, str] = {}
        hops: list[threading.Thread] = []
        sent, content = delta.bytes_sent, 0

        def hop(target: str, script: str, limit: float) -> None:
            try:
                s.pipe_in(f"bash -c {shlex.quote(script)}", b"", timeout=limit)
            except RemoteError as exc:
                failed[target] = f"the stream from {seed} failed: {exc}"

        for t in targets:
            if self.on_hop is not None:
                self.on_hop(seed, t)
        for i, (flags, payload) in enumerate(self.bundle.archives(delta.changed)):
            d = f"{shlex.quote(self._dir(seed))}/stream{i}"
            limit = self.timeouts.command + len(payload) / 1e6  # the upload's length at 1 MB/s, at least
            for t in targets:
                script = (f"n=0; while [ ! -s {d}/pid ] && [ $n -lt {polls} ]; do sleep 0.05; n=$((n+1)); done; "
                          f"tail -s 0.1 -c +1 -f --pid=\"$(cat {d}/pid)\" {d}/archive | "
                          f"{self._ssh(seed, t)} {'z' if 'z' in flags else 'x'}; {_BOTH_ENDS}")
                hops.append(threading.Thread(target=hop, args=(t, script, limit), daemon=True))
                hops[-1].start()
            # tee -p: tar ends at the archive's end marker, before its padding; tee goes on writing the copy.
            # Its status is that of the copy the hops read, tar's that of the seed's own files.
            command = (f"mkdir -p {d} && : > {d}/archive && echo $$ > {d}/pid.tmp && mv {d}/pid.tmp {d}/pid || "
                       f"exit 1; tee -p {d}/archive | tar {flags} - -C {q}; s=(\"${{PIPESTATUS[@]}}\"); "
                       f"echo \"copy=${{s[0]}}\"; exit \"${{s[1]}}\"")
            out = s.pipe_in(f"bash -c {shlex.quote(command)}", payload).decode(errors="replace")
            content += len(payload)
            sent += len(command) + len(payload)
            if "copy=0" not in out.split():
                for t in targets:  # their hops read a copy that may have been cut short: listed again
                    failed.setdefault(t, f"{seed} could not keep a copy of the stream ({out.strip()[-200:]})")
        for thread in hops:
            thread.join()  # each hop's own timeout bounds it
        return PushResult(host=seed, files_sent=len(delta.changed), content_bytes=content, bytes_sent=sent,
                          files_deleted=delta.deleted), failed

    def run(self, deltas: dict[str, Delta]) -> dict[str, Outcome[PushResult]]:
        """Every host's outcome (`deltas`: what each lacks, by `prepare`): the seed's stream, then hops from
        whichever workers have the bundle, a new seed when none is left."""
        order = sorted(deltas, key=lambda n: self.sessions[n].host.worker)
        results = self._unchanged(order, deltas)
        if not self.deltas:
            return results
        self._install_all(results)
        targets = [n for n in order if n not in results]
        sources = self._seed(targets, results)
        if targets:
            _Hops(self, targets, sources, results).run()
        return results

    def _unchanged(self, order: list[str], deltas: dict[str, Delta]) -> dict[str, Outcome[PushResult]]:
        """The outcomes of the hosts that lack nothing (no hop, no key); the others' deltas are kept to send."""
        results: dict[str, Outcome[PushResult]] = {}
        for name in order:
            if not deltas[name].changed:
                results[name] = Outcome(value=PushResult(host=name, files_sent=0, content_bytes=0,
                                                         bytes_sent=deltas[name].bytes_sent,
                                                         files_deleted=deltas[name].deleted))
            else:
                self.deltas[name] = deltas[name]
        return results

    def _install_all(self, results: dict[str, Outcome[PushResult]]) -> None:
        """The relay key on every host that lacks something; one where that fails gets its outcome now."""
        # Each worker's host key as this run's connections recorded it: the hops verify whom they reach.
        for name in self.deltas:
            transport = self.sessions[name].c.transport
            if transport is not None and transport.is_active():
                self.host_keys[name] = transport.get_remote_server_key()
        installed = fan_out(lambda s: self._install(s), [self.sessions[n] for n in self.deltas],
                            timeout=self.timeouts.command, name=lambda s: s.host.name)
        for name, o in installed.items():
            if not o.ok:
                results[name] = Outcome(error=RemoteError(f"{name}: preparing the relay failed: {o.error}"))

    def _seed(self, targets: list[str], results: dict[str, Outcome[PushResult]]) -> dict[str, int]:
        """Push the first of `targets` that takes it from here, streaming on to those that lack what it lacks;
        those leave `targets`. A seed that fails is named, and the next worker is tried. The workers that have
        the bundle now, as relay sources (each with no hop yet)."""
        sources: dict[str, int] = {}  # source -> hops it serves now
        while targets and not sources:
            seed, streamed = targets.pop(0), []
            try:
                delta = self.deltas.pop(seed, None) or prepare(self.sessions[seed], self.bundle, self.dests[seed])
                streamed = [t for t in targets if t in self.deltas and self.deltas[t].changed == delta.changed]
                streamed = streamed[:STREAM_FANOUT]
                result, failed = self._stream_push(seed, delta, streamed)
            except Exception as exc:  # noqa: BLE001 - named, and the next worker becomes the seed
                results[seed] = Outcome(error=exc)
                for t in streamed:
                    self.deltas.pop(t, None)  # what a broken stream left there is listed again
                self.notes.append(f"{seed} failed as the seed ({exc}); the next worker is pushed directly")
                continue
            results[seed], sources[seed] = Outcome(value=result), 0
            for t in streamed:
                if t in failed:
                    self.deltas.pop(t, None)
                    continue
                d = self.deltas.pop(t)
                results[t] = Outcome(value=PushResult(
                    host=t, files_sent=len(d.changed), content_bytes=0, bytes_sent=d.bytes_sent,
                    files_deleted=d.deleted, via=seed, relayed_bytes=sum(self.bundle.files[n].size for n in d.changed)))
                sources[t] = 0
                targets.remove(t)
        return sources

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


class _Hops:
    """The hops after the seed: each target from the least busy source (at most FANOUT hops each), a target
    whose hop failed retried from another, a source that stopped answering dropped; a target no worker could
    serve is pushed from here, as is every target once no source is left."""

    def __init__(self, relay: _Relay, targets: list[str], sources: dict[str, int],
                 results: dict[str, Outcome[PushResult]]) -> None:
        self.relay, self.sources, self.results = relay, sources, results
        self.pending = deque(targets)
        self.failures: dict[str, int] = {t: 0 for t in targets}
        self.from_here: set[str] = set()  # targets no worker could serve: this machine is the last source they try
        self.cond = threading.Condition()
        self.active = 0

    def run(self) -> None:
        with self.cond:
            while self.pending or self.active:
                free = [n for n, busy in self.sources.items() if busy < FANOUT]
                pending = self.pending
                if pending and (free or pending[0] in self.from_here or (not self.sources and not self.active)):
                    target = pending.popleft()
                    source = (min(free, key=lambda n: self.sources[n])
                              if free and target not in self.from_here else None)
                    if source is None and target not in self.from_here:
                        self.relay.notes.append(f"no relay source left: {target} is pushed directly as the new seed")
                    elif source is not None:
                        self.sources[source] += 1
                    self.active += 1
                    threading.Thread(target=self._hop, args=(source, target), daemon=True).start()
                    continue
                self.cond.wait()

    def _hop(self, source: str | None, target: str) -> None:
        relay = self.relay
        result, error, hop_failed, source_lost = None, None, False, False
        try:
            result = relay._hop(source, target) if source else push(
                relay.sessions[target], relay.bundle, relay.dests[target], relay.deltas.pop(target, None))
        except _HopFailed as exc:
            error, hop_failed = exc.__cause__, True
            source_lost = not relay._answers(source)
        except Exception as exc:  # noqa: BLE001 - the target's own failure: named like a direct push's
            error = exc
        with self.cond:
            self.active -= 1
            if source in self.sources:
                self.sources[source] -= 1
            self._settle(source, target, result, error, hop_failed, source_lost)
            self.cond.notify_all()

    def _settle(self, source: str | None, target: str, result: PushResult | None, error: BaseException | None,
                hop_failed: bool, source_lost: bool) -> None:
        """A hop's end (under the lock): the target's outcome, or where it goes next."""
        notes = self.relay.notes
        if result is not None:
            self.results[target] = Outcome(value=result)
            self.sources[target] = 0  # it has the bundle now: it serves others
        elif source_lost:
            self.sources.pop(source, None)
            notes.append(f"{source} stopped answering as a relay source ({error}); "
                         "its targets get the bundle from another")
            self.pending.appendleft(target)
        elif hop_failed and self.failures[target] + 1 < MAX_ATTEMPTS:
            self.failures[target] += 1
            self.pending.append(target)
        elif hop_failed:
            notes.append(f"{target}: {MAX_ATTEMPTS} hops failed (last from {source}: {error}); it is pushed directly")
            self.from_here.add(target)
            self.pending.append(target)
        else:
            via = f" (last from {source})" if source else ""
            self.results[target] = Outcome(error=RemoteError(f"{target}: could not get the bundle{via}: {error}")
                                           if source else error)


# After `SENDER | ssh ...`: the hop succeeded when ssh (the target's tar) did and the sender either ended well
# or was cut off (SIGPIPE, 141) because that tar had read the archive's end marker and left its padding unread.
# A sender that failed otherwise may have ended the archive at a member boundary, which tar takes silently.
_BOTH_ENDS = ('s=("${PIPESTATUS[@]}"); [ "${s[1]}" = 0 ] && { [ "${s[0]}" = 0 ] || [ "${s[0]}" = 141 ]; } || '
              '{ echo "hop failed: sender ${s[0]}, ssh ${s[1]}" >&2; exit 1; }')


class _HopFailed(Exception):
    """The relay command on the source failed: the source or the link between the two is at fault."""
