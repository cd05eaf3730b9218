"""The serving handler run from the built layers alone, as Lambda runs it.

The tabular layers are built for this interpreter and unpacked; a fresh `python -I -S` process whose
sys.path is the standard library, the unpacked layers (Lambda's /opt/python) and the function's own zip
imports the handler and answers real payload 2.0 events. Nothing comes from the test's site-packages, so
a layer that misses a module (or a dist-info a package reads) fails here.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pytest

from ernie.serving.gateway import to_event
from lambda_layers import harness, manifest
from lambda_layers.build import build_function
from lambda_layers.harness import Unpacked
from lambda_layers.spec import SERVING_DIR, load_functions
from lambda_layers.target import Target

SERVING = Path(SERVING_DIR)
VALID = {"age": 50, "sex": 2, "bmi": 25.3, "bp": 94.0, "s1": 180, "s2": 100.2, "s3": 48.0, "s4": 4.0, "s5": 4.6, "s6": 91}

# Runs inside the bare interpreter (lambda_layers.harness): events on stdin (one JSON list), responses on stdout.
DRIVER = """
import json
import handler, numpy, sklearn, importlib.metadata
events = json.load(sys.stdin)
responses = [handler.handler(event, None) for event in events]
print(json.dumps({"responses": responses, "sys_path": sys.path, "numpy": numpy.__file__,
                  "sklearn_version": importlib.metadata.version("scikit-learn")}))
