"""Guardrails over the resources a stack declares: run by `ernie check`, and later by a Pulumi policy pack."""
