"""Cloud resource names derived from a Pulumi stack name, valid for each service whatever the stack is called.

Pulumi allows letters, digits, `-`, `_` and `.` in a stack name (up to 100 characters); the clouds allow less:
a TPU node name and a GCP network tag match `[a-z]([-a-z0-9]*[a-z0-9])?` (at most 63), a service account id
the same in 6 to 30, a GCP label value lowercase letters, digits, `-` and `_` (at most 63), a Lambda function
name `[A-Za-z0-9-_]` (at most 64) and a layer name the same (at most 140). S3 and GCS bucket names are left to
Pulumi's auto-naming (a resource name plus a random suffix), which is valid for every stack.

A stack name a service takes as it is keeps its readable name; any other (a character mapped, the case
lowered, the name cut) gets a digest of the original stack name appended, so `dev_2` and `dev-2` never share
a name.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "ernie"
TPU_NODE_MAX = 63
SERVICE_ACCOUNT_MAX = 30
LABEL_MAX = 63
LAMBDA_FUNCTION_MAX = 64
_DIGEST_CHARS = 6


def _digest(stack: str) -> str:
    return hashlib.sha256(stack.encode()).hexdigest()[:_DIGEST_CHARS]


def _fit(readable: str, unchanged: bool, stack: str, max_len: int, sep: str, trim: str) -> str:
    """`readable` when the stack went into it unchanged and it fits; else cut to make room for sep+digest."""
    if unchanged and len(readable) <= max_len:
        return readable
    suffix = f"{sep}{_digest(stack)}"
    return readable[:max_len - len(suffix)].rstrip(trim) + suffix


def gcp_name(text: str, suffix: str = "", max_len: int = TPU_NODE_MAX) -> str:
    """`text[-suffix]` as a GCP resource name: a TPU node, a network tag, a service account id (max_len 30)."""
    clean = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not clean[:1].isalpha():
        clean = f"{PREFIX}-{clean}".rstrip("-")
    tail = f"-{suffix}" if suffix else ""
    return _fit(clean, clean == text, text, max_len - len(tail), "-", "-") + tail


def tpu_node_name(stack: str) -> str:
    """The stack's TPU node: also the name its teardown job deletes and its firewall rules' target tag."""
    return gcp_name(f"{PREFIX}-{stack}")


def gcp_label(stack: str) -> str:
    """The `ernie-stack` label value (lowercase letters, digits, - and _; at most 63)."""
    clean = re.sub(r"[^a-z0-9_-]+", "-", stack.lower())
    return _fit(clean, clean == stack, stack, LABEL_MAX, "-", "-_")


def lambda_stack_part(stack: str) -> str:
    """The stack as it appears in Lambda function and layer names: letters, digits and `_` only, so the names'
    dashes separate `ernie`, the stack and the rest (the sweep parses layer names that way)."""
    clean = re.sub(r"[^A-Za-z0-9_]+", "_", stack)
    # Room for `ernie-`, `-` and a function name of up to 20 within Lambda's 64.
    return _fit(clean, clean == stack, stack, LAMBDA_FUNCTION_MAX - 2 * len(PREFIX) - 18, "_", "_")


def lambda_function_name(stack: str, function: str) -> str:
    """`ernie-<stack>-<function>`, within Lambda's 64 characters of `[A-Za-z0-9-_]`."""
    name = f"{PREFIX}-{lambda_stack_part(stack)}-{function}"
    if len(name) > LAMBDA_FUNCTION_MAX or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"Lambda function name {name!r}: function {function!r} must be letters, digits, - and _, "
                         f"short enough for {LAMBDA_FUNCTION_MAX} characters in all")
    return name
