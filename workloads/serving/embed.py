"""Sentence embeddings behind an API Gateway HTTP API (payload format 2.0): the embed function's handler.

    GET  /health   {"status": "ok", "model": ..., "precision": ..., "dimension": 384, "self_check": {...}}
    POST /embed    {"instances": ["text", ...]}  ->  {"predictions": [[...384 floats...], ...]}

The model is the `embed_model` package that export_onnx.py writes (an ONNX encoder, its tokenizer and a
manifest), found through `sys.path` alone: on Lambda the model layer puts it in /opt/python; anywhere else,
put the unpacked layers on the path. Only onnxruntime, tokenizers and numpy run here, no torch. The session
and the tokenizer are created once per container, on the first request that needs them. Pooling is the
model's own (the manifest records it from the sentence-transformers config): the mean over the real tokens,
then L2 normalisation, so the dot product of two predictions is their cosine similarity.

Bad requests get 400 (not a list of non-empty strings) or 413 (too many texts, or a text longer than the
model reads), each naming the instance and the fix; a text is never silently truncated. Lengths are checked
on the unpadded tokens, before a batch is padded: one long text among short ones never builds a padded array
of its length (the body is at most apigw.MAX_BODY_BYTES, so the tokens are bounded too).

The int8 model's kernels differ by CPU (x86-64 with or without VNNI, arm64), and Lambda promises no CPU
generation. So the package carries the fp32 reference embeddings of a few check texts (selfcheck.json, written
by export_onnx.py), and the first request a container serves embeds them with this host's kernels: below the
manifest's gate, /health answers 503 with the figure and /embed refuses with 503 rather than answer wrong
embeddings silently.
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
# The BERT vocabulary's padding token: what a batch is padded with (the attention mask hides it).
PAD_TOKEN = "[PAD]"
# Requests holding more texts than this get 413; the function's memory and timeout are sized for it.
MAX_INSTANCES = int(os.environ.get("ERNIE_EMBED_MAX_INSTANCES", "64"))
# Enough problems to fix a request in one round trip, not so many the message drowns.
MAX_REPORTED_PROBLEMS = 10
# ONNX Runtime's intra-op threads; unset or 0: its default, one per core the function gets.
THREADS = int(os.environ.get("ERNIE_EMBED_THREADS", "0"))
# On x86-64 without VNNI (AVX2, AVX-512F alone) onnxruntime's U8S8 int8 kernels add pairs of u8*s8 products in
# saturating int16 (vpmaddubsw); all-MiniLM-L6-v2's activations overflow it (worst cosine 0.973 vs 0.993). This
# option makes onnxruntime shift the int8 weights to uint8 exactly and use its U8U8 kernels instead. Those have
# no VNNI path, so where VNNI is present (its U8S8 kernel sums in int32: nothing to saturate) the option only
# costs: the session took 64 ms instead of 35 ms for 8 sentences on AVX-512 VNNI, same embeddings.
PRECISE_CONFIG = {"session.x64quantprecision": "1"}


def session_config() -> dict[str, str]:
    """The session options this CPU needs: PRECISE_CONFIG on x86-64 without AVX-512 VNNI, none elsewhere.

    Read from CPUID as numpy's dispatcher reads it, like onnxruntime's own choice of kernel (/proc/cpuinfo
    would report the host under an emulator). AVX-VNNI alone (no AVX-512) is not in numpy's list, so such a
    CPU keeps the exact kernels: slower, never wrong.
    """
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy moved it: stay exact
        return dict(PRECISE_CONFIG)
    return {} if features.get("AVX512VNNI") else dict(PRECISE_CONFIG)


@dataclass(frozen=True)
class Embedder:
    """An exported model: tokenizer, ONNX Runtime session and the manifest that says how to pool."""

    session: InferenceSession
    tokenizer: Tokenizer
    manifest: dict[str, Any]
    directory: Path

    @classmethod
    def load(cls, directory: Path, config: dict[str, str] | None = None) -> Embedder:
        """`config`: session options, by default those this CPU needs (session_config())."""
        manifest = json.loads((directory / "manifest.json").read_text())
        if manifest["pooling"]["mode"] != "mean_tokens":
            raise ValueError(f"{directory}: pooling {manifest['pooling']['mode']!r} is not served; re-export the model")
        options = SessionOptions()
        # One request at a time per Lambda container: the intra-op threads are all the parallelism there is.
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = THREADS
        for key, value in (session_config() if config is None else config).items():
            options.add_session_config_entry(key, value)
        session = InferenceSession(str(directory / "model.onnx"), options, providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        tokenizer.no_padding()  # encode() pads, after the length check
        return cls(session, tokenizer, manifest, directory)

    @property
    def max_tokens(self) -> int:
        """The longest input the model reads, [CLS] and [SEP] included."""
        return int(self.manifest["pooling"]["max_seq_length"])

    @property
    def dimension(self) -> int:
        return int(self.manifest["pooling"]["dimension"])

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        return encode(self.tokenizer, texts, self.max_tokens)

    def embed_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Sentence embeddings (texts x dimension, float32) of an encoded batch.

        Each text runs alone, unpadded: the encoder's cost grows with the tokens it is given, and padding to the
        longest text was half of them for 8 sentences of 6-30 words (34 ms batched, 19 ms one by one). Each
        text also gets its own activation scales (worst cosine on the check texts 0.995 vs 0.993 batched).
        """
        normalize, pooled = self.manifest["pooling"]["normalize"], []
        for row, length in enumerate(batch["attention_mask"].sum(axis=1).tolist()):
            text = {name: batch[name][row:row + 1, :length] for name in self.manifest["inputs"]}
            (hidden,) = self.session.run([self.manifest["output"]], text)
            pooled.append(mean_pool(hidden, text["attention_mask"], normalize))
        return np.concatenate(pooled) if pooled else np.zeros((0, self.dimension), np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embed_batch(self.encode(texts))

    def self_check(self) -> SelfCheck:
        """This host's embeddings of the package's check texts against their fp32 reference."""
        reference = json.loads((self.directory / SELF_CHECK_FILE).read_text())
        expected = np.asarray(reference["embeddings"], dtype=np.float32)
        cosine = cosines(self.embed(reference["texts"]), expected)
        return SelfCheck(min_cosine=round(float(cosine.min()), 5), gate=float(self.manifest["self_check"]["gate"]),
                         texts=len(expected))


@dataclass(frozen=True)
class SelfCheck:
    """The package's check texts embedded on this host: the worst cosine with the fp32 reference, and the gate."""

    min_cosine: float
    gate: float
    texts: int

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.gate

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "min_cosine": self.min_cosine, "gate": self.gate, "texts": self.texts,
                "reference": "PyTorch fp32 embeddings stored at export", "cpu": cpu_summary()}


