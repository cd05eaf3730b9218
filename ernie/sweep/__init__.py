"""Find what ernie left behind in a cloud account, price it, and delete it on request.

A resource is a leftover when it carries ernie's stack label and either its stack is not live (no longer in
`pulumi stack ls`) or it has outlived the TTL it was labelled with. Listing and deleting are per cloud
(`aws.py`, `gcp.py`); judging and rendering are here, the same for both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

STACK_TAG = "ernie-stack"
"""Label/tag naming the Pulumi stack that declared a resource (infra/ puts it on everything)."""
TTL_TAG = "ernie-ttl"
"""Label/tag holding the stack's ttlMinutes: "180", or "180m" where GCP labels carry it."""


@dataclass(frozen=True)
class Tagged:
    """One resource carrying ernie's labels, as the cloud lists it."""

    cloud: str
    kind: str
    """instance, tpu-node, volume, security-group, network-interface, bucket, layer-version."""
    id: str
    location: str
    tags: Mapping[str, str]
    created: datetime | None
    """When the cloud says it was made; None for kinds that do not record it (security groups, ENIs)."""
    usd_per_hour: float | None
    """What it costs while it exists; None where the price catalog has no row."""
    detail: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)
    """What deletion needs besides the id (a layer's version, a zone)."""

    @property
    def stack(self) -> str | None:
        return self.tags.get(STACK_TAG)


@dataclass(frozen=True)
class Leftover:
    """A tagged resource that should no longer exist, and why."""

    resource: Tagged
    reason: str


def ttl_minutes(resource: Tagged) -> int | None:
    """The resource's TTL label as minutes; None when absent or not a whole number."""
    match = re.fullmatch(r"(\d+)m?", resource.tags.get(TTL_TAG, ""))  # "180" (AWS tags) or "180m" (GCP labels)
    return int(match.group(1)) if match else None


def judge(resources: Iterable[Tagged], live_stacks: set[str] | None, now: datetime) -> list[Leftover]:
    """The resources that are leftovers. `live_stacks` None means liveness is unknown: judge by TTL alone."""
    leftovers = []
    for r in resources:
        if r.stack is None:
            continue  # not ernie's
        reason = None
        if live_stacks is not None and r.stack not in live_stacks:
            reason = f"stack {r.stack!r} is not live"
        ttl = ttl_minutes(r)
        if reason is None and ttl is not None and r.created is not None:
            age = now - r.created
            if age > timedelta(minutes=ttl):
                reason = f"{_human(age)} old, past its {ttl}-minute TTL"
        if reason:
            leftovers.append(Leftover(r, reason))
    return leftovers


def hourly_total(leftovers: Iterable[Leftover]) -> float:
    """What the leftovers cost per hour together (unpriced ones count as zero)."""
    return sum(item.resource.usd_per_hour or 0.0 for item in leftovers)


def _human(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes / 60:.1f} h"
    return f"{minutes / 1440:.1f} days"


def table(leftovers: list[Leftover], now: datetime):
    """A rich table of the leftovers with their hourly cost, most expensive first."""
    from rich.table import Table

    from ernie.terminal import remote  # ids, tags and details are the cloud's text: never markup or escapes

    t = Table(title=f"{len(leftovers)} leftover resource(s), {hourly_total(leftovers):.2f} USD/hour")
    for column in ("kind", "id", "where", "stack", "age", "why", "USD/h"):
        t.add_column(column, justify="right" if column == "USD/h" else "left")
    for item in sorted(leftovers, key=lambda x: -(x.resource.usd_per_hour or 0.0)):
        r = item.resource
        age = _human(now - r.created) if r.created else "?"
        price = "?" if r.usd_per_hour is None else f"{r.usd_per_hour:.2f}"
        cells = (r.kind, r.id + (f" ({r.detail})" if r.detail else ""), r.location, r.stack or "", age,
                 item.reason, price)
        t.add_row(*map(remote, cells))
    return t
