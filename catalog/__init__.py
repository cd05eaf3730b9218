"""Pure data and contracts shared by the Pulumi program (infra/), the guardrails (policy/) and the driver
(ernie/): accelerator catalogs, prices, CIDR breadth, Lambda runtimes and limits, ernie's own bounds on a stack,
the TPU teardown workflow the program declares and the guardrails compare against, and the user-facing error
type. It imports none of them (tests/unit/test_import_rules.py checks), so each can use it without the others."""