# The check texts and their fp32 embeddings, beside model.onnx (export_onnx.py writes them).
SELF_CHECK_FILE = "selfcheck.json"
# The x86 features that choose onnxruntime's int8 kernels, as /proc/cpuinfo names them.
KERNEL_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_summary() -> dict[str, Any]:
    """The machine and the int8-relevant CPU features it has: what a failing self-check is diagnosed by."""
    import platform

    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith(("flags", "Features"))), [])
    except OSError:
        flags = []
    return {"machine": platform.machine(), "features": [f for f in KERNEL_FEATURES if f in flags]}


def cosines(embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return (embeddings * reference).sum(axis=1) / np.linalg.norm(embeddings, axis=1) / np.linalg.norm(reference, axis=1)


def encode(tokenizer: Tokenizer, texts: list[str], max_tokens: int | None = None) -> dict[str, np.ndarray]:
    """The model's inputs for a batch, padded here to its longest text, never truncated.

    The tokenizer must not pad (Embedder.load and export_onnx.py turn it off): with `max_tokens`, every text's
    length is checked before anything is padded (HttpError 413 naming each text too long), so the padded
    arrays are at most len(texts) x max_tokens whatever one text held.
    """
    if tokenizer.padding is not None:
        raise ValueError("encode pads the batch itself: call tokenizer.no_padding() first")
    encodings = tokenizer.encode_batch(texts)
    lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
    if max_tokens is not None:
        check_lengths(lengths, max_tokens)
    shape = (len(texts), int(lengths.max(initial=0)))
    batch = {"input_ids": np.full(shape, tokenizer.token_to_id(PAD_TOKEN), dtype=np.int64),
             "attention_mask": np.zeros(shape, dtype=np.int64), "token_type_ids": np.zeros(shape, dtype=np.int64)}
    for row, (encoding, length) in enumerate(zip(encodings, lengths)):
        batch["input_ids"][row, :length] = encoding.ids
        batch["attention_mask"][row, :length] = 1
        batch["token_type_ids"][row, :length] = encoding.type_ids
    return batch


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


@functools.cache
def _self_check() -> SelfCheck:
    """Run once per container, on the first request: the kernels do not change while it lives."""
    return _embedder().self_check()


def _require_self_check() -> None:
    check = _self_check()
    if not check.passed:
        raise HttpError(503, f"this host's int8 kernels fail the model's self-check (worst cosine {check.min_cosine} "
                             f"with the fp32 reference on {check.texts} texts, gate {check.gate}; CPU "
                             f"{cpu_summary()}): no embeddings are served from it; see GET /health")


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
    manifest, check = _embedder().manifest, _self_check()
    return (200 if check.passed else 503), {
        "status": "ok" if check.passed else "failing self-check", "model": manifest["name"],
        "version": manifest["version"], "precision": manifest["precision"],
        "dimension": manifest["pooling"]["dimension"], "self_check": check.as_dict()}


def embed(request: Request) -> tuple[int, Any]:
    texts = parse_texts(request.json())
    _require_self_check()
    embedder = _embedder()
    return 200, {"predictions": embedder.embed_batch(embedder.encode(texts)).tolist()}


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/health"): health,
    ("POST", "/embed"): embed,
}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point of the embed function (`embed.handler`)."""
    return dispatch(ROUTES, event)
