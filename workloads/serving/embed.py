"""Sentence embeddings behind an API Gateway HTTP API (payload format 2.0): the embed function's handler.

    GET  /health   {"status": "ok", "model": ..., "precision": ..., "dimension": 384}
    POST /embed    {"instances": ["text", ...]}  ->  {"predictions": [[...384 floats...], ...]}

The model is the `embed_model` package that export_onnx.py writes (an ONNX encoder, its tokenizer and a
manifest), found through `sys.path` alone: on Lambda the model layer puts it in /opt/python; anywhere else,
put the unpacked layers on the path. Only onnxruntime, tokenizers and numpy run here, no torch. The session
and the tokenizer are created once per container, on the first request that needs them. Pooling is the
model's own (the manifest records it from the sentence-transformers config): the mean over the real tokens,
then L2 normalisation, so the dot product of two predictions is their cosine similarity.

Bad requests get 400 (not a list of non-empty strings) or 413 (too many texts, or a text longer than the
model reads), each naming the instance and the fix; a text is never silently truncated.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime import InferenceSession, SessionOptions
from tokenizers import Tokenizer

from apigw import HttpError, Request, Route, dispatch, instances_of

# The package export_onnx.py writes and the model layer holds.
MODEL_PACKAGE = "embed_model"
# Requests holding more texts than this get 413; the function's memory and timeout are sized for it.
MAX_INSTANCES = int(os.environ.get("ERNIE_EMBED_MAX_INSTANCES", "64"))
# Enough problems to fix a request in one round trip, not so many the message drowns.
MAX_REPORTED_PROBLEMS = 10
# ONNX Runtime's intra-op threads; unset or 0: its default, one per core the function gets.
THREADS = int(os.environ.get("ERNIE_EMBED_THREADS", "0"))


@dataclass(frozen=True)
class Embedder:
    """An exported model: tokenizer, ONNX Runtime session and the manifest that says how to pool."""

    session: InferenceSession
    tokenizer: Tokenizer
    manifest: dict[str, Any]

    @classmethod
    def load(cls, directory: Path) -> Embedder:
        manifest = json.loads((directory / "manifest.json").read_text())
        if manifest["pooling"]["mode"] != "mean_tokens":
            raise ValueError(f"{directory}: pooling {manifest['pooling']['mode']!r} is not served; re-export the model")
        options = SessionOptions()
        # One request at a time per Lambda container: the intra-op threads are all the parallelism there is.
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = THREADS
        session = InferenceSession(str(directory / "model.onnx"), options, providers=["CPUExecutionProvider"])
        return cls(session, Tokenizer.from_file(str(directory / "tokenizer.json")), manifest)

    @property
    def max_tokens(self) -> int:
        """The longest input the model reads, [CLS] and [SEP] included."""
        return int(self.manifest["pooling"]["max_seq_length"])

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        return encode(self.tokenizer, texts)

    def embed_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Sentence embeddings (texts x dimension, float32) of an encoded batch."""
        (hidden,) = self.session.run([self.manifest["output"]], {name: batch[name] for name in self.manifest["inputs"]})
        return mean_pool(hidden, batch["attention_mask"], self.manifest["pooling"]["normalize"])

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embed_batch(self.encode(texts))


def encode(tokenizer: Tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    """The model's inputs for a batch, as the tokenizer pads it (export_onnx.py: to the longest text, never truncated)."""
    encodings = tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def mean_pool(hidden: np.ndarray, mask: np.ndarray, normalize: bool) -> np.ndarray:
    """The mean of each text's token vectors over its real tokens (padding excluded), L2-normalised if asked."""
    weights = mask[..., None].astype(hidden.dtype)
    pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    if normalize:
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled


@functools.cache
def _embedder() -> Embedder:
    package = importlib.import_module(MODEL_PACKAGE)
    return Embedder.load(Path(package.__file__).resolve().parent)


def parse_texts(payload: Any) -> list[str]:
    """The texts of an embed request; HttpError 400/413 naming every problem found."""
    texts = instances_of(payload, example='["text", ...]', each="a list of strings, one per embedding",
                         noun="text", limit=MAX_INSTANCES, hint=": split them over several requests")
    problems = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            problems.append(f"instances[{index}] must be a string, got {type(text).__name__}")
        elif not text.strip():
            problems.append(f"instances[{index}] is empty; send text to embed")
    if problems:
        raise HttpError(400, f"invalid instances: {_join(problems)}")
    return texts


def check_lengths(lengths: np.ndarray, max_tokens: int) -> None:
    """413 naming every text the model cannot read whole."""
    problems = [f"instances[{i}] is {n} tokens" for i, n in enumerate(lengths.tolist()) if n > max_tokens]
    if problems:
        raise HttpError(413, f"{_join(problems)}; the model reads at most {max_tokens} tokens per text "
                             "([CLS] and [SEP] included): split longer texts")


def _join(problems: list[str]) -> str:
    more = len(problems) - MAX_REPORTED_PROBLEMS
    return "; ".join(problems[:MAX_REPORTED_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")


def health(_: Request) -> tuple[int, Any]:
    manifest = _embedder().manifest
    return 200, {"status": "ok", "model": manifest["name"], "version": manifest["version"],
                 "precision": manifest["precision"], "dimension": manifest["pooling"]["dimension"]}


def embed(request: Request) -> tuple[int, Any]:
    texts = parse_texts(request.json())
    embedder = _embedder()
    batch = embedder.encode(texts)
    check_lengths(batch["attention_mask"].sum(axis=1), embedder.max_tokens)
    return 200, {"predictions": embedder.embed_batch(batch).tolist()}


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/health"): health,
    ("POST", "/embed"): embed,
}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point of the embed function (`embed.handler`)."""
    return dispatch(ROUTES, event)
