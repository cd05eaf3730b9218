"""Hourly prices from `prices.csv`, the one price catalog; each price travels with its source and date."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PRICES_CSV = Path(__file__).with_name("prices.csv")


@dataclass(frozen=True)
class Price:
    """One catalog row."""

    cloud: str
    accelerator: str
    unit: str
    """"chip" (TPU, multiplied by the slice's chips) or "instance" (EC2, by the instance count)."""
    usd_per_hour: float
    region: str
    source: str
    date: str


@cache
def catalog() -> dict[tuple[str, str], Price]:
    """Every row of prices.csv, keyed by (cloud, accelerator)."""
    with PRICES_CSV.open(newline="") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return {
            (r["cloud"], r["accelerator"]): Price(r["cloud"], r["accelerator"], r["unit"], float(r["usd_per_hour"]),
                                                  r["region"], r["source"], r["date"])
            for r in rows
        }


@dataclass(frozen=True)
class Quote:
    """What a stack costs per hour, and where the figure comes from."""

    usd_per_hour: float
    source: str


def quote(cloud: str, accelerator: str | None, units: int, *, disk_gib: float = 0.0,
          disk_type: str = "gp3") -> Quote:
    """On-demand price of `units` chips (TPU generation) or instances (EC2 type) of `accelerator`, plus `disk_gib`
    of block storage (`ebs-<disk_type>` rows) beside them.

    The one hourly figure: the inventory reports it and the cost-ceiling rule (policy/rules.py) checks it.
    KeyError when the catalog has no row for what is priced.
    """
    parts, usd = [], 0.0
    if accelerator is not None:
        price = _row(cloud, accelerator)
        usd += units * price.usd_per_hour
        parts.append(f"{units} x {price.usd_per_hour} USD/{price.unit}-hour on demand in {price.region} "
                     f"({price.source}, {price.date})")
    if disk_gib:
        disk = _row(cloud, f"ebs-{disk_type}")
        usd += disk_gib * disk.usd_per_hour
        parts.append(f"{disk_gib:g} GiB {disk_type} x {disk.usd_per_hour} USD/GiB-hour ({disk.source}, {disk.date})")
    return Quote(usd, f"{PRICES_CSV.name}: {' + '.join(parts) or 'nothing billed by the hour'}")


def _row(cloud: str, item: str) -> Price:
    price = catalog().get((cloud, item))
    if price is None:
        raise KeyError(f"{PRICES_CSV.name} has no row for {cloud} {item}")
    return price
