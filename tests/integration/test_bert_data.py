"""The shared BERT modules (workloads/bert/): data format and prep, presets, FLOPs, MLPerf logging, result.json."""

from __future__ import annotations

import importlib
import io
import json
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

BERT_DIR = Path(__file__).resolve().parents[2] / "workloads" / "bert"
PYTHON = sys.executable


def _siblings(*names: str):
    """Import workloads/bert modules as the trainers do (the directory on sys.path), without leaving them in
    sys.modules, where another workload's module of the same name (results, mlperf) may live."""
    stems = {p.stem for p in BERT_DIR.glob("*.py")}
    saved = {n: sys.modules.pop(n) for n in stems if n in sys.modules}
    sys.path.insert(0, str(BERT_DIR))
    try:
        modules = [importlib.import_module(n) for n in names]
    finally:
        sys.path.remove(str(BERT_DIR))
        for n in stems:
            sys.modules.pop(n, None)
        sys.modules.update(saved)
    for module in modules:
        assert Path(module.__file__).parent == BERT_DIR, f"{module.__name__} resolved to {module.__file__}"
    return modules


data, flops, mlperf, presets, results, corpus = _siblings("data", "flops", "mlperf", "presets", "results", "corpus")


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "stdlib.txt"
    assert corpus.write_corpus(path, max_documents=80) == 80
    return path


