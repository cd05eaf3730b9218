"""What a hostile request costs the serving endpoints: deeply nested JSON is a 400 (not a 500), an error
never echoes a request value in full, and the local gateway drops a client that stalls.

Both functions (/predict and /embed) answer through workloads/serving/apigw.py; each is called here as
Lambda calls it, with a payload 2.0 event. The tabular function's schema is the model's shape, given here,
so no model needs building: every request below is refused before a model would be loaded.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ernie.serving.gateway import make_server, to_event
from lambda_layers.spec import SERVING_DIR

sys.path.insert(0, str(SERVING_DIR))
import apigw  # noqa: E402
import embed  # noqa: E402
import handler  # noqa: E402

sys.path.remove(str(SERVING_DIR))

FEATURES = [{"name": "age", "type": "number"}, {"name": "sex", "type": "category", "categories": [1, 2]},
            *({"name": n, "type": "number"} for n in ("bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"))]
VALID = {"age": 50, "sex": 2, "bmi": 25.3, "bp": 94.0, "s1": 180, "s2": 100.2, "s3": 48.0, "s4": 4.0, "s5": 4.6,
         "s6": 91}
MB = 1_000_000
SMALL = 1024  # an error body, in bytes, for a request that is wrong in one value however large


@pytest.fixture(autouse=True)
def _schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handler, "_schema", lambda: {"name": "m", "version": "1", "features": FEATURES})


def event(method: str, path: str, body: str = "") -> dict[str, Any]:
    return to_event(method, path, {"content-type": "application/json"}, body.encode(), "127.0.0.1")


def answer(function: Any, path: str, body: str, method: str = "POST") -> tuple[int, str, str]:
    """Status, the raw body as sent back, and its error message."""
    response = function(event(method, path, body), None)
    return response["statusCode"], response["body"], json.loads(response["body"]).get("error", "")


ENDPOINTS = [pytest.param(handler.handler, "/predict", id="predict"), pytest.param(embed.handler, "/embed", id="embed")]


@pytest.mark.parametrize("function,path", ENDPOINTS)
@pytest.mark.parametrize("body", [
    "[" * 100_000 + "]" * 100_000,
    '{"instances": ' + "[" * 100_000 + "]" * 100_000 + "}",
    '{"instances": [' + '{"a":' * 100_000 + "1" + "}" * 100_000 + "]}",
], ids=["array", "in-instances", "objects"])
def test_deeply_nested_json_is_a_400_naming_the_problem(function: Any, path: str, body: str) -> None:
    status, _, error = answer(function, path, body)
    assert status == 400, error
    assert "nested too deeply" in error


@pytest.mark.parametrize("case,body,names", [
    ("a huge value", {"instances": [{**VALID, "bmi": "x" * MB}]}, "instances[0].bmi must be a finite number"),
    ("a huge category", {"instances": [{**VALID, "sex": "y" * MB}]}, "instances[0].sex is 'yyy"),
    ("a huge field name", {"instances": [{**VALID, "z" * MB: 1}]}, "instances[0] has unknown field 'zzz"),
    ("huge top-level names", {"instances": [VALID], **{f"k{i:06d}" + "q" * 90: 1 for i in range(10_000)}},
     "unknown top-level field(s) ['k000000"),
    ("a huge nested value", {"instances": [{**VALID, "bp": [[["w" * 400]] * 50] * 50}]},
     "instances[0].bp must be a finite number"),
])
def test_a_one_megabyte_bad_request_gets_a_small_error(case: str, body: dict[str, Any], names: str) -> None:
    raw = json.dumps(body)
    assert MB <= len(raw) <= apigw.MAX_BODY_BYTES, "the request is within the body limit: it is read and judged"
    status, sent, error = answer(handler.handler, "/predict", raw)
    assert status == 400, error[:300]
    assert names in error, f"{case}: the message still names the field: {error[:300]}"
    assert len(sent) < SMALL, f"{case}: a {len(raw):,}-byte request got a {len(sent):,}-byte error"


def test_many_bad_instances_get_an_error_bounded_by_the_reported_problems() -> None:
    raw = json.dumps({"instances": [{**VALID, "age": "a" * 90_000} for _ in range(11)]})
    status, sent, error = answer(handler.handler, "/predict", raw)
    assert status == 400 and "instances[9].age" in error and "and 1 more" in error
    assert len(sent) < 2 * SMALL


def test_an_unknown_route_does_not_echo_a_huge_path() -> None:
    status, sent, error = answer(embed.handler, "/" + "p" * 60_000, "", method="GET")
    assert status == 404 and error.startswith("no route for GET /ppp") and "(60001 characters)" in error
    assert len(sent) < SMALL


def test_any_error_message_is_cut_at_the_limit() -> None:
    """A route's own message is bounded too, whatever it quotes."""
    def route(_: apigw.Request) -> tuple[int, Any]:
        raise apigw.HttpError(400, "bad: " + "v" * MB)

    response = apigw.dispatch({("POST", "/x"): route}, event("POST", "/x", "{}"))
    assert response["statusCode"] == 400
    assert len(response["body"]) < apigw.MAX_ERROR_CHARS + 100
    assert json.loads(response["body"])["error"].startswith("bad: vvv")


# --- the local gateway (`ernie serve --local`) and a slow client ---


@pytest.fixture
def gateway() -> Iterator[tuple[str, int]]:
    server = make_server(lambda event, context: {"statusCode": 200, "body": "{}"}, "127.0.0.1", 0, timeout=0.5)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address
    finally:
        server.shutdown()
        server.server_close()


def read_until_closed(conn: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    start, data = time.monotonic(), b""
    conn.settimeout(limit_s)
    try:
        while chunk := conn.recv(4096):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the server still held the connection after {limit_s}s (got {data!r})")
    return data, time.monotonic() - start


def test_a_client_stalled_mid_body_gets_a_408_and_is_dropped(gateway: tuple[str, int]) -> None:
    with socket.create_connection(gateway, timeout=5) as conn:
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b'{"instances": [' * 3)
        data, waited = read_until_closed(conn, limit_s=5)
    assert data.startswith(b"HTTP/1.0 408 ") and b"Request Timeout" in data
    assert 0.3 < waited < 4, f"dropped after {waited:.1f}s with a 0.5s timeout"


def test_a_client_silent_in_its_headers_is_dropped(gateway: tuple[str, int]) -> None:
    with socket.create_connection(gateway, timeout=5) as conn:
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        data, waited = read_until_closed(conn, limit_s=5)
    assert data == b"" and waited < 4


def test_a_client_that_keeps_sending_is_answered(gateway: tuple[str, int]) -> None:
    """The timeout is for silence, not for a whole request: a body sent in pieces still arrives."""
    body = json.dumps({"instances": [VALID]}).encode()
    with socket.create_connection(gateway, timeout=5) as conn:
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        step = len(body) // 4 + 1
        for start in range(0, len(body), step):  # 0.8s in all, well past the timeout, never silent for 0.5s
            time.sleep(0.2)
            conn.sendall(body[start:start + step])
        data, _ = read_until_closed(conn, limit_s=5)
    assert data.startswith(b"HTTP/1.0 200 ")
