"""Push benchmark: ernie's bundle push to three SSH hosts against `rsync -a` over ssh, measured in the same run.

    sudo .venv/bin/python benchmarks/push.py [--repeats 3]

Makes three namespace SSH hosts (testing/sshhosts.py; needs root, iproute2, openssh-server, rsync) and a
realistic bundle of about 20 MB in about 500 files: Python sources (real text from the standard library)
and a few binary files standing in for a vocabulary and a small checkpoint. Measures, into fresh
directories each repeat (medians reported):
  - baseline: `rsync -a` over ssh to the three hosts one after another (connection set-up included), measured
    before and after ernie's push in each repeat and averaged, so a load that drifts during the repeat weighs
    on both sides alike;
  - ernie: first push to the three hosts in parallel (connecting, hashing and packing included);
  - ernie: re-push of the unchanged bundle, as the fraction of the bundle's bytes it sends.
The last line is `push_vs_rsync=<median ratio> push_vs_rsync_worst=<the highest repeat's>
repush_bytes_fraction=<fraction>` (targets: <= 0.6 in every repeat, < 0.01).
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # testing/, the SSH hosts the tests use too, is not an installed package

import machine  # noqa: E402  (benchmarks/machine.py: the CPU line before the ratio)
from testing.sshhosts import SshHosts, ssh_hosts_up  # noqa: E402

from ernie.inventory import load_inventory_file  # noqa: E402
from ernie.remote.connect import Connector, Timeouts, fan_out  # noqa: E402
from ernie.remote.push import Bundle, push  # noqa: E402

TEXT_FILES = 480
BINARY_FILES = 20
BINARY_BYTES = 12 * 2**20


def make_bundle(root: Path) -> Path:
    """About 500 files, about 20 MB: stdlib sources plus incompressible binaries (seeded, so every run alike)."""
    bundle = root / "bundle"
    sources = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    picked = [p for p in sources if "test" not in p.parts and p.stat().st_size > 4000][:TEXT_FILES]
    for i, src in enumerate(picked):
        dest = bundle / "src" / f"pkg{i // 40}" / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    rng = random.Random(20261128)
    for i in range(BINARY_FILES):
        dest = bundle / "assets" / f"shard-{i:02d}.bin"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(rng.randbytes(BINARY_BYTES // BINARY_FILES))
    return bundle


def rsync_sequential(hosts: SshHosts, bundle: Path, dest: str) -> tuple[float, int]:
    """Seconds for `rsync -a` to every host in turn, and the bytes rsync reports sending."""
    ssh = (f"ssh -i {hosts.key_path} -o BatchMode=yes -o StrictHostKeyChecking=no "
           "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")
    sent = 0
    start = time.perf_counter()
    for host in hosts.hosts:
        target = f"{hosts.user}@{host.address}:{dest}/"
        out = subprocess.run(["rsync", "-a", "--stats", "-e", ssh, f"{bundle}/", target],
                             check=True, capture_output=True, text=True, timeout=300).stdout
        sent += int(next(line for line in out.splitlines() if line.startswith("Total bytes sent"))
                    .split(":")[1].replace(",", ""))
    return time.perf_counter() - start, sent


def ernie_push(connector: Connector, hosts: list, bundle_dir: Path, dest: str) -> tuple[float, int]:
    """Seconds for ernie to connect, hash, pack and push to every host in parallel, and the bytes it sent.

    As `ernie run` does (ernie/run.py, execute): the bundle is hashed while the hosts are reached, and packed
    in the background while they list what they have.
    """
    start = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        packed = pool.submit(_packed, bundle_dir)
        opened = fan_out(connector.open, hosts, timeout=300, name=lambda h: h.name)
        bundle = packed.result()
    sessions = [o.value for o in opened.values() if o.ok]
    try:
        outcomes = fan_out(lambda s: push(s, bundle, f"{s.base}/{dest}").bytes_sent, sessions, timeout=300,
                           name=lambda s: s.host.name)
        elapsed = time.perf_counter() - start
    finally:
        for s in sessions:
            s.close()
    for name, o in {**opened, **outcomes}.items():
        if not o.ok:
            raise SystemExit(f"push to {name} failed: {o.error}")
    return elapsed, sum(o.value for o in outcomes.values())


def _packed(bundle_dir: Path) -> Bundle:
    bundle = Bundle.from_directory(bundle_dir)
    bundle.pack_ahead()
    return bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each kind (medians reported)")
    args = parser.parse_args()
    if shutil.which("rsync") is None:
        raise SystemExit("rsync is missing: apt-get install rsync (.ci/run installs it)")
    with tempfile.TemporaryDirectory() as tmp, ssh_hosts_up(3) as hosts:
        bundle_dir = make_bundle(Path(tmp))
        files = [p for p in bundle_dir.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        print(f"bundle: {len(files)} files, {size / 2**20:.1f} MiB; hosts: {', '.join(h.address for h in hosts.hosts)}")
        inventory = load_inventory_file(hosts.inventory_path)
        connector = Connector(inventory, Path(tmp) / "known_hosts", Timeouts(connect=15, command=300))
        rsync_times, ernie_times, repush_fractions = [], [], []
        for r in range(args.repeats):
            t_before, rsync_sent = rsync_sequential(hosts, bundle_dir, f"rsync-{r}")
            _, rsync_resent = rsync_sequential(hosts, bundle_dir, f"rsync-{r}")
            t_ernie, ernie_sent = ernie_push(connector, list(inventory.hosts), bundle_dir, f"ernie-{r}")
            _, ernie_resent = ernie_push(connector, list(inventory.hosts), bundle_dir, f"ernie-{r}")
            t_after, _ = rsync_sequential(hosts, bundle_dir, f"rsync-{r}-after")
            t_rsync = (t_before + t_after) / 2
            rsync_times.append(t_rsync)
            ernie_times.append(t_ernie)
            repush_fractions.append(ernie_resent / (3 * size))
            print(f"repeat {r}: rsync sequential {t_rsync:.2f}s (before {t_before:.2f}, after {t_after:.2f}; "
                  f"{rsync_sent:,} B sent, re-push {rsync_resent:,} B "
                  f"= {rsync_resent / (3 * size):.5f}); ernie parallel {t_ernie:.2f}s ({ernie_sent:,} B sent, "
                  f"re-push {ernie_resent:,} B); ratio {t_ernie / t_rsync:.3f}")
        ratio = statistics.median(ernie_times) / statistics.median(rsync_times)
        worst = max(e / r for e, r in zip(ernie_times, rsync_times))  # the target holds in every repeat
        print(f"median: rsync sequential {statistics.median(rsync_times):.2f}s, "
              f"ernie parallel {statistics.median(ernie_times):.2f}s")
        print(machine.describe("none (SSH, tar and sha256: no arithmetic precision applies)"))
        print(f"push_vs_rsync={ratio:.3f} push_vs_rsync_worst={worst:.3f} "
              f"repush_bytes_fraction={statistics.median(repush_fractions):.5f}")


if __name__ == "__main__":
    main()
