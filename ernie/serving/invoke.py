"""`ernie invoke`: one request to the stack's `serving_url` (or any `--url`), and its answer printed safely."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console

from ernie.errors import ErnieError
from ernie.terminal import clean, remote


def invoke(url: str, path: str, data: str | None, timeout: float = 35.0) -> tuple[int, Any]:
    """One request to a deployed (or local) endpoint: POST with a JSON body when `data` is given, else GET."""
    if data is not None:
        try:
            json.loads(data)
        except ValueError as exc:
            raise ErnieError(f"--data is not JSON ({exc}); pass a JSON document or @FILE") from None
    request = urllib.request.Request(
        url.rstrip("/") + "/" + path.lstrip("/"), data=data.encode() if data is not None else None,
        method="POST" if data is not None else "GET", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:  # a 4xx/5xx still carries the endpoint's own message
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise ErnieError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def read_data(data: str | None) -> str | None:
    """`--data`: inline JSON, or @FILE."""
    if data is None or not data.startswith("@"):
        return data
    path = Path(data[1:])
    if not path.is_file():
        raise ErnieError(f"--data {data}: no such file")
    return path.read_text()


def serving_url(stack: str | None, inventory: Path | None, url: str | None) -> str:
    """The endpoint: `--url`, or the `serving_url` of a stack's (or an inventory file's) inventory."""
    if url is not None:
        if stack or inventory:
            raise ErnieError("choose the endpoint with one of -s STACK, --inventory FILE or --url URL")
        return url
    from ernie.inventory import resolve_inventory

    found = resolve_inventory(stack, inventory, False)
    if not found.serving_url:
        raise ErnieError(f"the inventory of {stack or inventory} has no serving_url: set `ernie:serving: true` "
                         "on the aws stack and run `pulumi up -s aws`")
    return found.serving_url


def print_answer(status: int, body: Any, console: Console) -> int:
    """Print the answer; exit status 0 for 2xx, 1 otherwise."""
    console.print(f"HTTP {status}", style="green" if 200 <= status < 300 else "red", highlight=False)
    # The endpoint's words: printed as text, never markup, without escape sequences.
    if isinstance(body, str):
        console.print(remote(body), highlight=False)
    else:  # json.dumps escapes C0 controls; clean drops the C1 and bidi ones it leaves as they are
        console.print_json(clean(json.dumps(body, ensure_ascii=False)))
    return 0 if 200 <= status < 300 else 1
