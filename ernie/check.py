"""`ernie check`: run the Pulumi program offline under mocks and show what `pulumi up` would create.

No cloud credentials and no Pulumi CLI: the program in infra/ runs in this process exactly as Pulumi would run
it (infra/ as the program directory), against `ernie.mocks.ErnieMocks`, with the configuration of a stack file
(Pulumi.<stack>.yaml) or of any file in that shape. A bad configuration is refused with the program's own
message; a plan lists every resource with the properties a reviewer cares about, the inventory's workers,
the hourly price and the guardrail findings.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ernie import mocks
from ernie.errors import ErnieError
from infra import serving_layers
from infra.config import ConfigError, parse
from policy.rules import RULES, STACK_RULES, Finding, Limits, evaluate

PROJECT_DIR = Path(__file__).resolve().parents[1]
"""The Pulumi project: Pulumi.yaml, the stack files, infra/ and policy/."""
PROGRAM_DIR = PROJECT_DIR / "infra"
ACKNOWLEDGED_BY_OPT_IN = "ssh-open-to-world"
"""The rule whose findings `ernie:allowSshFromAnywhere: true` turns into warnings: the user chose it."""


@dataclass(frozen=True)
class Plan:
    """What a stack would create, as `ernie check` found it."""

    stack: str
    config_file: Path
    resources: list[mocks.RecordedResource]
    inventory: dict[str, Any]
    inventory_is_secret: bool
    limits: Limits
    findings: list[Finding]
    """What fails the check."""
    acknowledged: list[Finding]
    """Findings the config explicitly accepted (ernie:allowSshFromAnywhere): shown as warnings, not failures."""
    unseen_layers: list[str] = field(default_factory=list)
    """Serving functions whose built layers the check has not seen (no manifest, no entry, or stale), each with
    the `ernie layers build` that makes them: warnings, since everything else was checked with stand-ins."""


def stack_config_file(stack: str | None, config_file: Path | None) -> tuple[str, Path]:
    """The stack name and the file holding its config: `--config FILE`, or Pulumi.<stack>.yaml."""
    if config_file is None:
        if stack is None:
            raise ErnieError("name a stack (-s gcp, -s aws) or a config file (--config FILE)")
        config_file = PROJECT_DIR / f"Pulumi.{stack}.yaml"
    if not config_file.is_file():
        raise ErnieError(f"{config_file}: no such stack config file; the stacks here are "
                         f"{', '.join(p.name for p in sorted(PROJECT_DIR.glob('Pulumi.*.yaml')))}")
    if stack is None:
        name = config_file.name
        stack = name[len("Pulumi."):-len(".yaml")] if name.startswith("Pulumi.") and name.endswith(".yaml") \
            else config_file.stem
    return stack, config_file


def read_stack_config(path: Path) -> dict[str, str]:
    """A stack file's `config:` map, with values as Pulumi hands them to a program (structured values as JSON)."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ErnieError(f"{path}: not valid YAML ({exc})") from None
    values = document.get("config") if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise ErnieError(f"{path}: expected a top-level `config:` map, as in Pulumi.gcp.yaml")
    raw = {}
    for key, value in values.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            raise ErnieError(f"{path}: {key} is encrypted (secure:); `ernie check` runs offline and cannot "
                             "decrypt it: put a placeholder in a copy and pass it with --config")
        raw[str(key)] = value if isinstance(value, str) else json.dumps(value)
    return raw


