"""Which source ranges count as "the whole internet": the one answer for config validation and the guardrails."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

# Broader than one of the largest single allocations (a /8 of IPv4, a /32 of IPv6 as a regional registry hands
# to an ISP) is no longer "our own addresses": it is a slice of the internet, and SSH must not face it.
WIDEST_PREFIX = {4: 8, 6: 32}
_MAPPED_V4 = ipaddress.ip_network("::ffff:0:0/96")


def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        return None
    if network.version == 6 and network.subnet_of(_MAPPED_V4):  # ::ffff:0.0.0.0/96 is IPv4's whole space
        return ipaddress.ip_network(f"{network.network_address.ipv4_mapped}/{network.prefixlen - 96}")
    return network


def world_ranges(cidrs: Iterable[str]) -> list[str]:
    """The ranges of `cidrs` that, alone or together, reach more than WIDEST_PREFIX allows: 0.0.0.0/0, but also
    0.0.0.0/1 with 128.0.0.0/1, or 256 adjacent /8s. Unparsable ranges are not counted (config.py refuses them)."""
    parsed = [(cidr, net) for cidr in cidrs if (net := _network(cidr)) is not None]
    broad = []
    for version, widest in WIDEST_PREFIX.items():
        union = ipaddress.collapse_addresses(net for _, net in parsed if net.version == version)
        broad += [block for block in union if block.prefixlen < widest]
    return [cidr for cidr, net in parsed if any(net.version == b.version and net.subnet_of(b) for b in broad)]
