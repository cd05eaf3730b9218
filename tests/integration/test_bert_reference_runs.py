"""train_torch.py and train_tf.py (Keras on TensorFlow and on JAX) on the reference's inputs, at the tiny size:
hdf5 and TFRecord shards give the same batches, the TF1 checkpoint is loaded and evaluated at 0 samples, the clock
starts before the data is read, and the division in the log and result.json follows what the run really used
(open here, with the reasons)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_bert_checkpoint import reference_variables, write_tf1_checkpoint
from test_bert_data import _siblings
from test_bert_formats import write_hdf5_fixed, write_hdf5_variable, write_tfrecord

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
(data,) = _siblings("data")
BERT_DIR = Path(__file__).resolve().parents[2] / "workloads" / "bert"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
SEQ, PRED = 32, 5


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """ernie's synthetic data, its train shards rewritten as hdf5 and TFRecord, its eval split as an hdf5 eval
    set (variable length, as the reference's), and a tiny TF1 checkpoint."""
    root = tmp_path_factory.mktemp("reference-inputs")
    data.make_synthetic(root / "ernie", seq_len=SEQ, max_predictions=PRED, train_examples=64, eval_examples=24,
                        examples_per_shard=16, seed=5)
    meta = data.read_meta(root / "ernie")
    for name, write, pattern in (("hdf5", write_hdf5_fixed, "part_{:05d}.hdf5"), ("tfrecord", write_tfrecord, "part-{:05d}")):
        (root / name).mkdir()
        for i, shard in enumerate(meta["splits"]["train"]["shards"]):
            write(root / name / pattern.format(i), data._load_shard(root / "ernie" / shard, {"seq": SEQ, "pred": PRED}))
    (root / "eval").mkdir()
    write_hdf5_variable(root / "eval" / "eval_10k.hdf5", data.load_split(root / "ernie", "eval"))
    write_tf1_checkpoint(root / "ckpt" / "model.ckpt-28252", reference_variables())
    return root


def _train(out, *flags):
    cmd = [sys.executable, "train_torch.py", "--preset", "tiny", "--out", str(out), "--global-batch", "8",
           "--max-steps", "4", "--optimizer", "lamb", "--lr", "1e-3", "--warmup-steps", "1", "--log-every", "1",
           "--eval-every", "4", "--timing-warmup", "1", "--precision", "fp32", *flags]
    proc = subprocess.run(cmd, cwd=BERT_DIR, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line.split(":::MLLOG ", 1)[1]) for line in (out / "mlperf.log").read_text().splitlines()]
    return records, json.loads((out / "result.json").read_text()), proc.stdout


def _keys(records):
    return [r["key"] for r in records]


def test_reference_formats_train_on_the_same_batches_from_the_checkpoint(inputs, tmp_path):
    runs = {}
    for name in ("hdf5", "tfrecord"):
        runs[name] = _train(tmp_path / name, "--data-dir", str(inputs / name), "--eval-data", str(inputs / "eval"),
                            "--init-checkpoint", str(inputs / "ckpt" / "model.ckpt-28252"))
    losses = {name: [r["value"]["loss"] for r in records if r["key"] == "tracked_stats"]
              for name, (records, _, _) in runs.items()}
    assert len(losses["hdf5"]) == 4 and losses["hdf5"] == losses["tfrecord"]

    records, result, stdout = runs["hdf5"]
    keys = _keys(records)
    # The checkpoint's own accuracy is logged at 0 samples, before any training block.
    first_eval = next(r for r in records if r["key"] == "eval_accuracy")
    assert first_eval["metadata"]["epoch_num"] == 0 and keys.index("eval_accuracy") < keys.index("block_start")
    # The clock starts before the data: train_samples (samples trained) comes at the end, once.
    assert keys.index("run_start") < keys.index("train_samples") < keys.index("run_stop")
    assert next(r["value"] for r in records if r["key"] == "train_samples") == 4 * 8
    assert next(r["value"] for r in records if r["key"] == "eval_samples") == 24
    # Reference formats and checkpoint, but a tiny model, seq 32 and a 24-sample eval set: open, and it says why.
    assert next(r["value"] for r in records if r["key"] == "submission_division") == "open"
    kinds = [d.split(":")[0] for d in result["mlperf"]["differences"]]
    assert result["mlperf"]["division"] == "open" and "checkpoint" not in kinds
    assert {"data", "eval set", "model"} <= set(kinds)
    assert "open: checkpoint" not in stdout and "open: model: preset tiny" in stdout


def test_a_run_on_ernies_own_data_is_open_and_says_why(inputs, tmp_path):
    records, result, _ = _train(tmp_path / "ernie", "--data-dir", str(inputs / "ernie"))
    assert next(r["value"] for r in records if r["key"] == "submission_division") == "open"
    kinds = [d.split(":")[0] for d in result["mlperf"]["differences"]]
    assert kinds[:3] == ["data", "eval set", "checkpoint"]
    assert result["mlperf"]["ruleset"] == "5.0.0"
    assert all(r["metadata"]["epoch_num"] > 0 for r in records if r["key"] == "eval_accuracy")  # no checkpoint: no eval at 0


