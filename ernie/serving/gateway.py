"""`ernie serve --local`: the handler behind a local HTTP server that turns each request into an API Gateway HTTP
API payload 2.0 event (`to_event`, the one builder of such events; tests and benchmarks use it too) and the
handler's answer back into HTTP (`from_response`), as the deployed API does."""

from __future__ import annotations

import base64
import importlib
import json
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from ernie.errors import ErnieError
from lambda_layers.build import run_build_script
from lambda_layers.spec import FUNCTIONS_FILE, load_functions

if TYPE_CHECKING:
    from rich.console import Console

# API Gateway's own payload limit for HTTP APIs.
MAX_REQUEST_BYTES = 10 * 1024 * 1024
# A client that sends nothing for this long is dropped: one stalled mid-body must not hold a thread for ever.
CLIENT_TIMEOUT_S = 30.0
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def to_event(method: str, target: str, headers: Mapping[str, str], body: bytes, source_ip: str) -> dict[str, Any]:
    """The payload 2.0 event API Gateway would send for this request (`$default` route and stage)."""
    parts = urlsplit(target)
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        text, is_base64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, is_base64 = base64.b64encode(body).decode(), True
    now = time.time()
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):  # percent-decoded, as API Gateway sends
        query[key] = f"{query[key]},{value}" if key in query else value  # payload 2.0 joins a repeated key with commas
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.path or "/",
        "rawQueryString": parts.query,
        "headers": lowered,
        **({"queryStringParameters": query} if query else {}),
        "requestContext": {
            "accountId": "local", "apiId": "local", "domainName": lowered.get("host", "localhost"),
            "http": {"method": method, "path": parts.path or "/", "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": lowered.get("user-agent", "")},
            "requestId": str(uuid.uuid4()), "routeKey": "$default", "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)), "timeEpoch": int(now * 1000),
        },
        **({"body": text, "isBase64Encoded": is_base64} if body else {"isBase64Encoded": False}),
    }


def from_response(result: Any) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a handler's answer, read as API Gateway reads payload 2.0 responses."""
    if not isinstance(result, dict) or "statusCode" not in result:
        # A bare value: API Gateway answers 200 with it as JSON.
        return 200, {"content-type": "application/json"}, json.dumps(result).encode()
    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    return int(result["statusCode"]), {k.lower(): str(v) for k, v in (result.get("headers") or {}).items()}, data


def make_server(handler: Handler, host: str, port: int, timeout: float = CLIENT_TIMEOUT_S) -> ThreadingHTTPServer:
    """An HTTP server that answers every request through `handler`, as the deployed HTTP API would.

    Every read and write on a connection waits at most `timeout` seconds; a client silent for longer mid-body
    gets a 408 and is closed, and one silent in its headers is closed (http.server logs it).
    """

    class Gateway(BaseHTTPRequestHandler):
        server_version = "ernie-local-apigw"

        def _answer(self) -> None:
            declared = (self.headers.get("content-length") or "0").strip()
            if not (declared.isascii() and declared.isdigit()):  # negative or not a number: no body to read
                self._refuse(400, b'{"message":"Bad Request: Content-Length must be a non-negative integer"}')
                return
            length = int(declared)
            if length > MAX_REQUEST_BYTES:
                self._refuse(413, b'{"message":"Request Entity Too Large"}')
                return
            try:
                body = self.rfile.read(length) if length else b""
            except TimeoutError:
                self._refuse(408, b'{"message":"Request Timeout: the body stopped arriving"}')
                return
            event = to_event(self.command, self.path, dict(self.headers.items()), body, self.client_address[0])
            try:
                status, headers, data = from_response(handler(event, None))
            except Exception:  # noqa: BLE001 - API Gateway's answer to a failed invocation, and the log has the rest
                self.log_error("handler raised:\n%s", traceback.format_exc())
                status, headers, data = 500, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}'
            self._send(status, headers, data)

        def _refuse(self, status: int, message: bytes) -> None:
            """Answer without reading the body, then close: what is left of it must not be read as a request."""
            self.close_connection = True
            self._send(status, {"content-type": "application/json", "connection": "close"}, message)

        def _send(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer

    Gateway.timeout = timeout  # socketserver sets it on each connection's socket
    return ThreadingHTTPServer((host, port), Gateway)


@contextmanager
def local_handler(function: str = "tabular") -> Iterator[Handler]:
    """The function's handler imported from a copy of its code, its model layers built by their scripts.

    The packages the pip layers would hold come from this environment (the same pins; `ernie layers build`
    checks them); the code is copied so the source tree's model template cannot shadow the built model.
    """
    specs = load_functions()
    if function not in specs:
        raise ErnieError(f"--function {function}: not in {FUNCTIONS_FILE.name}; known: {', '.join(specs)}")
    spec = specs[function]
    module_name, attribute = spec.handler.rsplit(".", 1)
    with tempfile.TemporaryDirectory(prefix=f"ernie-serve-{function}-") as tmp:
        root = Path(tmp)
        (root / "function").mkdir()
        for path in spec.code:
            shutil.copy2(path, root / "function" / path.name)
        paths = [str(root / "function")]
        for layer in spec.layers:
            if layer.build is not None:
                run_build_script(layer, root / layer.name)
                paths.append(str(root / layer.name))
        sys.path[:0] = paths  # the handler imports by bare name, as Lambda's /var/task and /opt/python give it
        try:
            yield getattr(importlib.import_module(module_name), attribute)
        finally:
            del sys.path[: len(paths)]


def serve_local(function: str, host: str, port: int, console: Console) -> None:
    """Serve until interrupted."""
    with local_handler(function) as handler:
        server = make_server(handler, host, port)
        url = f"http://{host}:{server.server_address[1]}"
        console.print(f"serving {function} at {url} (payload format 2.0); try: "
                      f"ernie invoke --url {url} /health", highlight=False, soft_wrap=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
