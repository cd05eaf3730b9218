"""The lent GPU machine's Python packages (issue 19): its image's (benchmarks/gpu/image-packages.txt) and the
wheels that travel to it (benchmarks/gpu/h200-wheels.txt), read once for the tests, and the environment that
holds a process's imports to them (testing/gpu_image/sitecustomize.py)."""

from __future__ import annotations

import os
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from lambda_layers.spec import read_requirements

REPO = Path(__file__).resolve().parents[1]
GPU = REPO / "benchmarks" / "gpu"
IMAGE = GPU / "image-packages.txt"
CARRIED = GPU / "h200-wheels.txt"


def listed(path: Path) -> dict[str, Requirement]:
    """Canonical name -> requirement, for a list that names each package once (two stop pip's whole install)."""
    requirements = [Requirement(line) for line in read_requirements(path)]
    names = [canonicalize_name(r.name) for r in requirements]
    repeated = sorted({n for n in names if names.count(n) > 1})
    assert not repeated, f"{path.name} names {repeated} more than once: pip stops the whole install"
    return dict(zip(names, requirements))


def the_gpu_machine_s_imports() -> dict[str, str]:
    """This process's environment, with testing/gpu_image/ first on PYTHONPATH and its lists of names."""
    carried = listed(CARRIED)
    path = [str(REPO / "testing" / "gpu_image"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path),
            "ERNIE_GPU_IMAGE_ALLOW": ",".join(sorted({*listed(IMAGE), *carried})),
            "ERNIE_GPU_IMAGE_CARRIED": ",".join(sorted(carried))}
