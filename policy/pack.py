"""The guardrails as pulumi-policy policies: one per rule in policy/rules.py, each wrapping the same function.

Only `__main__.py` builds the `PolicyPack` (constructing one starts its gRPC server and blocks), so this module
can be imported and its validate functions called directly.
"""

from __future__ import annotations

from collections.abc import Callable

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

# The one edge from policy/ to infra/ (tests/unit/test_import_rules.py names it): the pack reads the running stack's
# ceiling through the program's own config parser, so the guardrail can never read ernie:maxUsdPerHour (or
# accept a config) differently from `pulumi up`. infra.config imports pulumi and catalog only, never the driver.
from infra import config
from policy.rules import RULES, STACK_RULES, Limits, Rule, StackRule

PACK_NAME = "ernie-guardrails"
ENFORCEMENT = EnforcementLevel.MANDATORY
"""A finding stops `pulumi up`, as it fails `ernie check`."""


def stack_limits() -> Limits:
    """The limits in the running stack's own config: the Pulumi CLI hands a policy pack the stack's
    configuration (PULUMI_CONFIG), validated here exactly as the program validates it."""
    return Limits(max_usd_per_hour=config.load().max_usd_per_hour)


def resource_policy(rule: Rule) -> ResourceValidationPolicy:
    """A policy reporting each of the rule's findings on one resource."""

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in rule.check(args.resource_type, args.props):
            report_violation(message, None)

    return ResourceValidationPolicy(rule.name, rule.description, validate, ENFORCEMENT)


def stack_policy(rule: StackRule, limits: Callable[[], Limits] = stack_limits) -> StackValidationPolicy:
    """A policy reporting each of the rule's findings on the whole stack."""

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [(r.resource_type, r.name, r.props) for r in args.resources]
        for message in rule.check(resources, limits()):
            report_violation(message, None)

    return StackValidationPolicy(rule.name, rule.description, validate, ENFORCEMENT)


def build_policies() -> list[Policy]:
    """Every rule of policy/rules.py, in order: resource rules, then stack rules."""
    return [*(resource_policy(rule) for rule in RULES), *(stack_policy(rule) for rule in STACK_RULES)]
