"""The hourly price a run's figures are computed at, and what kind of price it is.

A cloud run is priced at its inventory's price: what its stack is billed per hour on demand. A local run is
billed nothing, and a $0/h price would make every cost figure zero; it is priced instead at a declared
equivalent, the on-demand instance with as many vCPUs as the run's host had (result.json's
`settings.host_cpus`), from catalog/prices.csv, and the report names it as an equivalent, never as a bill.
A local run whose CPU count is unknown, or has no equivalent here, is "not priced": no cost figure at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from catalog.pricing import PRICES_CSV, catalog

#: Per host CPU count, the instance a local run is priced as: the same number of vCPUs (c7i: Sapphire Rapids,
#: AVX-512 and AMX, the CPU family of the machines ernie's demo runs on).
CPU_EQUIVALENTS: dict[int, tuple[str, str]] = {
    2: ("aws", "c7i.large"),
    4: ("aws", "c7i.xlarge"),
    8: ("aws", "c7i.2xlarge"),
    16: ("aws", "c7i.4xlarge"),
}

PriceBasis = Literal["bill", "equivalent", "not priced"]


@dataclass(frozen=True)
class HourlyPrice:
    """USD per hour (None when not priced), what kind of price it is, and where it comes from."""

    usd: float | None
    basis: PriceBasis
    source: str


def hourly_price(inventory: dict[str, Any], host_cpus: int | None) -> HourlyPrice:
    """The price a run's cost figures use: its inventory's for a cloud run, the declared equivalent for a local one."""
    price = inventory.get("price_per_hour_usd")
    source = str(inventory.get("price_source") or "no source given")
    if inventory.get("cloud") != "local":
        if isinstance(price, (int, float)) and not isinstance(price, bool):
            return HourlyPrice(float(price), "bill", source)
        return HourlyPrice(None, "not priced", "the inventory gives no price per hour")
    equivalent = CPU_EQUIVALENTS.get(host_cpus) if host_cpus else None
    row = catalog().get(equivalent) if equivalent else None
    if row is None:
        why = ("its result.json does not say how many CPUs its host had" if not host_cpus
               else f"no instance with {host_cpus} vCPUs is declared as its equivalent")
        return HourlyPrice(None, "not priced", f"a local run is not billed, and {why}")
    return HourlyPrice(
        row.usd_per_hour, "equivalent",
        f"equivalent, not a bill: {row.cloud} {row.accelerator} ({host_cpus} vCPUs) on demand in {row.region}, "
        f"${row.usd_per_hour}/h ({PRICES_CSV.name}: {row.source.split(';')[0]}, {row.date})",
    )
