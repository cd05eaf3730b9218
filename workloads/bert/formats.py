"""The BERT pretraining data as MLPerf's references write it, read as a stream, plus ernie's own format.

Three formats, each read to data.FIELDS (ernie's names, int32 / float32, [N, S] and [N, P]) so that both
trainers see the same batches whatever was on disk:

- "ernie": a prepared directory (data.py, meta.json + npz shards). The small default.
- "hdf5": the PyTorch reference's shards (mlcommons/training language_model/pytorch/bert, NVIDIA's prep).
  Fixed length: input_ids, input_mask, segment_ids [N, 512]; masked_lm_positions, masked_lm_ids [N, 76];
  next_sentence_labels [N]; any integer dtype. masked_lm_weights is derived as the reference derives it:
  the predictions before the first 0 position are real. Variable length (convert_fixed2variable.py):
  the same keys without input_mask, each row a variable-length array; the mask is derived from the row's
  length, then everything is padded to S and P.
- "tfrecord": the TF reference's tf.train.Example records (create_pretraining_data.py): input_ids,
  input_mask, segment_ids int64 [S]; masked_lm_positions, masked_lm_ids int64 [P]; masked_lm_weights
  float [P]; next_sentence_labels int64 [1]. Parsing needs TensorFlow (the field's own parser).

Streaming (`ShardStream`): the shards of one split are dealt out to the readers (a reader is a rank of
train_torch.py or an input pipeline of tf_pretrain.py) from an endless sequence of shard permutations,
one per epoch, seeded by `seed`: reader r of W takes positions r, r+W, r+2W, ... of that sequence. Inside
a shard, rows are read in blocks of `block_rows`; the blocks are visited in a seeded order and each
block's rows shuffled. Only one block is in memory at a time, so a reader's memory does not grow with
the data. Reader r's step s is rows [s*B, (s+1)*B) of its own stream (B its share of the global batch),
so the batch of a step is a function of (seed, readers, step) alone and `--resume` continues exactly.
"""

from __future__ import annotations

import glob
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import data
from data import FIELDS, DataError

FORMATS = ("ernie", "hdf5", "tfrecord")
HDF5_SUFFIXES = (".hdf5", ".h5")
MLPERF_SEQ_LEN, MLPERF_MAX_PREDICTIONS = 512, 76  # the reference data's shapes
DEFAULT_BLOCK_ROWS = 2048

# The keys each format must hold (ernie's are data.FIELDS, checked by data.py).
HDF5_FIXED_KEYS = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
                   "next_sentence_labels")
HDF5_VARIABLE_KEYS = ("input_ids", "segment_ids", "masked_lm_positions", "masked_lm_ids", "next_sentence_labels")
TFRECORD_KEYS = {  # key -> (tf dtype name, "seq" | "pred" | 1)
    "input_ids": ("int64", "seq"),
    "input_mask": ("int64", "seq"),
    "segment_ids": ("int64", "seq"),
    "masked_lm_positions": ("int64", "pred"),
    "masked_lm_ids": ("int64", "pred"),
    "masked_lm_weights": ("float32", "pred"),
    "next_sentence_labels": ("int64", 1),
}


# ---------------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """One split's shards in one format, with the shapes every shard must have."""

    format: str
    shards: tuple[Path, ...]
    seq_len: int
    max_predictions: int
    variable_length: bool = False  # hdf5 only
    _counts: dict = field(default_factory=dict, compare=False, repr=False)

    def count(self, index: int) -> int:
        """Examples in shard `index` (read from its header, or its record framing, once)."""
        if index not in self._counts:
            self._counts[index] = _reader(self, index).rows
        return self._counts[index]

    @property
    def examples(self) -> int:
        """Every example of the split. Touches every shard: for ernie and hdf5 their headers only."""
        return sum(self.count(i) for i in range(len(self.shards)))


def detect_format(path: str | os.PathLike) -> str:
    """"ernie" for a directory with meta.json (or nothing there: ernie's error says how to prepare it), "hdf5"
    for .hdf5/.h5 files, else "tfrecord"."""
    path = Path(path)
    if path.is_dir() and (path / data.META_FILE).is_file():
        return "ernie"
    files = _files(path)
    if not files:
        return "ernie"
    if files and all(f.suffix in HDF5_SUFFIXES for f in files):
        return "hdf5"
    return "tfrecord"


