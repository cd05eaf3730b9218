"""Pure data and contracts shared by the Pulumi program (infra/), the guardrails (policy/) and the driver
(ernie/): accelerator catalogs, prices, CIDR breadth, Lambda runtimes and limits. It imports none of them
(tests/test_import_rules.py checks), so each can use it without pulling in the others."""
