"""API Gateway HTTP API (payload format 2.0) plumbing shared by the serving handlers.

A handler is a route table, `{(method, path): function(request) -> (status, body)}`, passed to `dispatch`.
A route raises `HttpError` for anything the caller got wrong; the caller then gets that status and a JSON
`{"error": message}`. Anything else is a fault of ours: logged with its traceback, answered with a bare
500 that carries the request id and never the traceback. A message quotes request values through `echo`
(cut short), and is itself cut at MAX_ERROR_CHARS: a 1 MB request never comes back as a 1 MB error.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

JSON_HEADERS = {"content-type": "application/json"}
# Lambda's synchronous payload limit is 6 MB; refuse well before it, with a message rather than a 413 from AWS.
MAX_BODY_BYTES = 1024 * 1024
# Enough of a request value to recognise it in an error message; the caller has the rest.
ECHO_CHARS = 60
# A whole error message: room for every problem a handler reports, never a copy of the request.
MAX_ERROR_CHARS = 4096

_echo = reprlib.Repr()  # attributes rather than keyword arguments: Python 3.11 has no Repr(**limits)
_echo.maxstring = _echo.maxother = _echo.maxlong = ECHO_CHARS
_echo.maxlevel = 3  # also bounds the work: a deeply nested value is not walked to its bottom


def echo(value: Any) -> str:
    """`repr(value)` for an error message, cut short: each string and number, the nesting, and the whole."""
    shown = _echo.repr(value)
    return shown if len(shown) <= 2 * ECHO_CHARS else shown[:2 * ECHO_CHARS] + "..."


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """`text` as it is when short, else its first `limit` characters and how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class HttpError(Exception):
    """A request the caller can fix: answered with `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Request:
    """The parts of a payload 2.0 event a route needs."""

    method: str
    path: str
    body: bytes
    request_id: str

    def json(self) -> Any:
        """The body parsed as strict JSON (no NaN/Infinity); 400 when it is not, 413 when it is too large."""
        if len(self.body) > MAX_BODY_BYTES:
            raise HttpError(413, f"request body is {len(self.body)} bytes; the limit is {MAX_BODY_BYTES}")
        if not self.body.strip():
            raise HttpError(400, "request body is empty; send a JSON object")
        try:
            return json.loads(self.body, parse_constant=_refuse_constant)
        except UnicodeDecodeError:
            raise HttpError(400, "request body is not UTF-8 text") from None
        except RecursionError:  # the parser recurses per level: thousands of "[" are the caller's error
            raise HttpError(400, 'request body is JSON nested too deeply to parse; send {"instances": [...]} '
                                 "of flat values") from None
        except ValueError as exc:  # json.JSONDecodeError is a ValueError, and so is _refuse_constant's
            raise HttpError(400, f"malformed JSON: {exc}") from None


Route = Callable[[Request], tuple[int, Any]]


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A payload 2.0 response with a JSON body."""
    return {
        "statusCode": status,
        "headers": {**JSON_HEADERS, **(headers or {})},
        "body": json.dumps(body, allow_nan=False),
        "isBase64Encoded": False,
    }


def parse_event(event: Any) -> Request:
    """Method, path and body of a payload 2.0 event; 400 for anything that is not one."""
    try:
        http = event["requestContext"]["http"]
        method, path = str(http["method"]).upper(), str(event.get("rawPath") or http["path"])
        request_id = str(event["requestContext"].get("requestId", ""))
    except (KeyError, TypeError, AttributeError):
        raise HttpError(400, "not an API Gateway HTTP API payload 2.0 event (requestContext.http is missing)") from None
    raw = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise HttpError(400, "isBase64Encoded is true but the body is not valid base64") from None
    else:
        body = raw.encode() if isinstance(raw, str) else bytes(raw)
    return Request(method=method, path=path.rstrip("/") or "/", body=body, request_id=request_id)


def dispatch(routes: Mapping[tuple[str, str], Route], event: Any) -> dict[str, Any]:
    """Answer one event from the route table: 404/405 for unknown routes, never a traceback in a response."""
    request_id = ""
    try:
        request = parse_event(event)
        request_id = request.request_id
        route = routes.get((request.method, request.path))
        if route is None:
            allowed = sorted(method for method, path in routes if path == request.path)
            asked, on = clip(request.method), clip(request.path)  # the caller's: quoted, never in full
            if allowed:
                raise HttpError(405, f"{asked} is not allowed on {on}; use {', '.join(allowed)}",
                                {"allow": ", ".join(allowed)})
            known = ", ".join(f"{method} {path}" for method, path in sorted(routes, key=lambda r: (r[1], r[0])))
            raise HttpError(404, f"no route for {asked} {on}; routes: {known}")
        status, body = route(request)
        return response(status, body)
    except HttpError as exc:
        return response(exc.status, {"error": clip(exc.message, MAX_ERROR_CHARS)}, exc.headers)
    except Exception:
        logger.exception("unhandled error serving request %s", request_id or "<unknown>")
        return response(500, {"error": "internal error", "request_id": request_id})


def instances_of(payload: Any, *, example: str, each: str, noun: str, limit: int, hint: str = "") -> list[Any]:
    """The "instances" list of a request body in the TF Serving / KServe v1 shape, checked for shape and size;
    HttpError 400 or 413 saying what the body should be. `example` shows the list, `each` says what it holds."""
    if not isinstance(payload, dict):
        raise HttpError(400, f'the body must be a JSON object {{"instances": {example}}}')
    extra = sorted(set(payload) - {"instances"})
    if extra:
        raise HttpError(400, f'unknown top-level field(s) {echo(extra)}; the body is {{"instances": {example}}}')
    items = payload.get("instances")
    if not isinstance(items, list):
        raise HttpError(400, f'the body needs "instances": {each}')
    if not items:
        raise HttpError(400, f'"instances" is empty; send at least one {noun}')
    if len(items) > limit:
        raise HttpError(413, f'"instances" holds {len(items)} {noun}s; the limit is {limit} per request{hint}')
    return items


def is_number(value: Any) -> bool:
    """A JSON number that a model can take: int or float, finite as a float, and not a boolean."""
    if type(value) not in (int, float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (JSON allows 10**400): no model takes it
        return False
