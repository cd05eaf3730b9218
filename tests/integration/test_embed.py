"""The embed endpoint's own logic and its export: validation, pooling, the export's manifest and its gate,
and `ernie serve --local --function embed` answering over HTTP.

The served-from-layers proof against PyTorch is tests/integration/test_embed_layers.py; the stack, test_embed_stack.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from testing.cpu_line import cpu_line

from lambda_layers.spec import SERVING_DIR

# The function's modules as Lambda imports them, from its own directory (kept off the path afterwards: the
# directory also holds the tabular model's source template, which must not shadow a built model elsewhere).
sys.path.insert(0, str(SERVING_DIR))
import embed  # noqa: E402
from apigw import HttpError  # noqa: E402

sys.path.remove(str(SERVING_DIR))


@pytest.mark.parametrize("payload,status,fragment", [
    ({"instances": ["a", "", 7, " \n"]}, 400,
     "instances[1] is empty; send text to embed; instances[2] must be a string, got int; instances[3] is empty"),
    ({"instances": [""] * 12}, 400, "instances[9] is empty; send text to embed; and 2 more"),
    ({"instances": ["a"] * (embed.MAX_INSTANCES + 1)}, 413, f"the limit is {embed.MAX_INSTANCES} per request"),
    ({"instances": "one text"}, 400, '"instances": a list of strings'),
    ({"instances": ["a"], "parameters": {}}, 400, "unknown top-level field(s) ['parameters']"),
    ("text", 400, "the body must be a JSON object"),
])
def test_bad_payloads_name_the_problem(payload: Any, status: int, fragment: str) -> None:
    with pytest.raises(HttpError) as error:
        embed.parse_texts(payload)
    assert error.value.status == status and fragment in error.value.message, error.value.message


def test_too_long_texts_are_413_naming_each() -> None:
    embed.check_lengths(np.array([3, 256]), 256)
    with pytest.raises(HttpError) as error:
        embed.check_lengths(np.array([3, 300, 12, 257]), 256)
    assert error.value.status == 413
    assert error.value.message.startswith("instances[1] is 300 tokens; instances[3] is 257 tokens; the model reads at most 256")


def test_mean_pool_ignores_padding_and_normalises() -> None:
    hidden = np.array([[[1.0, 0.0], [3.0, 4.0], [100.0, -100.0]],
                       [[0.0, 2.0], [50.0, 50.0], [50.0, 50.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    np.testing.assert_allclose(embed.mean_pool(hidden, mask, normalize=False), [[2.0, 2.0], [0.0, 2.0]])
    np.testing.assert_allclose(embed.mean_pool(hidden, mask, normalize=True), [[0.5**0.5, 0.5**0.5], [0.0, 1.0]], rtol=1e-6)


def test_export_refuses_a_model_below_the_cosine_gate(tmp_path: Path) -> None:
    # int8 cannot match PyTorch fp32 to 0.9999 on every check text: nothing may be written. The cosine it does
    # reach varies by CPU (int8 kernels without vnni saturate); 0.99 holds on every CPU with the export's scheme.
    result = subprocess.run([sys.executable, str(SERVING_DIR / "export_onnx.py"), "--out", str(tmp_path / "out"),
                             "--min-cosine", "0.9999"], capture_output=True, text=True, timeout=600, cwd=SERVING_DIR)
    assert result.returncode != 0
    assert re.search(r"the int8 export's embeddings reach a cosine of only 0\.99\d+ .* \(need >= 0\.9999\): not written",
                     result.stderr), f"on {cpu_line()}:\n{result.stderr[-2000:]}"
    assert not (tmp_path / "out" / "embed_model").exists()


@pytest.fixture(scope="module")
def local_server(ernie_cmd: list[str]) -> Iterator[str]:
    """`ernie serve --local --function embed` on a free port (the model layer's export runs first)."""
    server = subprocess.Popen([*ernie_cmd, "serve", "--local", "--function", "embed", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = server.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, line + server.stdout.read()
        yield match.group(0)
    finally:
        server.terminate()
        server.wait(timeout=30)


def invoke(ernie_cmd: list[str], url: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = [] if body is None else ["--data", json.dumps(body)]
    result = subprocess.run([*ernie_cmd, "invoke", "--url", url, path, *data], capture_output=True, text=True,
                            timeout=120)
    status = re.search(r"HTTP (\d+)", result.stdout)
    assert status, result.stdout + result.stderr
    return int(status.group(1)), json.loads(result.stdout.split("\n", 1)[1])


def test_serve_local_embeds_over_http(ernie_cmd: list[str], local_server: str) -> None:
    texts = ["A man is playing a guitar on stage.", "Someone performs music with a guitar.",
             "The quarterly tax return is due next week."]
    status, body = invoke(ernie_cmd, local_server, "/embed", {"instances": texts})
    assert status == 200, body
    vectors = np.array(body["predictions"])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # The model's purpose: a paraphrase lies far closer than an unrelated sentence.
    assert vectors[0] @ vectors[1] > 0.5 > vectors[0] @ vectors[2] + 0.3
    status, health = invoke(ernie_cmd, local_server, "/health")
    assert status == 200 and health["precision"] == "int8" and health["dimension"] == 384
    status, error = invoke(ernie_cmd, local_server, "/embed", {"instances": ["fine", ""]})
    assert status == 400 and "instances[1] is empty" in error["error"]