@pytest.fixture(scope="module")
def prepared(corpus_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    data.prepare([corpus_file], out, seq_len=128, max_predictions=20, seed=7)
    return out


def _restored(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """input_ids with the original tokens put back at the masked positions."""
    tokens = arrays["input_ids"].copy()
    rows, cols = np.nonzero(arrays["masked_lm_weights"])
    tokens[rows, arrays["masked_lm_positions"][rows, cols]] = arrays["masked_lm_ids"][rows, cols]
    return tokens


# ---------------------------------------------------------------------------------------------- prep


def test_prep_is_deterministic_for_a_seed(corpus_file, prepared, tmp_path):
    again = tmp_path / "again"
    other_seed = tmp_path / "other"
    data.prepare([corpus_file], again, seq_len=128, max_predictions=20, seed=7)
    data.prepare([corpus_file], other_seed, seq_len=128, max_predictions=20, seed=8)
    for split in data.SPLITS:
        first, second = data.load_split(prepared, split), data.load_split(again, split)
        for field in data.FIELDS:
            np.testing.assert_array_equal(first[field], second[field], err_msg=f"{split}/{field}")
        for shard in data.read_meta(prepared)["splits"][split]["shards"]:
            assert (prepared / shard).read_bytes() == (again / shard).read_bytes()
    assert not np.array_equal(
        data.load_split(prepared, "train")["input_ids"][:50], data.load_split(other_seed, "train")["input_ids"][:50]
    )


def test_examples_have_the_documented_layout(prepared):
    meta = data.read_meta(prepared)
    assert meta["format"] == "ernie-bert-v1" and meta["vocab_size"] == 30522 and len(meta["vocab_sha256"]) == 64
    arrays = data.load_split(prepared, "train")
    n = meta["splits"]["train"]["examples"]
    assert n > 300
    for field, (dtype, dim) in data.FIELDS.items():
        width = {"seq": 128, "pred": 20, None: None}[dim]
        assert arrays[field].dtype == dtype
        assert arrays[field].shape == ((n,) if width is None else (n, width))
    lengths = arrays["input_mask"].sum(axis=1)
    ids, seg = arrays["input_ids"], arrays["segment_ids"]
    for row in range(n):
        length = lengths[row]
        assert arrays["input_mask"][row, :length].all() and not arrays["input_mask"][row, length:].any()
        assert not ids[row, length:].any() and not seg[row, length:].any(), "padding must be 0"
        restored = _restored({k: v[row : row + 1] for k, v in arrays.items()})[0]
        assert restored[0] == data.CLS_ID and restored[length - 1] == data.SEP_ID
        a_end = int(np.argmax(seg[row, :length])) - 1  # the [SEP] closing segment A
        assert restored[a_end] == data.SEP_ID and (restored[:length] == data.SEP_ID).sum() == 2
        assert (seg[row, 1 : a_end + 1] == 0).all() and (seg[row, a_end + 1 : length] == 1).all()
        real = arrays["masked_lm_weights"][row] == 1.0
        n_pred = int(real.sum())
        assert n_pred == min(20, max(1, round(length * 0.15))), "15% of the tokens, at most max_predictions"
        assert real[:n_pred].all(), "real predictions come first, padding after"
        positions = arrays["masked_lm_positions"][row, :n_pred]
        assert (np.diff(positions) > 0).all() and positions.max() < length
        assert not np.isin(restored[positions], [data.CLS_ID, data.SEP_ID]).any(), "never predict [CLS]/[SEP]"
        assert not arrays["masked_lm_positions"][row, n_pred:].any() and not arrays["masked_lm_ids"][row, n_pred:].any()


def test_masking_follows_80_10_10(prepared):
    arrays = data.load_split(prepared, "train")
    rows, cols = np.nonzero(arrays["masked_lm_weights"])
    shown = arrays["input_ids"][rows, arrays["masked_lm_positions"][rows, cols]]
    original = arrays["masked_lm_ids"][rows, cols]
    total = len(rows)
    assert total > 5000
    masked = np.mean(shown == data.MASK_ID)
    kept = np.mean(shown == original)
    replaced = np.mean((shown != data.MASK_ID) & (shown != original))
    assert abs(masked - 0.8) < 0.02, masked
    assert abs(kept - 0.1) < 0.015, kept
    assert abs(replaced - 0.1) < 0.015, replaced
    # Tokens outside the predictions are never corrupted: no [MASK] anywhere else.
    unmasked = arrays["input_ids"].copy()
    unmasked[rows, arrays["masked_lm_positions"][rows, cols]] = 0
    assert not (unmasked == data.MASK_ID).any()


def test_next_sentence_labels_match_where_segment_b_comes_from(corpus_file, prepared):
    """IsNext pairs take A and B from one document; random pairs take B from another one."""
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(str(data.default_vocab_file()), lowercase=True)
    docs_of: dict[tuple[int, ...], set[int]] = {}
    for index, doc in enumerate(data.read_documents([corpus_file])):
        stream = [t for e in tokenizer.encode_batch(doc, add_special_tokens=False) for t in e.ids]
        for k in range(len(stream) - 3):
            docs_of.setdefault(tuple(stream[k : k + 4]), set()).add(index)

    def source_docs(segment: np.ndarray) -> set[int]:
        found = [docs_of.get(tuple(segment[k : k + 4]), set()) for k in range(len(segment) - 3)]
        return set.intersection(*found) if found else set()

    arrays = data.load_split(prepared, "train")
    labels = arrays["next_sentence_labels"]
    assert set(np.unique(labels)) == {data.IS_NEXT, data.RANDOM_NEXT}
    assert 0.4 < labels.mean() < 0.75, "about half random (more for one-sentence chunks, as in Google's prep)"
    tokens = _restored(arrays)
    outcome = {data.IS_NEXT: [], data.RANDOM_NEXT: []}
    for row in range(len(labels)):
        length = arrays["input_mask"][row].sum()
        a_end = int(np.argmax(arrays["segment_ids"][row, :length])) - 1
        a, b = tokens[row, 1:a_end], tokens[row, a_end + 1 : length - 1]
        if len(a) >= 4 and len(b) >= 4:
            outcome[int(labels[row])].append(bool(source_docs(a) & source_docs(b)))
    assert all(outcome[data.IS_NEXT]), "an IsNext pair's halves come from one document"
    assert np.mean(outcome[data.RANDOM_NEXT]) < 0.05, "a random pair's B comes from another document"


def test_eval_split_holds_out_whole_documents(prepared):
    meta = data.read_meta(prepared)
    assert meta["documents"]["eval"] >= 1 and meta["documents"]["train"] > meta["documents"]["eval"]
    train = {tuple(r) for r in _restored(data.load_split(prepared, "train"))[:, 1:12]}
    evals = {tuple(r) for r in _restored(data.load_split(prepared, "eval"))[:, 1:12]}
    assert len(train & evals) <= 1


def test_synthetic_data_has_the_same_format(tmp_path):
    meta = data.make_synthetic(tmp_path, seq_len=64, max_predictions=10, train_examples=300, eval_examples=40)
    assert meta["synthetic"] and meta["splits"]["train"]["examples"] == 300
    arrays = data.load_split(tmp_path, "train")
    assert arrays["input_ids"].shape == (300, 64) and arrays["masked_lm_ids"].shape == (300, 10)
    assert arrays["input_mask"].all(), "synthetic sequences are full length"
    assert (arrays["input_ids"][:, 0] == data.CLS_ID).all()
    tokens = _restored(arrays)
    assert ((tokens == data.SEP_ID).sum(axis=1) == 2).all()
    assert (arrays["masked_lm_weights"].sum(axis=1) == 10).all()
    positions = arrays["masked_lm_positions"]
    assert (np.diff(positions, axis=1) > 0).all()
    assert not np.isin(np.take_along_axis(tokens, positions, axis=1), [data.CLS_ID, data.SEP_ID]).any()
    again = tmp_path / "again"
    data.make_synthetic(again, seq_len=64, max_predictions=10, train_examples=300, eval_examples=40)
    np.testing.assert_array_equal(arrays["input_ids"], data.load_split(again, "train")["input_ids"])


def test_shards_split_at_examples_per_shard(corpus_file, tmp_path):
    meta = data.prepare([corpus_file], tmp_path, seq_len=64, max_predictions=10, examples_per_shard=200, seed=3)
    shards = meta["splits"]["train"]["shards"]
    assert len(shards) > 1 and shards[0] == "train-00000.npz"
    assert len(data.load_split(tmp_path, "train")["input_ids"]) == meta["splits"]["train"]["examples"]


def test_default_vocab_is_bert_base_uncased():
    vocab = data.default_vocab_file().read_text().splitlines()
    assert len(vocab) == 30522
    assert [vocab[i] for i in (data.PAD_ID, data.UNK_ID, data.CLS_ID, data.SEP_ID, data.MASK_ID)] == [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
    ]


# ---------------------------------------------------------------------------------------------- bad input


def test_missing_data_dir_says_how_to_prepare(tmp_path):
    with pytest.raises(data.DataError, match=r"does not exist: prepare it with `python prep_data.py"):
        data.load_split(tmp_path / "nope", "train")
    with pytest.raises(data.DataError, match="has no meta.json"):
        data.load_split(tmp_path, "train")


def test_corrupt_or_wrong_shards_are_named(prepared, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(prepared, broken)
    shard = broken / "train-00000.npz"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(data.DataError, match=r"shard .*train-00000.npz is corrupt"):
        data.load_split(broken, "train")

    arrays = data.load_split(prepared, "train")
    np.savez(shard, **{**arrays, "input_ids": arrays["input_ids"].astype(np.int64)})
    with pytest.raises(data.DataError, match=r"input_ids is int64\[.*expected int32"):
        data.load_split(broken, "train")

    np.savez(shard, **{k: v for k, v in arrays.items() if k != "masked_lm_weights"})
    with pytest.raises(data.DataError, match="lacks the field 'masked_lm_weights'"):
        data.load_split(broken, "train")

    np.savez(shard, **{k: v[:10] for k, v in arrays.items()})
    with pytest.raises(data.DataError, match="incomplete"):
        data.load_split(broken, "train")

    shard.unlink()
    with pytest.raises(data.DataError, match=r"shard .*train-00000.npz is missing"):
        data.load_split(broken, "train")

    (broken / "meta.json").write_text("{not json")
    with pytest.raises(data.DataError, match="not valid JSON"):
        data.read_meta(broken)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        data.load_split(prepared, "test")


def test_prep_cli_rejects_bad_input_clearly(tmp_path):
    def prep(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "prep_data.py", *args], cwd=BERT_DIR, capture_output=True, text=True)

    missing = prep("--input", str(tmp_path / "none.txt"), "--out", str(tmp_path / "o"))
    assert missing.returncode != 0 and "none.txt does not exist" in missing.stderr
    assert not (tmp_path / "o" / "meta.json").exists()
    one_doc = tmp_path / "one.txt"
    one_doc.write_text("Just one document.\nWith two sentences.\n")
    single = prep("--input", str(one_doc), "--out", str(tmp_path / "o"))
    assert single.returncode != 0 and "at least 2 are needed" in single.stderr
    bad_len = prep("--synthetic", "--out", str(tmp_path / "o"), "--seq-len", "0")
    assert bad_len.returncode != 0 and "--seq-len must be positive" in bad_len.stderr
    ok = prep("--synthetic", "--out", str(tmp_path / "s"), "--seq-len", "32", "--max-predictions", "5",
              "--train-examples", "64", "--eval-examples", "16")
    assert ok.returncode == 0, ok.stderr
    assert data.read_meta(tmp_path / "s")["splits"]["eval"]["examples"] == 16


# ---------------------------------------------------------------------------------------------- presets, FLOPs


def test_unknown_preset_lists_the_known_ones():
    assert presets.get_preset("large").hidden == 1024
    with pytest.raises(ValueError, match="unknown preset 'huge': choose one of tiny, mini, base, large"):
        presets.get_preset("huge")


def test_flops_and_parameters_match_the_reference_figures():
    base, large = presets.get_preset("base"), presets.get_preset("large")
    assert flops.encoder_parameters(base) == 85_054_464  # REFERENCE.md: 85.05M
    assert round(flops.encoder_parameters(large) / 1e6, 2) == 302.31
    assert round(flops.flops_per_sequence(base, 128, 20) / 1e9) == 70
    assert round(flops.flops_per_sequence(large, 128, 20) / 1e9) == 241
    assert round(flops.flops_per_sequence(large, 512, 76) / 1e9) == 1021
    # BertModel (with pooler) has 109,482,240 parameters; the heads add the MLM transform, decoder bias, NSP.
    assert flops.parameter_count(base) == 109_482_240 + (768 * 768 + 768 + 2 * 768) + 30522 + (2 * 768 + 2)


def test_peak_flops_are_known_or_none():
    assert flops.peak_flops_for("NVIDIA H100 80GB HBM3") == 989e12
    assert flops.peak_flops_for("NVIDIA A100-SXM4-40GB") == 312e12
    assert flops.peak_flops_for("Tesla V100-SXM2-16GB") == 125e12
    assert flops.peak_flops_for("TPU v5 lite") == 197e12
    assert flops.peak_flops_for("TPU v4") == 275e12
    assert flops.peak_flops_for("NVIDIA H100 PCIe") is None
    assert flops.peak_flops_for("AMD EPYC 7B13 64-Core Processor") is None


# ---------------------------------------------------------------------------------------------- logs, results


def test_mlperf_logger_writes_rank_zero_only(tmp_path):
    from mlperf_logging.compliance_checker.mlp_parser import parse_file

    quiet = mlperf.MLPerfLogger(tmp_path / "rank1", rank=1)
    quiet.event("global_batch_size", 32)
    quiet.close()
    assert not (tmp_path / "rank1").exists()

    logger = mlperf.MLPerfLogger(tmp_path, rank=0)
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        logger.submission(platform="1xcpu")
        logger.tracked_stats(5, loss=2.5)
    logger.close()
    lines = (tmp_path / "mlperf.log").read_text().splitlines()
    assert all(line.startswith(":::MLLOG ") for line in lines) and len(lines) == 7
    parsed, errors = parse_file(str(tmp_path / "mlperf.log"), ruleset="4.1.0")
    assert not errors
    stats = [p for p in parsed if p.key == "tracked_stats"][0]
    assert stats.value["value"] == {"loss": 2.5} and stats.value["metadata"]["step"] == 5
    assert stats.value["metadata"]["file"] == __file__, "file/lineno name the caller, not the wrapper"


def test_result_json_has_exactly_the_documented_fields(tmp_path):
    step_times = [5.0, 3.0] + [0.1] * 9 + [0.2]
    throughput = results.summarize_steps(step_times, warmup_steps=2, global_batch_size=32, seq_len=128)
    assert throughput.timed_steps == 10
    assert throughput.samples_per_s == pytest.approx(320 / 1.1)
    assert throughput.step_time_ms_p50 == pytest.approx(100.0)
    with pytest.raises(ValueError, match="no timed steps"):
        results.summarize_steps([1.0], warmup_steps=2, global_batch_size=32, seq_len=128)
    tiny = presets.get_preset("tiny")
    written = results.write_result(
        tmp_path / "result.json", workload="bert-torch", framework="pytorch", framework_version="2.13.0",
        preset=tiny, params=flops.parameter_count(tiny), accelerator="gpu", device_name="NVIDIA H100 80GB HBM3",
        chips=2, hosts=1, global_batch_size=32, seq_len=128, max_predictions=20, precision="bf16", steps=12,
        throughput=throughput, peak_flops_per_device=989e12, eval_value=0.5, eval_target=0.72,
        time_to_target_s=None, train_time_s=9.1, versions={"torch": "2.13.0"}, command="python train_torch.py",
    )
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk == written
    documented = {
        "workload", "framework", "framework_version", "model", "accelerator", "device_name", "chips", "hosts",
        "global_batch_size", "seq_len", "max_predictions", "precision", "steps", "timed_steps", "samples_per_s",
        "tokens_per_s", "words_per_s", "step_time_ms_p50", "step_time_ms_p90", "flops_per_sample",
        "peak_flops_per_device", "mfu", "eval", "time_to_target_s", "train_time_s", "versions", "command",
        "settings",  # docs/workloads.md: what a framework comparison must hold equal (None when not recorded)
    }
    assert set(on_disk) == documented
    assert set(on_disk["model"]) == {"preset", "hidden", "layers", "heads", "intermediate", "vocab", "params"}
    expected_mfu = throughput.samples_per_s * flops.flops_per_sequence(tiny, 128, 20) / (989e12 * 2)
    assert on_disk["mfu"] == pytest.approx(expected_mfu)
    assert on_disk["eval"] == {"metric": "masked_lm_accuracy", "value": 0.5, "target": 0.72, "reached": False}
    assert on_disk["versions"]["python"] and on_disk["versions"]["image"] is None
    assert results.mfu(100.0, 1e9, None, 1) is None
