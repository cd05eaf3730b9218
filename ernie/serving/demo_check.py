"""`ernie demo`'s serving piece: the handler run from the built, unpacked layers in a bare interpreter."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from rich.console import Console

from catalog.lambda_runtime import UNZIPPED_LIMIT
from ernie.errors import ErnieError
from ernie.serving.build import mib
from ernie.serving.gateway import from_response, to_event
from lambda_layers import harness
from lambda_layers.build import build_function
from lambda_layers.spec import load_functions
from lambda_layers.target import Target

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
            f"category from layers of {mib(built.unzipped_bytes)} (limit {mib(UNZIPPED_LIMIT)}), "
            f"cold start and 3 requests in {seconds:.1f} s")
