"""The lent GPU machine's Python, as far as imports go, on this machine (issue 19): put this folder first on
PYTHONPATH and Python loads it at start-up, in every process that inherits the variable.

An import of a distribution outside the allowed lists fails as it would there (ModuleNotFoundError) when our
own code makes it, or a package we carry as a wheel does (its needs travel with it or are in the image). The
image's own packages import what they like: the image is consistent with itself, at versions that may differ
from this machine's, so their imports here say nothing about there.

    ERNIE_GPU_IMAGE_ALLOW    the allowed distributions' canonical names, ','-separated: the image's and the
                             carried wheels' (testing/gpu_packages.py reads the lists)
    ERNIE_GPU_IMAGE_CARRIED  the carried wheels' names, whose packages' own imports are held to the same names
"""

import importlib.abc
import importlib.metadata
import os
import sys

from packaging.utils import canonicalize_name

OURS = "ernie"  # this project, installed here, travels there as the working tree


class _ImageImports(importlib.abc.MetaPathFinder):
    def __init__(self, allowed: set[str], carried: set[str]) -> None:
        self.allowed = allowed
        self.owners = importlib.metadata.packages_distributions()  # top-level module -> distributions
        self.carried_modules = {m for m, ds in self.owners.items() if any(canonicalize_name(d) in carried for d in ds)}

    def _held(self, importer: str) -> bool:
        """Whether the module at `importer` (a file name) is held to the image: ours, or a carried package."""
        if "/site-packages/" in importer:
            top = importer.split("/site-packages/", 1)[1].split("/", 1)[0]
            return top.removesuffix(".py") in self.carried_modules
        if importer.startswith("<frozen") or importer.startswith(sys.base_prefix + "/lib"):
            return False  # the standard library
        return True  # our own code, wherever it was pushed to, or a `python -c`

    def find_spec(self, name, path=None, target=None):
        owners = self.owners.get(name) if "." not in name else None
        if not owners or any(canonicalize_name(d) in self.allowed or d == OURS for d in owners):
            return None
        frame = sys._getframe(1)
        while frame and frame.f_code.co_filename.startswith(("<frozen", os.path.dirname(importlib.__file__))):
            frame = frame.f_back
        if frame and self._held(frame.f_code.co_filename):
            raise ModuleNotFoundError(f"No module named '{name}' (the GPU machine's image lacks {', '.join(owners)})",
                                      name=name)
        return None


if os.environ.get("ERNIE_GPU_IMAGE_ALLOW"):
    sys.meta_path.insert(0, _ImageImports(set(os.environ["ERNIE_GPU_IMAGE_ALLOW"].split(",")),
                                          set(filter(None, os.environ.get("ERNIE_GPU_IMAGE_CARRIED", "").split(",")))))
