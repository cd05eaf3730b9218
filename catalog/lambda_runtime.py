"""AWS Lambda's runtimes, architectures and size limits that ernie's serving stack is built against: the one
place the config validation (infra/config.py), the layer builder (lambda_layers/) and the serving commands read
them from."""

from __future__ import annotations

from typing import Literal, get_args

# AWS Lambda quotas (docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
UNZIPPED_LIMIT = 262_144_000  # function code plus all its layers, unzipped
DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024  # a larger zip must be uploaded through S3
MAX_LAYERS = 5

Arch = Literal["x86_64", "arm64"]
ARCHES: tuple[str, ...] = get_args(Arch)
# glibc of each Lambda Python runtime ernie serves on; it caps the manylinux wheels that load. The serving
# layers' pins (numpy 2.4, pandas 3) publish wheels for glibc 2.34 and later only, so only the AL2023 runtimes
# (python3.12+) are here; python3.9-3.11 run on Amazon Linux 2, glibc 2.26
# (docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html). The one list of supported runtimes.
RUNTIME_GLIBC = {"3.12": (2, 34), "3.13": (2, 34)}
SERVING_PYTHONS: tuple[str, ...] = tuple(RUNTIME_GLIBC)
