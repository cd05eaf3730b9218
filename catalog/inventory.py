"""The inventory's vocabulary, shared by its producer (infra/inventory.py) and its consumer (ernie/inventory.py);
the whole contract is docs/inventory.md."""

from __future__ import annotations

from typing import Literal, get_args

Runner = Literal["tpu-vm", "docker", "local"]
"""How a run starts the workload on each host: on the TPU VM itself, in a container, or on this machine."""
RUNNERS: tuple[str, ...] = get_args(Runner)
