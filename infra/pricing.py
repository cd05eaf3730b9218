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


def quote(cloud: str, accelerator: str, units: int) -> Quote:
    """Price `units` chips (TPU generation) or instances (EC2 type) of `accelerator`."""
    price = catalog().get((cloud, accelerator))
    if price is None:
        raise KeyError(f"{PRICES_CSV.name} has no row for {cloud} {accelerator}")
    source = (f"{PRICES_CSV.name}: {units} x {price.usd_per_hour} USD/{price.unit}-hour on demand in "
              f"{price.region} ({price.source}, {price.date})")
    return Quote(round(units * price.usd_per_hour, 4), source)