def open_source(
    path: str | os.PathLike,
    fmt: str = "auto",
    *,
    split: str = "train",
    seq_len: int | None = None,
    max_predictions: int | None = None,
) -> Source:
    """The shards at `path` (a directory, a file, or a glob) in format `fmt`, their shapes checked on the
    first shard. `split` picks the split of an ernie directory; seq_len and max_predictions are needed
    only for variable-length hdf5 (default: MLPerf's 512 and 76) and are checked against the data otherwise."""
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}: choose one of auto, {', '.join(FORMATS)}")
    if fmt == "ernie":
        meta = data.read_meta(path)
        if split not in meta["splits"]:
            raise DataError(f"{Path(path) / data.META_FILE} has no {split!r} split")
        shards = tuple(Path(path) / s for s in meta["splits"][split]["shards"])
        source = Source("ernie", shards, meta["seq_len"], meta["max_predictions"])
        _check_shapes(source, seq_len, max_predictions)
        return source
    files = _files(Path(path))
    if not files:
        raise DataError(f"no {fmt} shards at {path}: give a directory of shards, a file or a glob")
    if fmt == "hdf5":
        h5py = _h5py()
        with h5py.File(files[0], "r") as f:
            variable = "input_mask" not in f and "input_ids" in f and f["input_ids"].dtype.kind == "O"
            if variable:
                s, p = seq_len or MLPERF_SEQ_LEN, max_predictions or MLPERF_MAX_PREDICTIONS
            else:
                for key in ("input_ids", "masked_lm_positions"):
                    if key not in f:
                        raise DataError(f"hdf5 shard {files[0]} lacks the key {key!r}")
                    if f[key].ndim != 2:
                        raise DataError(f"hdf5 shard {files[0]}: {key} has shape {list(f[key].shape)}, expected [N, L]")
                s, p = f["input_ids"].shape[1], f["masked_lm_positions"].shape[1]
        source = Source("hdf5", tuple(files), s, p, variable_length=variable)
    else:
        first = _TFRecordShard(files[0], None, None).first_example_lengths()
        source = Source("tfrecord", tuple(files), first["input_ids"], first["masked_lm_ids"])
    _check_shapes(source, seq_len, max_predictions)
    return source


def _check_shapes(source: Source, seq_len: int | None, max_predictions: int | None) -> None:
    for name, wanted, found in (("seq len", seq_len, source.seq_len), ("max predictions", max_predictions,
                                                                       source.max_predictions)):
        if wanted is not None and wanted != found:
            raise DataError(f"{source.shards[0]}: the data's {name} is {found}, the run expects {wanted}")