def plan(stack: str | None = None, config_file: Path | None = None) -> Plan:
    """Run the program under mocks with the stack's config. Raises ErnieError for a bad configuration."""
    stack, path = stack_config_file(stack, config_file)
    raw = read_stack_config(path)
    project = (yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text()) or {}).get("name", "ernie")
    # A fresh context per run: the Pulumi runtime keeps its stack, settings and config in context variables.
    loop = _event_loop()
    try:
        return contextvars.Context().run(_run_program, stack, path, raw, project)
    finally:  # a program stopped by a bad config leaves its resources' tasks behind: end them here
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def _event_loop() -> asyncio.AbstractEventLoop:
    """The thread's event loop, which Pulumi's runtime runs the program on, closed when the interpreter exits:
    left to the interpreter's teardown, it printed a traceback under `ernie compare`'s one-line error."""
    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    if loop not in _CLOSE_AT_EXIT:
        _CLOSE_AT_EXIT.add(loop)
        atexit.register(lambda: loop.is_closed() or loop.is_running() or loop.close())
    return loop


_CLOSE_AT_EXIT: set[asyncio.AbstractEventLoop] = set()


def _run_program(stack: str, path: Path, raw: dict[str, str], project: str) -> Plan:
    recorder = mocks.install(stack, project)
    pulumi.runtime.set_all_config(raw)
    unseen: list[str] = []
    serving_layers.UNSEEN.set(unseen)  # this run's own context (plan()): layers not built are reported, not fatal
    try:
        _sync_await(run_pulumi_func(lambda: runpy.run_path(str(PROGRAM_DIR), run_name="__main__")))
    except ConfigError as exc:
        raise ErnieError(f"{path.name}: {exc}") from None
    exported = pulumi.runtime.settings.get_root_resource().outputs["inventory"]
    inventory = _sync_await(exported.future())
    is_secret = _sync_await(exported.is_secret())
    cfg = parse(raw, stack)
    limits = Limits(max_usd_per_hour=cfg.max_usd_per_hour)
    findings = evaluate(((r.type, r.name, r.inputs) for r in recorder.resources), limits, stack)
    accepted = {ACKNOWLEDGED_BY_OPT_IN} if cfg.access.ssh_from_anywhere else set()
    return Plan(stack, path, recorder.resources, inventory, is_secret, limits,
                [f for f in findings if f.rule not in accepted], [f for f in findings if f.rule in accepted], unseen)


# What a reviewer looks at, per resource type: (label, path into the camelCase inputs).
_REVIEW: dict[str, tuple[tuple[str, str], ...]] = {
    "gcp:tpu/v2Vm:V2Vm": (("type", "acceleratorType"), ("runtime", "runtimeVersion"), ("zone", "zone"),
                          ("spot", "schedulingConfig.spot"), ("ttl", "labels.ernie-ttl")),
    "gcp:compute/firewall:Firewall": (("allows", "allows"), ("from", "sourceRanges"), ("from tags", "sourceTags")),
    "gcp:storage/bucket:Bucket": (("location", "location"), ("public access", "publicAccessPrevention"),
                                  ("uniform", "uniformBucketLevelAccess"), ("lifecycle", "lifecycleRules")),
    "gcp:storage/bucketIAMMember:BucketIAMMember": (("role", "role"),),
    "gcp:projects/iAMMember:IAMMember": (("role", "role"),),
    "gcp:projects/iAMCustomRole:IAMCustomRole": (("permissions", "permissions"),),
    "gcp:compute/subnetwork:Subnetwork": (("range", "ipCidrRange"), ("region", "region")),
    "gcp:cloudscheduler/job:Job": (("starts", "httpTarget.uri"), ("as", "httpTarget.oauthToken.serviceAccountEmail"),
                                   ("when", "schedule")),
    "gcp:workflows/workflow:Workflow": (("runs as", "serviceAccount"), ("region", "region")),
    "aws:ec2/instance:Instance": (("type", "instanceType"), ("zone", "availabilityZone"),
                                  ("root", "rootBlockDevice"), ("imds tokens", "metadataOptions.httpTokens"),
                                  ("on shutdown", "instanceInitiatedShutdownBehavior"),
                                  ("market", "instanceMarketOptions.marketType")),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": (
        ("protocol", "ipProtocol"), ("ports", "fromPort"), ("from", "cidrIpv4"), ("from v6", "cidrIpv6"),
        ("from group", "referencedSecurityGroupId")),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": (("protocol", "ipProtocol"), ("to", "cidrIpv4")),
    "aws:ec2/placementGroup:PlacementGroup": (("strategy", "strategy"),),
    "aws:ec2/networkInterface:NetworkInterface": (("interface", "interfaceType"),),
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": (
        ("rules", "rules"),),
    "aws:ec2/subnet:Subnet": (("range", "cidrBlock"), ("zone", "availabilityZone")),
}


