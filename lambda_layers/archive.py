"""Reproducible zips: an unchanged layer hashes the same and is not republished."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from catalog.lambda_runtime import DIRECT_UPLOAD_LIMIT

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Archive:
    """A deterministic zip and what Lambda counts of it."""

    path: Path
    sha256: str
    zipped_bytes: int
    unzipped_bytes: int

    @property
    def source_code_hash(self) -> str:
        """base64 SHA-256, the form Lambda's `source_code_hash` compares."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode()

    @property
    def via_s3(self) -> bool:
        """Over the direct-upload limit: it must be uploaded to S3 and referenced from there."""
        return self.zipped_bytes > DIRECT_UPLOAD_LIMIT


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:  # this tool imports no ernie, so not ernie.remote.collect.sha256_file
        return hashlib.file_digest(f, "sha256").hexdigest()


def files(root: Path) -> list[Path]:
    """Every file under root, sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def write_zip(members: Iterable[tuple[str, Path]], dest: Path) -> Archive:
    """A reproducible zip: members sorted, fixed timestamps and permissions, no directory entries."""
    unzipped = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name, path in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.create_system = 3  # unix, so external_attr carries the permissions
            executable = path.stat().st_mode & 0o111
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = path.read_bytes()
            unzipped += len(data)
            archive.writestr(info, data, compresslevel=6)
    return Archive(dest, sha256_file(dest), dest.stat().st_size, unzipped)
