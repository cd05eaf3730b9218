"""The serving stack from the driver's side: build its layers, serve its handler locally, call the deployed one.

- `build_layers`: `ernie layers build`, each layer's zipped and unzipped size and the total against Lambda's limit.
- `serve_local`: `ernie serve --local`, the handler behind a local HTTP server that turns each request into an
  API Gateway HTTP API payload 2.0 event and the handler's answer back into HTTP, as the deployed API does.
- `invoke`: `ernie invoke -s aws`, a request to the stack's `serving_url` (or any `--url`).
- `check_from_layers`: the handler run from the built, unpacked layers in a bare interpreter (`ernie demo`).
"""

from __future__ import annotations

import base64
import importlib
import json
import shutil
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from rich.console import Console
from rich.table import Table

from ernie.errors import ErnieError
from ernie.terminal import clean, remote

PROJECT_DIR = Path(__file__).resolve().parents[1]
if str(PROJECT_DIR) not in sys.path:  # lambda_layers/ beside ernie/, for an install made before it existed
    sys.path.insert(0, str(PROJECT_DIR))

from catalog.lambda_runtime import UNZIPPED_LIMIT  # noqa: E402
from lambda_layers import harness, manifest  # noqa: E402
from lambda_layers.build import build_function, run_build_script  # noqa: E402
from lambda_layers.built import BuiltFunction  # noqa: E402
from lambda_layers.spec import DEFAULT_OUT, FUNCTIONS_FILE, load_functions  # noqa: E402
from lambda_layers.target import Target  # noqa: E402

# API Gateway's own payload limit for HTTP APIs.
MAX_REQUEST_BYTES = 10 * 1024 * 1024
# A client that sends nothing for this long is dropped: one stalled mid-body must not hold a thread for ever.
CLIENT_TIMEOUT_S = 30.0
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


# --- ernie layers build ---------------------------------------------------------------------------------


def build_layers(functions: list[str] | None, python_version: str, arch: str, out: Path | None,
                 console: Console) -> None:
    """Build every named function's layers (all by default) for a Lambda runtime, print their sizes, and record
    each in the manifest beside the zips (`<out>/manifest.json`), which the Pulumi program reads."""
    specs = load_functions()
    unknown = sorted(set(functions or ()) - set(specs))
    if unknown:
        raise ErnieError(f"--function {', '.join(unknown)}: not in {FUNCTIONS_FILE.name}; "
                         f"known: {', '.join(specs)}")
    target = Target.lambda_runtime(python_version, arch)
    out = out or DEFAULT_OUT
    for name in functions or list(specs):
        built = build_function(specs[name], target, out, log=lambda m: console.print(m, highlight=False))
        manifest.write([built], out / manifest.MANIFEST_NAME)  # each set as it is built: a later failure keeps it
        console.print(build_table(built))


def build_table(built: BuiltFunction) -> Table:
    table = Table(title=f"{built.spec.name} for {built.target.name}", title_justify="left")
    for column in ("layer", "packages", "zipped", "unzipped", "upload", "bytecode"):
        table.add_column(column, justify="right" if column in ("zipped", "unzipped") else "left")
    for layer in built.layers:
        upload = "S3 (over 50 MiB)" if layer.archive.via_s3 else "direct"
        packages = ", ".join(f"{d.name} {d.version}" for d in layer.distributions if d.version)
        table.add_row(layer.name, packages, _mib(layer.archive.zipped_bytes), _mib(layer.archive.unzipped_bytes),
                      upload, layer.bytecode or "none")
    table.add_row("function", ", ".join(p.name for p in built.spec.code), _mib(built.code.zipped_bytes),
                  _mib(built.code.unzipped_bytes), "direct", "")
    share = built.unzipped_bytes / UNZIPPED_LIMIT
    table.caption = (f"total {_mib(built.unzipped_bytes)} unzipped of Lambda's {_mib(UNZIPPED_LIMIT)} "
                     f"({share:.0%}); zips in {built.code.path.parent}")
    return table


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


# --- ernie serve --local --------------------------------------------------------------------------------


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
        sys.path[:0] = paths
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


# --- ernie invoke ---------------------------------------------------------------------------------------


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


# --- ernie demo -----------------------------------------------------------------------------------------

# Runs in the bare interpreter (lambda_layers.harness): events on stdin, the handler's answers on stdout.
_SMOKE = """
import json
import handler
print(json.dumps([handler.handler(e, None) for e in json.load(sys.stdin)]))
"""


def check_from_layers(console: Console) -> str:
    """Build the tabular layers for this interpreter, unpack them, and serve a few events from them alone."""
    built = build_function(load_functions()["tabular"], Target.host(), log=lambda m: console.print(m, highlight=False))
    instance = {"age": 50, "sex": 2, "bmi": 25.3, "bp": 94.0, "s1": 180, "s2": 100.2, "s3": 48.0, "s4": 4.0,
                "s5": 4.6, "s6": 91}
    requests = [("POST", "/predict", {"instances": [instance, {**instance, "sex": 1}]}),
                ("POST", "/predict", {"instances": [{**instance, "sex": 3}]}), ("GET", "/health", None)]
    events = [to_event(m, p, {"content-type": "application/json"}, json.dumps(b).encode() if b else b"", "127.0.0.1")
              for m, p, b in requests]
    with tempfile.TemporaryDirectory(prefix="ernie-layers-") as tmp:
        unpacked = harness.unpack(built, Path(tmp))
        start = time.monotonic()
        result = harness.run(_SMOKE, unpacked, json.dumps(events))
        seconds = time.monotonic() - start
    if result.returncode != 0:
        raise ErnieError(f"the handler failed from the unpacked layers: {result.stderr.strip().splitlines()[-1:]}")
    predict, refused, health = (from_response(r) for r in json.loads(result.stdout))
    if predict[0] != 200 or refused[0] != 400 or health[0] != 200:
        raise ErnieError(f"unexpected answers from the layers: {predict[0]}, {refused[0]}, {health[0]}")
    predictions = json.loads(predict[2])["predictions"]
    return (f"{len(predictions)} predictions ({', '.join(f'{p:.1f}' for p in predictions)}) and a 400 for an unknown "
            f"category from layers of {_mib(built.unzipped_bytes)} (limit {_mib(UNZIPPED_LIMIT)}), "
            f"cold start and 3 requests in {seconds:.1f} s")
