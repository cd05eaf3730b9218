"""Guardrails over the resources a stack declares: run by `ernie check`, and by the Pulumi policy pack here."""
