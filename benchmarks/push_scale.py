"""Push scaling benchmark (issue 21): 1, 4 and 8 hosts behind a 50 Mbit/s user link, direct against relay.

    sudo .venv/bin/python benchmarks/push_scale.py [--repeats 2] [--mbit 50]

Makes eight namespace SSH hosts (testing/sshhosts.py; root, iproute2, openssh-server) with their files in memory
(each cloud worker writes to a disk of its own) and shapes this machine's link to them with a token-bucket
filter, leaving host-to-host traffic unshaped, as a cloud's internal network is. The bundle is benchmarks/push.py's
(about 23 MB in about 500 files: stdlib sources and incompressible binaries). Each measurement pushes into a
fresh directory on the first N hosts and includes connecting, hashing and packing, as `ernie run` does; the
bytes are what crossed the shaped link (the bridge's transmit counter). Medians over the repeats.

The last line: `relay_8_vs_1=<relay to 8 hosts over a push to 1 host> direct_8_vs_1=<the same, direct>
repush_bytes_fraction=<an unchanged relay re-push to 8 hosts, in bytes through the link over the bundle's>`
(targets: relay_8_vs_1 <= 1.5, repush_bytes_fraction < 0.01). The machine's load is printed with every figure:
the hops between hosts share this machine's CPUs, so a busy machine slows the relay, not the link.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # testing/, the SSH hosts the tests use too, is not an installed package

from push import make_bundle  # noqa: E402
from testing.sshhosts import SshHosts, ssh_hosts_up  # noqa: E402

from ernie.inventory import Inventory, load_inventory_file  # noqa: E402
from ernie.remote.connect import Connector, Session, Timeouts, fan_out  # noqa: E402
from ernie.remote.push import Bundle  # noqa: E402
from ernie.remote.relay import push_all  # noqa: E402

HOST_COUNTS = (1, 4, 8)


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def one_push(hosts: SshHosts, inventory: Inventory, connector: Connector, bundle_dir: Path, count: int, mode: str,
             dest: str) -> tuple[float, int, str]:
    """Seconds to connect, hash, pack and push to the first `count` hosts; bytes through the link; the choice."""
    said: list[str] = []
    before = hosts.uplink_bytes()
    start = time.perf_counter()
    bundle = Bundle.from_directory(bundle_dir)
    opened = fan_out(connector.open, inventory.hosts[:count], timeout=120, name=lambda h: h.name)
    sessions: list[Session] = [o.value for o in opened.values() if o.ok]
    if len(sessions) != count:
        raise SystemExit(f"connecting failed: {[str(o.error) for o in opened.values() if not o.ok]}")
    try:
        report = push_all(sessions, bundle, {s.host.name: f"{s.base}/bundles/{dest}" for s in sessions}, inventory,
                          mode, connector.timeouts, said.append)
    finally:
        for s in sessions:
            s.close()
    elapsed = time.perf_counter() - start
    failed = {n: str(o.error) for n, o in report.outcomes.items() if not o.ok}
    if failed:
        raise SystemExit(f"{mode} push to {count} host(s) failed: {failed}")
    return elapsed, hosts.uplink_bytes() - before, said[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="measurements of each kind (medians reported)")
    parser.add_argument("--mbit", type=float, default=50.0, help="the user link's rate, Mbit/s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ssh_hosts_up(8, uplink_mbit=args.mbit, in_memory=True) as hosts:
        bundle_dir = make_bundle(Path(tmp))
        size = Bundle.from_directory(bundle_dir).total_bytes
        print(f"bundle: {size / 2**20:.1f} MiB; 8 hosts, this machine's link to them at {args.mbit:g} Mbit/s "
              "(tc tbf on the bridge), host to host unshaped")
        inventory = load_inventory_file(hosts.inventory_path)
        connector = Connector(inventory, Path(tmp) / "known_hosts", Timeouts(connect=15, command=300))
        times: dict[tuple[str, int], list[float]] = {}
        repush: list[float] = []
        for r in range(args.repeats):
            for count in HOST_COUNTS:
                for mode in ("direct", "relay"):
                    dest = f"scale-{mode}-{count}-{r}"
                    elapsed, sent, said = one_push(hosts, inventory, connector, bundle_dir, count, mode, dest)
                    times.setdefault((mode, count), []).append(elapsed)
                    print(f"repeat {r}: {mode:6} to {count} host(s): {elapsed:6.2f}s, {sent:>11,} B through the "
                          f"link ({sent / size:.3f} bundles); {said}; {load()}", flush=True)
                    if mode == "relay" and count == 8:
                        elapsed, sent, said = one_push(hosts, inventory, connector, bundle_dir, count, mode, dest)
                        repush.append(sent / size)
                        print(f"repeat {r}: relay re-push, unchanged, to 8 hosts: {elapsed:6.2f}s, {sent:,} B through "
                              f"the link ({sent / size:.5f} of the bundle); {load()}", flush=True)
        median = {key: statistics.median(values) for key, values in times.items()}
        for count in HOST_COUNTS:
            print(f"median to {count} host(s): direct {median[('direct', count)]:.2f}s, "
                  f"relay {median[('relay', count)]:.2f}s")
        one = median[("direct", 1)]
        import machine  # benchmarks/machine.py

        print(machine.describe("none (SSH, tar and sha256: no arithmetic precision applies)"))
        print(f"relay_8_vs_1={median[('relay', 8)] / one:.3f} direct_8_vs_1={median[('direct', 8)] / one:.3f} "
              f"repush_bytes_fraction={statistics.median(repush):.5f}")


if __name__ == "__main__":
    main()