"""


@pytest.fixture(scope="module")
def lambda_dirs(tmp_path_factory: pytest.TempPathFactory) -> Unpacked:
    """(/opt/python, function dir) unpacked from freshly built (or cached) zips."""
    built = build_function(load_functions()["tabular"], Target.host(), tmp_path_factory.mktemp("out"))
    return harness.unpack(built, tmp_path_factory.mktemp("lambda"))


def event(method: str, path: str, body: Any = None, *, raw: str | None = None, b64: bool = False) -> dict[str, Any]:
    """The payload 2.0 event for a JSON request (`ernie serve --local`'s builder); b64: its body base64-encoded,
    as API Gateway sends a body it takes for binary."""
    text = raw if raw is not None else ("" if body is None else json.dumps(body))
    sent = to_event(method, path, {"content-type": "application/json"}, text.encode(), "127.0.0.1")
    if b64 and text:
        sent.update(body=base64.b64encode(text.encode()).decode(), isBase64Encoded=True)
    return sent


def serve(dirs: Unpacked, events: list[dict[str, Any]]) -> dict[str, Any]:
    result = harness.run(DRIVER, dirs, json.dumps(events))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def response_of(served: dict[str, Any], index: int) -> tuple[int, Any]:
    response = served["responses"][index]
    assert response["headers"]["content-type"] == "application/json"
    return response["statusCode"], json.loads(response["body"])


BAD_REQUESTS = [
    ("malformed JSON", event("POST", "/predict", raw='{"instances": [{'), 400, "malformed JSON"),
    ("NaN", event("POST", "/predict", raw='{"instances": [{"age": NaN}]}'), 400, "NaN is not valid JSON"),
    ("empty body", event("POST", "/predict", raw=""), 400, "request body is empty"),
    ("not an object", event("POST", "/predict", [VALID]), 400, 'the body must be a JSON object {"instances"'),
    ("no instances", event("POST", "/predict", {"inputs": [VALID]}), 400, "unknown top-level field(s) ['inputs']"),
    ("instances not a list", event("POST", "/predict", {"instances": VALID}), 400, '"instances": a list of objects'),
    ("empty batch", event("POST", "/predict", {"instances": []}), 400, '"instances" is empty'),
    ("oversized batch", event("POST", "/predict", {"instances": [VALID] * 1001}), 413, "holds 1001 instances; the limit is 1000"),
    ("oversized body", event("POST", "/predict", raw=" " * (1024 * 1024 + 1)), 413, "the limit is 1048576"),
    ("missing field", event("POST", "/predict", {"instances": [{k: v for k, v in VALID.items() if k != "bmi"}]}),
     400, "instances[0] is missing field 'bmi'"),
    ("extra field", event("POST", "/predict", {"instances": [VALID, {**VALID, "smoker": True}]}),
     400, "instances[1] has unknown field 'smoker'"),
    ("wrong type", event("POST", "/predict", {"instances": [{**VALID, "age": "fifty"}]}),
     400, "instances[0].age must be a finite number, got 'fifty'"),
    ("integer beyond a float", event("POST", "/predict", {"instances": [{**VALID, "age": 10**400}]}),
     400, "instances[0].age must be a finite number"),
    ("boolean as number", event("POST", "/predict", {"instances": [{**VALID, "bp": True}]}), 400, "instances[0].bp must be a finite number"),
    ("unknown category", event("POST", "/predict", {"instances": [{**VALID, "sex": 3}]}),
     400, "instances[0].sex is 3, not one of the categories [1, 2]"),
    ("category of the wrong type", event("POST", "/predict", {"instances": [{**VALID, "sex": "2"}]}),
     400, "instances[0].sex is '2', not one of the categories"),
    ("instance not an object", event("POST", "/predict", {"instances": [[1, 2]]}), 400, "instances[0] must be an object"),
    ("bad base64", {**event("POST", "/predict", raw="%%%"), "isBase64Encoded": True}, 400, "not valid base64"),
    ("unknown route", event("GET", "/nope"), 404, "no route for GET /nope"),
    ("wrong method", event("GET", "/predict"), 405, "GET is not allowed on /predict; use POST"),
    ("not a payload 2.0 event", {"httpMethod": "GET", "path": "/health"}, 400, "not an API Gateway HTTP API payload 2.0 event"),
]


INSTANCES = [VALID, {**VALID, "sex": 1, "bmi": 31.0}, {**VALID, "age": 20.5}]
GOOD_REQUESTS = [
    event("POST", "/predict", {"instances": INSTANCES}),
    event("GET", "/health"),
    event("GET", "/schema"),
    event("POST", "/predict/", {"instances": [VALID]}, b64=True),
]


@pytest.fixture(scope="module")
def served(lambda_dirs: Unpacked) -> dict[str, Any]:
    """Every event of this module answered by one fresh interpreter (each start imports the whole stack)."""
    return serve(lambda_dirs, GOOD_REQUESTS + [e for _, e, _, _ in BAD_REQUESTS])


def test_predictions_from_the_layers_alone(lambda_dirs: Unpacked, served: dict[str, Any]) -> None:
    opt, _ = lambda_dirs
    assert not [p for p in served["sys_path"] if "site-packages" in p]
    assert served["numpy"].startswith(str(opt)), "numpy must come from the layers"
    predict, health = served["responses"][:2]
    assert predict["statusCode"] == 200, predict["body"]
    predictions = json.loads(predict["body"])["predictions"]
    # The same pickle, loaded here, gives the same numbers: the layers run the real model.
    pipeline = pickle.loads((opt / "tabular_model" / "model.pkl").read_bytes())
    expected = pipeline.predict(pd.DataFrame.from_records(INSTANCES, columns=list(VALID)))
    assert predictions == pytest.approx(list(expected), rel=1e-9)
    assert len(set(predictions)) == 3
    assert json.loads(health["body"]) == {"status": "ok", "model": "diabetes-progression", "version": "1.0.0"}
    assert served["sklearn_version"] == json.loads((opt / "tabular_model" / "schema.json").read_text())["versions"]["scikit-learn"]


def test_schema_is_json_schema_of_one_instance(served: dict[str, Any]) -> None:
    status, schema = response_of(served, 2)
    assert status == 200
    assert schema["additionalProperties"] is False and set(schema["required"]) == set(VALID)
    assert schema["properties"]["sex"] == {"enum": [1, 2]} and schema["properties"]["bmi"] == {"type": "number"}
    jsonschema.validate(VALID, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**VALID, "sex": 3}, schema)


def test_bad_requests_get_4xx_naming_the_problem(served: dict[str, Any]) -> None:
    assert len(served["responses"]) == len(GOOD_REQUESTS) + len(BAD_REQUESTS)
    for index, (case, _, status, fragment) in enumerate(BAD_REQUESTS, len(GOOD_REQUESTS)):
        got_status, body = response_of(served, index)
        assert got_status == status, f"{case}: {got_status} {body}"
        assert fragment in body["error"], f"{case}: {body['error']}"
        assert "Traceback" not in body["error"] and 'File "' not in body["error"], case


def test_base64_body_and_trailing_slash(served: dict[str, Any]) -> None:
    status, body = response_of(served, 3)
    assert status == 200 and len(body["predictions"]) == 1


def test_a_fault_of_ours_is_a_bare_500(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(SERVING))
    import apigw

    def broken(_: apigw.Request) -> tuple[int, Any]:
        raise RuntimeError("secret internals /opt/python/x.py")

    sent = event("GET", "/x")
    response = apigw.dispatch({("GET", "/x"): broken}, sent)
    assert response["statusCode"] == 500
    request_id = sent["requestContext"]["requestId"]
    assert json.loads(response["body"]) == {"error": "internal error", "request_id": request_id}


def test_local_gateway_round_trip() -> None:
    """`ernie serve --local` speaks payload 2.0 both ways: the event API Gateway sends, the answer it reads."""
    from ernie.serving.gateway import from_response

    event = to_event("POST", "/predict?debug=1", {"Content-Type": "application/json", "Host": "h"}, b'{"a": 1}',
                     "127.0.0.1")
    assert event["version"] == "2.0" and event["rawPath"] == "/predict" and event["rawQueryString"] == "debug=1"
    assert event["requestContext"]["http"]["method"] == "POST" and event["headers"]["content-type"] == "application/json"
    assert (event["body"], event["isBase64Encoded"]) == ('{"a": 1}', False)
    binary = to_event("POST", "/x", {}, b"\xff\x00", "127.0.0.1")
    assert binary["isBase64Encoded"] and base64.b64decode(binary["body"]) == b"\xff\x00"
    assert from_response({"statusCode": 400, "headers": {"Content-Type": "application/json"}, "body": '{"e": 1}'}) == \
        (400, {"content-type": "application/json"}, b'{"e": 1}')
    assert from_response({"ok": True}) == (200, {"content-type": "application/json"}, b'{"ok": true}')



@pytest.mark.parametrize("declared", ["-1", "abc", "1e3", "\u00b2"])
def test_local_gateway_refuses_a_bad_content_length_with_400(declared: str) -> None:
    """A negative or malformed Content-Length is the client's error: a 400 at once, no traceback, no hang."""
    import socket
    import threading

    from ernie.serving.gateway import make_server

    server = make_server(lambda event, context: {"ok": True}, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with socket.create_connection(server.server_address, timeout=5) as conn:
            conn.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n{{}}".encode())
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
    finally:
        server.shutdown()
        server.server_close()
    assert answer.startswith(b"HTTP/1.0 400 ") and b"Content-Length must be a non-negative integer" in answer


def fake_pulumi(tmp_path: Path, serving_url: str) -> dict[str, str]:
    """Environment whose `pulumi stack output inventory` (ernie/pulumi_cli.py) answers with this serving_url."""
    inventory = tmp_path / "inventory.json"
    (tmp_path / "id_ed25519").write_text("an inventory names a key; invoke never uses it\n")
    inventory.write_text(json.dumps({
        "cloud": "aws", "stack": "aws", "ssh_user": "ubuntu", "runner": "docker", "image": "img",
        "hosts": [{"name": "gpu-0", "address": "127.0.0.1", "worker": 0, "accelerator": "g5.xlarge", "chips": 1}],
        "ssh_key_path": str(tmp_path / "id_ed25519"), "serving_url": serving_url}))
    exe = tmp_path / "pulumi"
    exe.write_text(f"#!/bin/sh\ncat {inventory}\n")
    exe.chmod(0o755)
    return {**os.environ, "ERNIE_PULUMI": str(exe)}


def test_serve_local_and_invoke_over_http(ernie_cmd: list[str], tmp_path: Path) -> None:
    server = subprocess.Popen([*ernie_cmd, "serve", "--local", "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = server.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, line
        url = match.group(0)
        ok = subprocess.run([*ernie_cmd, "invoke", "--url", url, "--data", json.dumps({"instances": [VALID]})],
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "HTTP 200" in ok.stdout and len(json.loads(ok.stdout.split("\n", 1)[1])["predictions"]) == 1
        bad = subprocess.run([*ernie_cmd, "invoke", "--url", url, "--data", json.dumps({"instances": [{**VALID, "sex": 5}]})],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1 and "HTTP 400" in bad.stdout and "instances[0].sex is 5" in bad.stdout
        schema = subprocess.run([*ernie_cmd, "invoke", "--url", url, "/schema"], capture_output=True, text=True, timeout=60)
        assert schema.returncode == 0 and '"additionalProperties": false' in schema.stdout
        # -s aws: the endpoint is the stack inventory's serving_url.
        health = subprocess.run([*ernie_cmd, "invoke", "-s", "aws"], capture_output=True, text=True, timeout=60,
                                env=fake_pulumi(tmp_path, url))
        assert health.returncode == 0, health.stderr
        assert json.loads(health.stdout.split("\n", 1)[1])["status"] == "ok"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_invoke_without_a_serving_url_names_the_fix(ernie_cmd: list[str], tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"cloud": "local", "stack": "local", "ssh_user": "me", "runner": "local",
                                     "hosts": [{"name": "h", "address": "127.0.0.1", "worker": 0,
                                                "accelerator": "cpu", "chips": 1}]}))
    result = subprocess.run([*ernie_cmd, "invoke", "--inventory", str(inventory)], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "has no serving_url" in result.stderr and "ernie:serving: true" in result.stderr
    assert "Traceback" not in result.stderr


def test_layers_build_prints_sizes_against_the_limit(ernie_cmd: list[str], tmp_path: Path) -> None:
    result = subprocess.run([*ernie_cmd, "layers", "build", "--function", "tabular", "--python-version", "3.12",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=900,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    for name in ("numpy-scipy", "pandas", "scikit-learn", "model", "function"):
        assert re.search(rf"│ {name}\s+│.*│\s+[\d.]+ [KM]iB │\s+[\d.]+ [KM]iB │", result.stdout), name
    assert re.search(r"total [\d.]+ MiB unzipped of Lambda's 250\.0 MiB", result.stdout)
    zips = sorted(p.name for p in (tmp_path / "python3.12-x86_64-glibc2.34" / "tabular").iterdir())
    assert zips == ["1-numpy-scipy.zip", "2-pandas.zip", "3-scikit-learn.zip", "4-model.zip", "function.zip"]
    # The manifest beside them names the same zips, as the Pulumi program reads them.
    built = manifest.load("tabular", Target.lambda_runtime("3.12", "x86_64"), tmp_path / "manifest.json")
    assert [layer.archive.path.name for layer in built.layers] == zips[:4] and built.code.path.name == "function.zip"
    bad = subprocess.run([*ernie_cmd, "layers", "build", "--arch", "amd64"], capture_output=True, text=True)
    assert bad.returncode == 2 and "'amd64' is not a Lambda architecture" in bad.stderr
    old = subprocess.run([*ernie_cmd, "layers", "build", "--python-version", "3.9", "--out", str(tmp_path / "old")],
                         capture_output=True, text=True)
    assert old.returncode == 2 and "'3.9' is not a Lambda runtime the serving layers support" in old.stderr
    assert not (tmp_path / "old").exists()  # refused before anything is built


def test_demo_check_serves_from_the_unpacked_layers() -> None:
    from rich.console import Console

    from ernie.serving.demo_check import check_from_layers

    note = check_from_layers(Console(quiet=True))
    assert re.fullmatch(r"2 predictions \([\d.]+, [\d.]+\) and a 400 for an unknown category from layers of "
                        r"[\d.]+ MiB \(limit 250\.0 MiB\), cold start and 3 requests in [\d.]+ s", note), note
