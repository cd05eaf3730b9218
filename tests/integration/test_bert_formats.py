"""workloads/bert/formats.py: the reference's hdf5 (fixed and variable length) and TFRecord shards, and ernie's
own format, read to the same examples and streamed in the same seeded order; bad shards named clearly.

The tests write each format themselves, as the references write them (h5py; tf.io.TFRecordWriter), at a tiny size.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from test_bert_data import _siblings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
h5py = pytest.importorskip("h5py")
data, formats = _siblings("data", "formats")

SEQ, PRED, SHARD_ROWS = 32, 5, 24


@pytest.fixture(scope="module")
def ernie_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ernie")
    data.make_synthetic(out, seq_len=SEQ, max_predictions=PRED, train_examples=4 * SHARD_ROWS, eval_examples=16,
                        examples_per_shard=SHARD_ROWS, seed=3)
    # Real rows end at their [SEP]: give each a padded tail, as real text has, so padding is read right.
    for shard in data.read_meta(out)["splits"]["train"]["shards"]:
        with np.load(out / shard) as archive:
            arrays = {k: archive[k] for k in archive.files}
        lengths = np.random.default_rng(0).integers(SEQ // 2, SEQ + 1, size=len(arrays["input_ids"]))
        tail = np.arange(SEQ)[None, :] >= lengths[:, None]
        for key in ("input_ids", "input_mask", "segment_ids"):
            arrays[key][tail] = 0
        keep = np.take_along_axis(~tail, arrays["masked_lm_positions"], 1) & (arrays["masked_lm_weights"] > 0)
        keep = np.cumprod(keep, axis=1).astype(bool)  # predictions stay a prefix
        arrays["masked_lm_positions"] *= keep
        arrays["masked_lm_ids"] *= keep
        arrays["masked_lm_weights"] *= keep
        np.savez(out / shard, **arrays)
    return out


def _shards(ernie_dir) -> list[dict[str, np.ndarray]]:
    meta = data.read_meta(ernie_dir)
    return [data._load_shard(ernie_dir / s, {"seq": SEQ, "pred": PRED}) for s in meta["splits"]["train"]["shards"]]


def write_hdf5_fixed(path, arrays):
    """As NVIDIA's/the PyTorch reference's create_pretraining_data writes: no masked_lm_weights, narrow ints."""
    with h5py.File(path, "w") as f:
        f.create_dataset("input_ids", data=arrays["input_ids"], dtype="i4")
        f.create_dataset("input_mask", data=arrays["input_mask"], dtype="i1")
        f.create_dataset("segment_ids", data=arrays["segment_ids"], dtype="i1")
        f.create_dataset("masked_lm_positions", data=arrays["masked_lm_positions"], dtype="i4")
        f.create_dataset("masked_lm_ids", data=arrays["masked_lm_ids"], dtype="i4")
        f.create_dataset("next_sentence_labels", data=arrays["next_sentence_labels"], dtype="i1")


def write_hdf5_variable(path, arrays):
    """As the reference's convert_fixed2variable.py writes: each row only its real tokens, no input_mask."""
    n = len(arrays["input_ids"])
    lengths = arrays["input_mask"].sum(1)
    preds = arrays["masked_lm_weights"].sum(1).astype(int)
    with h5py.File(path, "w") as f:
        for key, dtype, cut in (("input_ids", "int16", lengths), ("segment_ids", "int8", lengths),
                                ("masked_lm_positions", "int16", preds), ("masked_lm_ids", "int16", preds)):
            dataset = f.create_dataset(key, (n,), dtype=h5py.vlen_dtype(np.dtype(dtype)))
            for i in range(n):
                dataset[i] = arrays[key][i, : cut[i]].astype(dtype)
        f.create_dataset("next_sentence_labels", data=arrays["next_sentence_labels"], dtype="i1")