def _dig(props: dict[str, Any], path: str) -> Any:
    value: Any = props
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def review(resource: mocks.RecordedResource) -> str:
    """The properties a reviewer cares about, as one line."""
    shown = []
    for label, path in _REVIEW.get(resource.type, ()):
        value = _dig(resource.inputs, path)
        if value is None or value == []:
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        shown.append(f"{label}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}")
    return " ".join(shown)


def render(result: Plan, console: Console) -> None:
    """Print the plan: resources, workers, price, findings."""
    table = Table(title=f"stack {result.stack}: {len(result.resources)} resources ({result.config_file.name})",
                  title_justify="left")
    table.add_column("type", overflow="fold")
    table.add_column("name", overflow="fold")
    table.add_column("what to review", overflow="fold")
    for resource in result.resources:
        table.add_row(escape(resource.type), escape(resource.name), escape(review(resource)))
    console.print(table)
    inv = result.inventory
    hosts = inv["hosts"]
    chips = sum(h["chips"] for h in hosts)
    per_worker = "/".join(str(c) for c in sorted({h["chips"] for h in hosts}))
    console.print(f"workers: {len(hosts)} ({', '.join(h['name'] for h in hosts)}); {per_worker} "
                  f"{'TPU chips' if inv['cloud'] == 'gcp' else 'GPUs'} per worker, {chips} in all; "
                  f"runner {inv['runner']}")
    console.print(f"cost: {inv['price_per_hour_usd']:.2f} USD/hour ({inv['price_source']}); "
                  f"ceiling {result.limits.max_usd_per_hour:g} USD/hour (ernie:maxUsdPerHour); "
                  f"hosts are deleted {inv['ttl_minutes']} minutes after they come up "
                  f"({'a Cloud Scheduler job starts a workflow that deletes the TPU node until it is gone' if inv['cloud'] == 'gcp' else 'instances shut down into termination'})")
    if "ssh_private_key" in inv:
        console.print(f"inventory: SSH private key kept as a Pulumi secret: {result.inventory_is_secret}")
    if result.findings:
        console.print(f"[bold red]guardrail findings: {len(result.findings)}[/]")
        for f in result.findings:
            console.print(f"  [red]{f.rule}[/] {escape(f'{f.resource_type} {f.resource_name}: {f.message}')}")
    else:
        console.print(f"guardrail findings: none ({', '.join(r.name for r in (*RULES, *STACK_RULES))})")
    if result.unseen_layers:
        console.print(f"[bold yellow]serving layers not seen: {len(result.unseen_layers)}[/] (warnings: the rest "
                      "was checked with empty stand-ins; `pulumi up` refuses the stack until they are built)")
        for line in result.unseen_layers:
            console.print(f"  [yellow]{escape(line)}[/]")
    if result.acknowledged:
        console.print(f"[bold yellow]acknowledged by ernie:allowSshFromAnywhere: {len(result.acknowledged)}[/] "
                      "(warnings: they do not fail the check)")
        for f in result.acknowledged:
            console.print(f"  [yellow]{f.rule}[/] {escape(f'{f.resource_type} {f.resource_name}: {f.message}')}")


def run_check(stack: str | None, config_file: Path | None, console: Console) -> int:
    """The `ernie check` command: print the plan; exit status 1 when a guardrail finds something."""
    result = plan(stack, config_file)
    render(result, console)
    return 1 if result.findings else 0
