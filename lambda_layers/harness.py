"""A handler served from its built layers as Lambda serves it: each zip unpacked in order (layers into /opt,
the code into the function's directory), then a fresh `python -I -S` whose sys.path is the standard library,
/opt/python and the function's directory, nothing of this environment's site-packages."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from lambda_layers.built import BuiltFunction

PRELUDE = "import sys\nsys.path[:] = [p for p in sys.path if 'site-packages' not in p] + sys.argv[1:]\n"
"""Run first in the bare interpreter: the two unpacked directories (its arguments) on the standard library's path."""


class Unpacked(NamedTuple):
    """The two directories, in the order the bare interpreter puts them on its path."""

    opt_python: Path
    """Where the layers' python/ landed: /opt/python on Lambda."""
    function: Path
    """The code zip's contents: the function's directory (LAMBDA_TASK_ROOT), the working directory."""


def unpack(built: BuiltFunction, root: Path, *, model_dir: Path | None = None) -> Unpacked:
    """Each layer in order into root/opt, as Lambda extracts them, and the code into root/function.
    `model_dir` (a build script's output) takes the place of the layers a build script writes."""
    for spec, layer in zip(built.spec.layers, built.layers):
        if model_dir is not None and spec.build is not None:
            continue
        with zipfile.ZipFile(layer.archive.path) as z:
            z.extractall(root / "opt")
    if model_dir is not None:
        shutil.copytree(model_dir, root / "opt" / "python", dirs_exist_ok=True)
    with zipfile.ZipFile(built.code.path) as z:
        z.extractall(root / "function")
    return Unpacked(root / "opt" / "python", root / "function")


def command(script: str, unpacked: Unpacked, *, flags: Sequence[str] = (), wrapper: Sequence[str] = ()) -> list[str]:
    """argv of `script` in a bare interpreter over the unpacked directories (`wrapper` first: an emulator)."""
    return [*wrapper, sys.executable, "-I", "-S", *flags, "-c", PRELUDE + script, *map(str, unpacked)]


def run(script: str, unpacked: Unpacked, stdin: str | None = None, *, timeout: float = 300,
        flags: Sequence[str] = (), wrapper: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run `script` as `command` builds it, in the function's directory; its stdin, stdout and stderr as text."""
    return subprocess.run(command(script, unpacked, flags=flags, wrapper=wrapper), input=stdin, capture_output=True,
                          text=True, timeout=timeout, cwd=unpacked.function)
