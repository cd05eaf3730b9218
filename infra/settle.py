"""Settled: a value passed on only after a pause once it first exists, for what a cloud makes usable a little late.

A new Google service account is not usable at once: the TPU API (and IAM) may answer "not found" for a minute
after it was created. The provider's own TPU example waits 60 s after creating the account (`time_sleep`);
pulumi-time is not among ernie's dependencies, so this dynamic resource does the same: its create sleeps, then
hands the value on; later `pulumi up`s find it created and do not wait again; a new value (the account was
replaced) replaces it, and so waits again.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

SERVICE_ACCOUNT_SETTLE_S = 60


class SleepProvider(ResourceProvider):
    """Create: sleep `seconds`, then return `value`. Nothing to delete."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        import time  # imported here: the provider runs in Pulumi's dynamic provider host, pickled by value

        time.sleep(float(props["seconds"]))
        return CreateResult(id_=str(props["value"]), outs=dict(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = olds.get("value") != news.get("value")
        return DiffResult(changes=changed, replaces=["value"] if changed else [], delete_before_replace=False)


# The dynamic provider host imports none of ernie's modules: dill pickles a class and its functions by value only
# when they belong to __main__, as the providers in Pulumi's own examples (declared in the program's __main__.py) do.
for _member in (SleepProvider, SleepProvider.create, SleepProvider.diff):
    _member.__module__ = "__main__"


class Settled(Resource, module="ernie", name="Settled"):
    """`value`, available to dependants only after `seconds` have passed since it was first created."""

    value: pulumi.Output[str]
    seconds: pulumi.Output[float]

    def __init__(self, name: str, value: pulumi.Input[str], seconds: float,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(SleepProvider(), name, {"value": value, "seconds": seconds}, opts)