def write_tfrecord(path, arrays, drop=None, as_float=None):
    """As the TF reference's create_pretraining_data.py writes tf.train.Examples."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(len(arrays["input_ids"])):
            features = {}
            for key in ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids"):
                values = arrays[key][i].tolist()
                features[key] = (tf.train.Feature(float_list=tf.train.FloatList(value=values)) if key == as_float
                                 else tf.train.Feature(int64_list=tf.train.Int64List(value=values)))
            features["masked_lm_weights"] = tf.train.Feature(
                float_list=tf.train.FloatList(value=arrays["masked_lm_weights"][i].tolist()))
            features["next_sentence_labels"] = tf.train.Feature(
                int64_list=tf.train.Int64List(value=[int(arrays["next_sentence_labels"][i])]))
            features.pop(drop, None)
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())


WRITERS = {"hdf5-fixed": (write_hdf5_fixed, "part_{:05d}_of_00004.hdf5"),
           "hdf5-variable": (write_hdf5_variable, "part_{:05d}_of_00004.hdf5"),
           "tfrecord": (write_tfrecord, "part-{:05d}-of-00004")}


@pytest.fixture(scope="module")
def written(ernie_dir, tmp_path_factory):
    """The same four train shards in every format: {name: directory}."""
    out = {"ernie": ernie_dir}
    for name, (write, pattern) in WRITERS.items():
        directory = tmp_path_factory.mktemp(name)
        for i, arrays in enumerate(_shards(ernie_dir)):
            write(directory / pattern.format(i), arrays)
        out[name] = directory
    return out


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_format_reads_to_ernies_examples(written, name):
    source = formats.open_source(written[name], seq_len=SEQ, max_predictions=PRED)
    assert source.format == name.split("-")[0]
    assert (source.seq_len, source.max_predictions, source.examples) == (SEQ, PRED, 4 * SHARD_ROWS)
    expected = formats.read_examples(formats.open_source(written["ernie"]))
    got = formats.read_examples(source)
    for key, (dtype, _) in data.FIELDS.items():
        assert got[key].dtype == dtype, key
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert expected["input_mask"].sum() < expected["input_mask"].size  # padding was really there to derive


def test_formats_stream_the_same_batches_fixed_by_seed_and_step(written):
    def batches(name, seed, steps=7):
        source = formats.open_source(written[name], seq_len=SEQ, max_predictions=PRED)
        stream = formats.ShardStream(source, reader=1, readers=2, batch=10, seed=seed, block_rows=8)
        return [stream.batch_at(s) for s in range(steps)]

    reference = batches("ernie", seed=5)
    for name in WRITERS:
        for a, b in zip(reference, batches(name, seed=5)):
            for key in data.FIELDS:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name} {key}")
    other = batches("ernie", seed=6)
    assert any(not np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(reference, other))


def test_a_resumed_stream_continues_exactly(written):
    source = formats.open_source(written["hdf5-fixed"])
    run = formats.ShardStream(source, reader=0, readers=1, batch=9, seed=1, block_rows=5)
    straight = [run.batch_at(s) for s in range(20)]  # past one epoch of 96 examples
    resumed = formats.ShardStream(source, reader=0, readers=1, batch=9, seed=1, block_rows=5)
    for step in (13, 14, 15):
        np.testing.assert_array_equal(resumed.batch_at(step)["input_ids"], straight[step]["input_ids"])


def test_readers_split_the_shards_and_together_read_each_example_once(written):
    source = formats.open_source(written["tfrecord"])
    seen = []
    for reader in range(2):
        stream = formats.ShardStream(source, reader=reader, readers=2, batch=SHARD_ROWS, seed=2, block_rows=7)
        seen.append(np.concatenate([stream.batch_at(s)["input_ids"] for s in range(2)]))  # two shards each
    everything = formats.read_examples(source)["input_ids"]
    mine = [{r.tobytes() for r in rows} for rows in seen]
    assert not mine[0] & mine[1]
    assert mine[0] | mine[1] == {r.tobytes() for r in everything}


def test_memory_is_one_block_whatever_the_shard_size(written, monkeypatch):
    source = formats.open_source(written["hdf5-variable"])
    reads = []
    original = formats._Hdf5Shard.read

    def spy(self, lo, hi):
        reads.append(hi - lo)
        return original(self, lo, hi)

    monkeypatch.setattr(formats._Hdf5Shard, "read", spy)
    stream = formats.ShardStream(source, reader=0, readers=1, batch=6, seed=0, block_rows=4)
    for step in range(30):
        stream.batch_at(step)
    assert reads and max(reads) <= 4
    assert sum(reads) <= 30 * 6 + 4


# ---------------------------------------------------------------------------------------------- bad input


def _one_shard(written):
    return _shards(written["ernie"])[0]


def test_hdf5_with_a_missing_key_wrong_shape_or_dtype_is_named(written, tmp_path):
    arrays = _one_shard(written)
    path = tmp_path / "bad.hdf5"
    write_hdf5_fixed(path, arrays)
    with h5py.File(path, "a") as f:
        del f["segment_ids"]
    with pytest.raises(data.DataError, match=r"bad.hdf5 lacks the key 'segment_ids'"):
        formats.read_examples(formats.open_source(path))

    write_hdf5_fixed(path, arrays)
    with h5py.File(path, "a") as f:
        del f["masked_lm_ids"]
        f.create_dataset("masked_lm_ids", data=arrays["masked_lm_ids"][:, :3])
    with pytest.raises(data.DataError, match=r"bad.hdf5: masked_lm_ids is int32\[24, 3\], expected integer \[N, 5\]"):
        formats.read_examples(formats.open_source(path))

    write_hdf5_fixed(path, arrays)
    with h5py.File(path, "a") as f:
        del f["input_mask"]
        f.create_dataset("input_mask", data=arrays["input_mask"].astype(np.float32))
    with pytest.raises(data.DataError, match=r"bad.hdf5: input_mask is float32\[24, 32\], expected integer"):
        formats.read_examples(formats.open_source(path))


def test_tfrecord_with_a_missing_or_mistyped_feature_is_named(written, tmp_path):
    arrays = _one_shard(written)
    path = tmp_path / "bad-00000-of-00001"
    write_tfrecord(path, arrays, drop="masked_lm_weights")
    with pytest.raises(data.DataError, match=r"bad-00000-of-00001, record 0 lacks the feature 'masked_lm_weights'"):
        formats.read_examples(formats.open_source(path, "tfrecord"))
    write_tfrecord(path, arrays, as_float="segment_ids")
    with pytest.raises(data.DataError, match=r"record 0: segment_ids is float32\[32\], expected int64\[32\]"):
        formats.read_examples(formats.open_source(path, "tfrecord"))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(data.DataError, match=r"bad-00000-of-00001 is truncated"):
        formats.open_source(path, "tfrecord").examples


def test_shapes_that_differ_from_the_run_and_unknown_formats_are_refused(written):
    with pytest.raises(data.DataError, match=r"seq len is 32, the run expects 128"):
        formats.open_source(written["tfrecord"], seq_len=128)
    with pytest.raises(data.DataError, match=r"unknown data format 'parquet'"):
        formats.open_source(written["tfrecord"], "parquet")
    with pytest.raises(data.DataError, match=r"no hdf5 shards at"):
        formats.open_source(written["tfrecord"] / "nothing-*", "hdf5")


def test_an_eval_set_made_with_another_vocab_is_named(written):
    arrays = formats.read_examples(formats.open_source(written["ernie"]))
    formats.check_vocab(arrays, vocab_size=30522, cls_id=data.CLS_ID, where="eval")  # ours passes
    with pytest.raises(data.DataError, match=r"eval: input_ids holds id \d+, past the model's vocab of 2000"):
        formats.check_vocab(arrays, vocab_size=2000, cls_id=data.CLS_ID, where="eval")
    with pytest.raises(data.DataError, match=r"do not start with \[CLS\] \(id 2\): it was made with another vocab"):
        formats.check_vocab(arrays, vocab_size=30522, cls_id=2, where="eval")
