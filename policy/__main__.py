"""ernie's guardrails as a Pulumi policy pack: `pulumi up -s gcp --policy-pack policy`.

Pulumi runs this file with policy/ as the working directory; the repository root goes first on sys.path so
the rules import as `policy`, the catalogs and prices they use as `catalog`, and the stack's config
validation (policy/pack.py) as `infra`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pulumi_policy import PolicyPack  # noqa: E402

from policy.pack import ENFORCEMENT, PACK_NAME, build_policies  # noqa: E402

PolicyPack(PACK_NAME, build_policies(), ENFORCEMENT)