def test_bad_reference_inputs_are_named_before_training(inputs, tmp_path):
    def error(*flags):
        proc = subprocess.run([sys.executable, "train_torch.py", "--preset", "tiny", "--out", str(tmp_path / "x"),
                               *flags], cwd=BERT_DIR, env=ENV, capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0
        return proc.stderr

    assert "--eval-data is needed with hdf5 training data" in error("--data-dir", str(inputs / "hdf5"))
    assert "nowhere.ckpt.index does not exist" in error("--data-dir", str(inputs / "ernie"), "--init-checkpoint",
                                                        str(inputs / "nowhere.ckpt"))
    other_vocab = tmp_path / "other-vocab.hdf5"
    arrays = data.load_split(inputs / "ernie", "eval")
    arrays["input_ids"][:, 0] = 2  # another vocab's [CLS]
    write_hdf5_fixed(other_vocab, arrays)
    assert "made with another vocab" in error("--data-dir", str(inputs / "hdf5"), "--eval-data", str(other_vocab),
                                              "--max-steps", "2")


def _train_keras(out, *flags):
    """train_tf.py at _train's recipe: Keras on TensorFlow, or on JAX with `--backend jax` among the flags."""
    cmd = [sys.executable, "train_tf.py", "--preset", "tiny", "--out", str(out), "--global-batch", "8",
           "--max-steps", "4", "--optimizer", "lamb", "--lr", "1e-3", "--warmup-steps", "1", "--log-every", "1",
           "--eval-every", "4", "--timing-warmup", "1", "--precision", "fp32", "--dropout", "0", *flags]
    proc = subprocess.run(cmd, cwd=BERT_DIR, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line.split(":::MLLOG ", 1)[1]) for line in (out / "mlperf.log").read_text().splitlines()]
    return records, json.loads((out / "result.json").read_text())


def test_keras_reads_the_reference_inputs_as_pytorch_does(inputs, tmp_path):
    """From the same checkpoint on the same batch, the first step's loss (before any update) is the same in every
    framework, hdf5 and TFRecord give Keras the same run, and Keras on JAX (the batch split over 2 devices) trains
    as Keras on TensorFlow does; the log opens as PyTorch's does."""
    reference = ("--eval-data", str(inputs / "eval"), "--init-checkpoint", str(inputs / "ckpt" / "model.ckpt-28252"))
    keras_runs = {name: _train_keras(tmp_path / f"tf-{name}", "--data-dir", str(inputs / name), *reference)
                  for name in ("hdf5", "tfrecord")}
    jax_records, jax_result = _train_keras(tmp_path / "jax", "--backend", "jax", "--cpu-devices", "2",
                                           "--data-dir", str(inputs / "hdf5"), *reference)
    torch_records, _, _ = _train(tmp_path / "torch", "--data-dir", str(inputs / "hdf5"), "--dropout", "0", *reference)

    def losses(records):
        return [r["value"]["loss"] for r in records if r["key"] == "tracked_stats"]

    hdf5, tfrecord = (losses(keras_runs[name][0]) for name in ("hdf5", "tfrecord"))
    assert len(hdf5) == 4 and hdf5 == pytest.approx(tfrecord, abs=1e-5)
    # Before any update the two backends agree to float rounding; after a few LAMB steps, to XLA's reduction order.
    assert losses(jax_records)[0] == pytest.approx(hdf5[0], abs=1e-5)
    assert losses(jax_records) == pytest.approx(hdf5, abs=1e-3)
    assert hdf5[0] == pytest.approx(losses(torch_records)[0], abs=2e-3)
    # The checkpoint's accuracy at 0 samples is the same figure in all three.
    first = [next(r for r in records if r["key"] == "eval_accuracy")
             for records in (keras_runs["hdf5"][0], jax_records, torch_records)]
    assert [f["metadata"]["epoch_num"] for f in first] == [0, 0, 0]
    assert first[0]["value"] == pytest.approx(first[1]["value"], abs=1e-6)
    assert first[0]["value"] == pytest.approx(first[2]["value"], abs=1e-6)
    for records, result in (keras_runs["hdf5"], (jax_records, jax_result)):
        keys = _keys(records)
        assert keys.index("run_start") < keys.index("train_samples") < keys.index("run_stop")
        assert next(r["value"] for r in records if r["key"] == "train_samples") == 4 * 8
        assert next(r["value"] for r in records if r["key"] == "submission_division") == "open"
        assert result["mlperf"]["division"] == "open" and "checkpoint" not in " ".join(result["mlperf"]["differences"])
    assert (jax_result["framework"], jax_result["chips"]) == ("jax", 2)
