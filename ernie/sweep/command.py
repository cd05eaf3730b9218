"""`ernie sweep`: list what ernie left behind, with its hourly cost; delete it after confirmation."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import typer
from rich.text import Text

from ernie.errors import ErnieError
from ernie.sweep import Tagged, judge, table
from ernie.terminal import SafeConsole, remote

console = SafeConsole()  # names, tags and error messages come from the cloud's APIs


def live_stacks(given: list[str]) -> set[str] | None:
    """The stacks that still exist: as given, else from the Pulumi CLI; None when neither can tell."""
    if given:
        return set(given)
    from ernie.pulumi_cli import PulumiCli

    try:
        return set(PulumiCli().stacks())
    except ErnieError as exc:
        console.print(Text.assemble(("note: ", "yellow"), remote(
            f"stack liveness unknown ({exc}); judging by TTL alone. Name the live stacks with --live-stack to "
            "also find what belongs to a destroyed stack.")))
        return None


def sweep(cloud: str, regions: list[str], project: str | None, zones: list[str], given_live: list[str],
          delete: bool, yes: bool) -> int:
    """List (and maybe delete) leftovers; returns the exit status."""
    if cloud == "aws":
        from ernie.sweep.aws import AwsAccount

        if not regions:
            raise ErnieError("--region is required with --cloud aws (repeat it for several regions)")
        accounts = [AwsAccount(region) for region in regions]
    elif cloud == "gcp":
        from ernie.sweep.gcp import GcpProject, GcpRest, all_tpu_zones

        if not project:
            raise ErnieError("--project is required with --cloud gcp")
        accounts = [GcpProject(project, zones or all_tpu_zones(), GcpRest())]
    else:
        raise ErnieError(f"--cloud {cloud!r} is not supported; use aws or gcp")

    live = live_stacks(given_live)
    now = datetime.now(timezone.utc)
    found: list[tuple[object, list]] = []
    for account in accounts:
        resources: list[Tagged] = list(account.tagged())
        found.append((account, judge(resources, live, now)))
    leftovers = [item for _, items in found for item in items]
    console.print(table(leftovers, now))
    if not leftovers or not delete:
        if leftovers:
            console.print("Nothing deleted; run again with --delete to remove them.")
        return 0
    if not yes:
        if not sys.stdin.isatty():
            raise ErnieError("refusing to delete without confirmation: no terminal to ask; add --yes")
        if not typer.confirm(f"Delete these {len(leftovers)} resources?", default=False):
            console.print("Nothing deleted.")
            return 0
    failures = [f for account, items in found if items for f in account.delete(items)]
    for failure in failures:
        console.print(Text.assemble(("not deleted: ", "red"), remote(failure)))
    console.print(f"Deleted {len(leftovers) - len(failures)} of {len(leftovers)}.")
    return 1 if failures else 0
