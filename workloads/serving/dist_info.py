"""The dist-info a model layer's package carries, so the layer builder (and importlib.metadata) see the model
as a distribution that names the runtime versions it needs. Shared by train_model.py and export_onnx.py."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from pathlib import Path


def write_dist_info(out: Path, package: str, version: str, summary: str, requires: Mapping[str, str]) -> None:
    """Write `package`-`version`.dist-info in `out`: METADATA with `requires` (name -> specifier, e.g.
    "==1.9.1"), top_level.txt, and a RECORD hashing every file under `out`."""
    dist_info = out / f"{package}-{version}.dist-info"
    dist_info.mkdir()
    lines = "".join(f"Requires-Dist: {name}{spec}\n" for name, spec in requires.items())
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {package.replace('_', '-')}\nVersion: {version}\nSummary: {summary}\n{lines}"
    )
    (dist_info / "top_level.txt").write_text(f"{package}\n")
    rows = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        with path.open("rb") as f:
            digest = base64.urlsafe_b64encode(hashlib.file_digest(f, "sha256").digest()).rstrip(b"=").decode()
        rows.append(f"{path.relative_to(out).as_posix()},sha256={digest},{path.stat().st_size}\n")
    rows.append(f"{dist_info.name}/RECORD,,\n")
    (dist_info / "RECORD").write_text("".join(rows))
