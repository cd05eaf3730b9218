"""Can this torch_xla run fairseq 0.12's `--tpu` path? Checked before a TPU run starts, not hours in.

fairseq 0.12.x (2022) was written against torch_xla's XRT runtime. Its TPU path calls
`torch_xla.core.xla_model.xrt_world_size()` and `get_ordinal()` (distributed/utils.py, trainer.py)
and starts one process per core with `xmp.spawn(nprocs=min(world_size, 8))`. Current torch_xla
(2.9.0, the newest on PyPI, which needs torch 2.9.0) runs on PJRT only: both functions are gone from
xla_model (their successors are torch_xla.runtime.world_size() / global_ordinal()), and its
xmp.spawn raises ValueError for any nprocs but 1 or None. So fairseq's `--tpu` cannot run there
without patching fairseq, and this workload says so instead of pretending.
"""

from __future__ import annotations

import importlib
import importlib.metadata

FAIRSEQ_NEEDS = ("xrt_world_size", "get_ordinal", "get_local_ordinal", "rendezvous", "mark_step", "xla_device")


def unsupported_reason() -> str | None:
    """Why fairseq's --tpu path cannot run with the installed torch_xla, or None when it can."""
    try:
        xm = importlib.import_module("torch_xla.core.xla_model")
    except ImportError as err:
        return f"torch_xla is not installed ({err}): install torch-xla[tpu] matching torch on the TPU VM"
    version = importlib.metadata.version("torch-xla")
    missing = [name for name in FAIRSEQ_NEEDS if not hasattr(xm, name)]
    # An older torch_xla that still has them may yet refuse fairseq's xmp.spawn(nprocs=8) under PJRT;
    # that needs a TPU to find out, so such a run is let through to succeed or fail on its own.
    if missing:
        return (f"torch_xla {version} lacks xla_model.{', xla_model.'.join(missing)}, which fairseq 0.12's --tpu "
                "path calls (removed with the XRT runtime); fairseq on TPU needs a patched fairseq")
    return None