def _files(path: Path) -> list[Path]:
    """A directory's regular files (hidden ones skipped), a single file, or a glob's matches; sorted."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                      and p.name != data.META_FILE)
    if path.is_file():
        return [path]
    return sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())


def _h5py():
    try:
        import h5py
    except ImportError:
        raise DataError("hdf5 shards need h5py: pip install h5py") from None
    return h5py


# ---------------------------------------------------------------------------------------------- shard readers


def _reader(source: Source, index: int):
    path = source.shards[index]
    if not path.is_file():
        raise DataError(f"shard {path} is missing")
    cls = {"ernie": _ErnieShard, "hdf5": _Hdf5Shard, "tfrecord": _TFRecordShard}[source.format]
    return cls(path, source.seq_len, source.max_predictions)


class _ErnieShard:
    """An npz shard of data.py's format (small: read whole)."""

    def __init__(self, path: Path, seq_len: int, max_predictions: int) -> None:
        self.arrays = data._load_shard(path, {"seq": seq_len, "pred": max_predictions})
        self.rows = len(self.arrays["input_ids"])

    def read(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        return {k: v[lo:hi] for k, v in self.arrays.items()}


class _Hdf5Shard:
    """A reference hdf5 shard, fixed or variable length, read by row ranges (h5py reads only those)."""

    def __init__(self, path: Path, seq_len: int, max_predictions: int) -> None:
        self.path, self.seq_len, self.max_predictions = path, seq_len, max_predictions
        h5py = _h5py()
        try:
            with h5py.File(path, "r") as f:
                self.variable = "input_mask" not in f and "input_ids" in f and f["input_ids"].dtype.kind == "O"
                keys = HDF5_VARIABLE_KEYS if self.variable else HDF5_FIXED_KEYS
                rows = None
                for key in keys:
                    if key not in f:
                        raise DataError(f"hdf5 shard {path} lacks the key {key!r} (it holds {sorted(f.keys())})")
                    dataset = f[key]
                    self._check(key, dataset)
                    if rows is not None and dataset.shape[0] != rows:
                        raise DataError(f"hdf5 shard {path}: {key} has {dataset.shape[0]} rows, the others {rows}")
                    rows = dataset.shape[0]
        except OSError as exc:
            raise DataError(f"hdf5 shard {path} cannot be read ({exc})") from None
        self.rows = rows

    def _check(self, key: str, dataset) -> None:
        kind = dataset.dtype.kind
        if self.variable and key != "next_sentence_labels":
            base = _h5py().check_vlen_dtype(dataset.dtype)
            ok, expected = dataset.ndim == 1 and base is not None and np.dtype(base).kind in "iu", "variable-length integer [N]"
        else:
            width = {"input_ids": self.seq_len, "input_mask": self.seq_len, "segment_ids": self.seq_len,
                     "masked_lm_positions": self.max_predictions, "masked_lm_ids": self.max_predictions}.get(key)
            shape_ok = (dataset.ndim == 1 or dataset.shape[1:] == (1,)) if width is None else (
                dataset.ndim == 2 and dataset.shape[1] == width)
            ok, expected = kind in "iu" and shape_ok, f"integer [N{', ' + str(width) if width else ''}]"
        if not ok:
            raise DataError(f"hdf5 shard {self.path}: {key} is {dataset.dtype}{list(dataset.shape)}, expected {expected}")

    def read(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        h5py = _h5py()
        with h5py.File(self.path, "r") as f:
            raw = {key: f[key][lo:hi] for key in (HDF5_VARIABLE_KEYS if self.variable else HDF5_FIXED_KEYS)}
        n = hi - lo
        out = _empty(n, self.seq_len, self.max_predictions)
        if self.variable:
            for row in range(n):
                ids = raw["input_ids"][row]
                if len(ids) > self.seq_len or len(raw["masked_lm_ids"][row]) > self.max_predictions:
                    raise DataError(
                        f"hdf5 shard {self.path}: row {lo + row} holds {len(ids)} tokens and "
                        f"{len(raw['masked_lm_ids'][row])} predictions, over the run's {self.seq_len} / {self.max_predictions}"
                    )
                out["input_ids"][row, : len(ids)] = ids
                out["input_mask"][row, : len(ids)] = 1
                out["segment_ids"][row, : len(raw["segment_ids"][row])] = raw["segment_ids"][row]
                k = len(raw["masked_lm_positions"][row])
                out["masked_lm_positions"][row, :k] = raw["masked_lm_positions"][row]
                out["masked_lm_ids"][row, :k] = raw["masked_lm_ids"][row][:k]
                out["masked_lm_weights"][row, :k] = 1.0
        else:
            for key in ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids"):
                out[key][:] = raw[key]
            # The PyTorch reference: the predictions end at the first 0 position ([CLS] is never predicted).
            out["masked_lm_weights"][:] = np.cumprod(raw["masked_lm_positions"] != 0, axis=1)
            out["masked_lm_positions"] *= out["masked_lm_weights"].astype(np.int32)
            out["masked_lm_ids"] *= out["masked_lm_weights"].astype(np.int32)
        out["next_sentence_labels"][:] = np.asarray(raw["next_sentence_labels"]).reshape(n)
        return out


class _TFRecordShard:
    """A TFRecord file: the record framing (length, crc, bytes, crc) is walked once to index the records, so a
    block of rows is one seek and one read; the Examples are parsed by TensorFlow."""

    def __init__(self, path: Path, seq_len: int | None, max_predictions: int | None) -> None:
        self.path, self.seq_len, self.max_predictions = path, seq_len, max_predictions
        self._offsets: np.ndarray | None = None

    @property
    def offsets(self) -> np.ndarray:
        """The byte offset of each record, and the file's end last."""
        if self._offsets is None:
            offsets = []
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                position = 0
                while position < size:
                    header = f.read(12)
                    if len(header) < 12:
                        raise DataError(f"TFRecord shard {self.path} is truncated at byte {position}")
                    (length,) = struct.unpack("<Q", header[:8])
                    offsets.append(position)
                    position += 12 + length + 4
                    f.seek(position)
                if position != size:
                    raise DataError(f"TFRecord shard {self.path} is truncated at byte {size}")
            offsets.append(size)
            self._offsets = np.asarray(offsets, dtype=np.int64)
        return self._offsets

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1

    def _records(self, lo: int, hi: int) -> list[bytes]:
        start, stop = int(self.offsets[lo]), int(self.offsets[hi])
        with open(self.path, "rb") as f:
            f.seek(start)
            blob = f.read(stop - start)
        records, position = [], 0
        while position < len(blob):
            (length,) = struct.unpack_from("<Q", blob, position)
            records.append(blob[position + 12 : position + 12 + length])
            position += 12 + length + 4
        return records

    def _example(self, record: bytes) -> dict[str, tuple[str, int]]:
        """{key: (dtype, length)} of one record, for shapes and for naming what is wrong."""
        tf = _tf()
        example = tf.train.Example.FromString(record)
        found = {}
        for key, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            values = getattr(feature, kind).value if kind else []
            found[key] = ({"int64_list": "int64", "float_list": "float32", "bytes_list": "bytes"}.get(kind, "empty"),
                          len(values))
        return found

    def first_example_lengths(self) -> dict[str, int]:
        if self.rows == 0:
            raise DataError(f"TFRecord shard {self.path} holds no records")
        found = self._example(self._records(0, 1)[0])
        for key in ("input_ids", "masked_lm_ids"):
            if key not in found:
                raise DataError(f"TFRecord shard {self.path}, record 0 lacks the feature {key!r}")
        return {k: n for k, (_, n) in found.items()}

    def _diagnose(self, records: list[bytes], lo: int) -> DataError:
        dims = {"seq": self.seq_len, "pred": self.max_predictions, 1: 1}
        for i, record in enumerate(records):
            found = self._example(record)
            for key, (dtype, dim) in TFRECORD_KEYS.items():
                if key not in found:
                    return DataError(f"TFRecord shard {self.path}, record {lo + i} lacks the feature {key!r}")
                if found[key] != (dtype, dims[dim]):
                    return DataError(f"TFRecord shard {self.path}, record {lo + i}: {key} is {found[key][0]}"
                                     f"[{found[key][1]}], expected {dtype}[{dims[dim]}]")
        return DataError(f"TFRecord shard {self.path}: records {lo}.. cannot be parsed")

    def read(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        tf = _tf()
        records = self._records(lo, hi)
        dims = {"seq": self.seq_len, "pred": self.max_predictions, 1: 1}
        spec = {key: tf.io.FixedLenFeature([dims[dim]], getattr(tf, dtype)) for key, (dtype, dim) in TFRECORD_KEYS.items()}
        try:
            parsed = tf.io.parse_example(tf.constant(records, dtype=tf.string), spec)
        except (tf.errors.InvalidArgumentError, ValueError):
            raise self._diagnose(records, lo) from None
        out = {}
        for name, (dtype, _) in FIELDS.items():
            out[name] = parsed[name].numpy().astype(dtype)
        out["next_sentence_labels"] = out["next_sentence_labels"].reshape(len(records))
        return out


def _tf():
    try:
        import tensorflow as tf
    except ImportError:
        raise DataError("TFRecord shards need TensorFlow to parse: pip install tensorflow-cpu, or use the hdf5 "
                        "shards of the PyTorch reference") from None
    return tf


def _empty(n: int, seq_len: int, max_predictions: int) -> dict[str, np.ndarray]:
    dims = {"seq": seq_len, "pred": max_predictions}
    return {name: np.zeros((n,) if dim is None else (n, dims[dim]), dtype) for name, (dtype, dim) in FIELDS.items()}


# ---------------------------------------------------------------------------------------------- checks


def check_vocab(arrays: dict[str, np.ndarray], *, vocab_size: int, cls_id: int, where: str) -> None:
    """A clear error when the examples were not made with the run's vocabulary: token ids past its end,
    or sequences that do not open with its [CLS]."""
    for key in ("input_ids", "masked_lm_ids"):
        if arrays[key].size and int(arrays[key].max()) >= vocab_size:
            raise DataError(f"{where}: {key} holds id {int(arrays[key].max())}, past the model's vocab of "
                            f"{vocab_size}: it was made with another vocab")
    real = arrays["input_mask"][:, 0] == 1
    if real.any() and not (arrays["input_ids"][real, 0] == cls_id).all():
        raise DataError(f"{where}: input_ids do not start with [CLS] (id {cls_id}): it was made with another vocab")


# ---------------------------------------------------------------------------------------------- reading


def read_examples(source: Source, limit: int | None = None) -> dict[str, np.ndarray]:
    """The first `limit` examples (all if None) in file order: the eval set, which is small."""
    parts, total = [], 0
    for index in range(len(source.shards)):
        if limit is not None and total >= limit:
            break
        reader = _reader(source, index)
        hi = reader.rows if limit is None else min(reader.rows, limit - total)
        parts.append(reader.read(0, hi))
        total += hi
    if not parts:
        return _empty(0, source.seq_len, source.max_predictions)
    return {name: np.concatenate([p[name] for p in parts]) for name in FIELDS}


class ShardStream:
    """Reader `reader` of `readers`: its batches of `batch` rows, step by step (module docstring)."""

    def __init__(self, source: Source, *, reader: int, readers: int, batch: int, seed: int,
                 block_rows: int = DEFAULT_BLOCK_ROWS) -> None:
        if not 0 <= reader < readers:
            raise ValueError(f"reader {reader} is not in 0..{readers - 1}")
        if batch < 1 or block_rows < 1:
            raise ValueError("batch and block_rows must be at least 1")
        self.source, self.reader, self.readers, self.batch = source, reader, readers, batch
        self.seed, self.block_rows = seed, block_rows
        self._perms: dict[int, np.ndarray] = {}
        self._next_step: int | None = None
        self._rows: Iterator[dict[str, np.ndarray]] | None = None

    # Which shard the k-th shard of this reader is: position r + k*W of the endless epoch sequence.
    def _shard_of(self, k: int) -> tuple[int, int]:
        n = len(self.source.shards)
        position = self.reader + k * self.readers
        epoch = position // n
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(n)}
        return int(self._perms[epoch][position % n]), position

    def _blocks(self, rows: int, position: int) -> list[tuple[int, int, int]]:
        """(block index, lo, hi) of a shard in the order they are read at this sequence position."""
        count = -(-rows // self.block_rows)
        order = np.random.default_rng([self.seed, position, 1]).permutation(count)
        return [(int(b), int(b) * self.block_rows, min(rows, (int(b) + 1) * self.block_rows)) for b in order]

    def _stream(self, skip: int) -> Iterator[dict[str, np.ndarray]]:
        """Blocks of this reader's rows, in order, from its `skip`-th row on."""
        k, empty_run = 0, 0
        while True:
            index, position = self._shard_of(k)
            k += 1
            rows = self.source.count(index)
            if rows == 0:
                empty_run += 1
                if empty_run > len(self.source.shards):
                    raise DataError(f"every shard of {self.source.shards[0].parent} is empty")
                continue
            empty_run = 0
            if skip >= rows:
                skip -= rows
                continue
            reader = _reader(self.source, index)
            for block, lo, hi in self._blocks(rows, position):
                if skip >= hi - lo:
                    skip -= hi - lo
                    continue
                order = np.random.default_rng([self.seed, position, 2, block]).permutation(hi - lo)
                arrays = reader.read(lo, hi)
                yield {name: a[order[skip:]] for name, a in arrays.items()}
                skip = 0

    def batch_at(self, step: int) -> dict[str, np.ndarray]:
        """Rows [step*batch, (step+1)*batch) of this reader's stream; sequential calls read on, others seek."""
        if step != self._next_step:
            self._rows = self._stream(step * self.batch)
            self._pending: list[dict[str, np.ndarray]] = []
        need, parts = self.batch, []
        while need:
            chunk = self._pending.pop() if self._pending else next(self._rows)
            take = {k: v[:need] for k, v in chunk.items()}
            rest = {k: v[need:] for k, v in chunk.items()}
            got = len(take["input_ids"])
            parts.append(take)
            need -= got
            if len(rest["input_ids"]):
                self._pending.append(rest)
        self._next_step = step + 1
        return {name: np.concatenate([p[name] for p in parts]) for name in FIELDS}
