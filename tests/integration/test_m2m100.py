"""M2M-100 generation as a host runs it (`python run.py --recipe m2m100 ...`), on a tiny randomly initialised model of
M2M-100's kind (fairseq transformer, pre-norm, shared embeddings, translation_multi_simple_epoch with language tokens)
and a sentencepiece model trained on the fly: two language pairs generate, the figures reach result.json and the
report; bad input (unknown pair, missing dev file, dictionary or checkpoint, a published model on a CPU) is named
before anything runs."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import sacrebleu
import sentencepiece as spm

from ernie.report.tables import runs_table
from ernie.results import read_run, summarize

WORKLOAD = Path(__file__).resolve().parents[2] / "workloads" / "translation"
RECORDED_RUN = Path(__file__).parents[1] / "data" / "runs" / "20261128-105500-translation-b21d"
PAIRS = ("de-fr", "en-zh")
# A few sentences per language, the same meaning line by line (FLORES-style): what the dev set looks like.
DEV = {
    "de": ["Der Hund läuft schnell.", "Das Haus ist groß.", "Wir essen Brot.", "Es regnet heute."],
    "fr": ["Le chien court vite.", "La maison est grande.", "Nous mangeons du pain.", "Il pleut aujourd'hui."],
    "en": ["The dog runs fast.", "The house is big.", "We eat bread.", "It rains today."],
    "zh": ["狗跑得很快。", "房子很大。", "我们吃面包。", "今天下雨。"],
}


def _m2m100() -> types.ModuleType:
    """m2m100.py imported as the workload imports it (flat, from its directory), without leaving its siblings in
    sys.modules, where another workload's same-named modules (mlperf, results) live."""
    own = {p.stem for p in WORKLOAD.glob("*.py")}
    saved = {name: sys.modules.pop(name) for name in own if name in sys.modules}
    sys.path.insert(0, str(WORKLOAD))
    try:
        return importlib.import_module("m2m100")
    finally:
        sys.path.remove(str(WORKLOAD))
        for name in own:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


m2m100 = _m2m100()


def _tiny_checkpoint(assets: Path) -> Path:
    """A randomly initialised model as fairseq builds M2M-100's, saved as a fairseq checkpoint."""
    sys.modules.setdefault("tensorflow", None)  # fairseq imports tensorboard, which would import TensorFlow
    from fairseq import checkpoint_utils, options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    (assets / "empty").mkdir(exist_ok=True)
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(assets / "empty"), "--task", "translation_multi_simple_epoch", "--arch", "transformer",
        "--lang-pairs", str(assets / m2m100.LANG_PAIRS), "--encoder-langtok", "src", "--decoder-langtok",
        "--fixed-dictionary", str(assets / m2m100.MODEL_DICT), "--share-all-embeddings",
        "--encoder-normalize-before", "--decoder-normalize-before", "--encoder-layers", "2", "--decoder-layers", "2",
        "--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
        "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
        "--cpu", "--seed", "1",
    ])
    cfg = convert_namespace_to_omegaconf(args)
    model = tasks.setup_task(cfg.task).build_model(cfg.model)
    path = assets / "tiny_m2m100.pt"
    checkpoint_utils.torch_persistent_save(
        {"cfg": cfg, "model": model.state_dict(), "args": None, "extra_state": {}, "last_optimizer_state": None,
         "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": "Adam",
                                "lr_scheduler_state": {}, "num_updates": 0}]}, str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """M2M-100's files in miniature: sentencepiece model, both dictionaries, every pair of its 100 languages, a
    checkpoint; a dev set; and a $SACREBLEU whose FLORES-101 tokenizer model is the tiny one (nothing fetched)."""
    root = tmp_path_factory.mktemp("m2m100")
    assets, dev, sacrebleu_dir = root / "assets", root / "dev", root / "sacrebleu"
    for d in (assets, dev, sacrebleu_dir / "models"):
        d.mkdir(parents=True)
    for lang, lines in DEV.items():
        (dev / f"dev.{lang}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    corpus = root / "corpus.txt"
    corpus.write_text("".join(line + "\n" for lines in DEV.values() for line in lines) * 5, encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(assets / "spm.128k"), vocab_size=120,
                                   model_type="bpe", character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
    processor = spm.SentencePieceProcessor(model_file=str(assets / m2m100.SPM_MODEL))
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())
              if not (processor.is_control(i) or processor.is_unknown(i))]
    for name in (m2m100.DATA_DICT, m2m100.MODEL_DICT):
        (assets / name).write_text("".join(f"{p} 1\n" for p in pieces), encoding="utf-8")
    langs = sorted(m2m100.LANGUAGES)
    (assets / m2m100.LANG_PAIRS).write_text(",".join(f"{a}-{b}" for a in langs for b in langs if a != b) + "\n")
    shutil.copy(assets / m2m100.SPM_MODEL, sacrebleu_dir / "models" / Path(m2m100.FLORES_SPM_URL).name)
    return {"assets": assets, "dev": dev, "sacrebleu": sacrebleu_dir, "checkpoint": _tiny_checkpoint(assets)}


def _run(tiny: dict[str, Path], out: Path, *extra: str, model: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERNIE_")}
    env.update(OMP_NUM_THREADS="1", SACREBLEU=str(tiny["sacrebleu"]))
    return subprocess.run(
        [sys.executable, "run.py", "--recipe", "m2m100", "--m2m-model", model or str(tiny["checkpoint"]),
         "--data-dir", str(tiny["assets"]), "--dev-dir", str(tiny["dev"]), "--lang-pairs", ",".join(PAIRS),
         "--accelerator", "cpu", "--out", str(out), *extra],
        cwd=WORKLOAD, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def generated(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("m2m100-out")
    # The workload's one command line also carries the training flags: they are accepted and left unused.
    proc = _run(tiny, out, "--max-tokens", "recipe", "--update-freq", "1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "training flags not used in generation: --max-tokens recipe --update-freq 1" in proc.stdout
    return out


def test_two_pairs_generate_and_their_figures_reach_result_json(generated: Path, tiny: dict[str, Path]) -> None:
    result = json.loads((generated / "result.json").read_text())
    assert result["recipe"] == "m2m100" and result["benchmark"] == "translation-m2m100"
    assert result["model"]["params"] > 10_000 and result["model"]["encoder_layers"] == 2
    assert [p["pair"] for p in result["pairs"]] == list(PAIRS)
    processor = spm.SentencePieceProcessor(model_file=str(tiny["assets"] / m2m100.SPM_MODEL))
    for pair in result["pairs"]:
        src, tgt = pair["pair"].split("-")
        log = (generated / f"generate.{src}-{tgt}.log").read_text()
        # Every dev sentence translated, from the source language into the target's language token.
        assert sorted(int(line.split("\t")[0][2:]) for line in log.splitlines() if line.startswith("H-")) == [0, 1, 2, 3]
        assert f"S-0\t__{src}__ " in log
        assert pair["sentences"] == len(DEV[src]) and pair["tokens"] > 0 and pair["sentences_per_s"] > 0
        # spBLEU: sacrebleu on the FLORES-101 tokenizer's pieces (here the tiny model), recomputed independently.
        hypotheses = m2m100.parse_generate(log.splitlines())
        cleaned = [" ".join(w for w in h.hypothesis.split() if not (w.startswith("__") and w.endswith("__")))
                   for h in hypotheses]
        pieces = lambda lines: [" ".join(processor.encode(line, out_type=str)) for line in lines]  # noqa: E731
        expected = sacrebleu.metrics.BLEU(tokenize="none").corpus_score(pieces(cleaned), [pieces(DEV[tgt])]).score
        assert pair["spbleu"] == pytest.approx(expected)
    total_s = sum(p["generate_s"] for p in result["pairs"])
    assert result["samples_per_s"] == pytest.approx(sum(p["sentences"] for p in result["pairs"]) / total_s)
    assert result["eval"]["metric"] == "spbleu" and "tok:flores101" in result["eval"]["signature"]
    assert result["eval"]["value"] == pytest.approx(sum(p["spbleu"] for p in result["pairs"]) / 2)


def test_spbleu_scores_flores_pieces_without_the_language_token(tiny: dict[str, Path],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from sacrebleu.tokenizers import tokenizer_spm

    monkeypatch.setattr(tokenizer_spm, "SACREBLEU_DIR", str(tiny["sacrebleu"]))
    hypotheses = ["__fr__ Le chien court vite.", "La maison est petite."]
    lines = [f"D-{i}\t-0.3\t{h}" for i, h in enumerate(hypotheses)] + [f"H-{i}\t-0.3\tx" for i in range(2)]
    score, signature = m2m100.spbleu(lines, DEV["fr"][:2])
    processor = spm.SentencePieceProcessor(model_file=str(tiny["assets"] / m2m100.SPM_MODEL))
    pieces = lambda lines: [" ".join(processor.encode(line, out_type=str)) for line in lines]  # noqa: E731
    expected = sacrebleu.metrics.BLEU(tokenize="none").corpus_score(
        pieces(["Le chien court vite.", "La maison est petite."]), [pieces(DEV["fr"][:2])]).score
    assert score == pytest.approx(expected) and 30 < score < 100 and "tok:flores101" in signature


def test_the_report_shows_the_generation_figures(generated: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / RECORDED_RUN.name
    shutil.copytree(RECORDED_RUN, run_dir)
    for name in ("result.json", "mlperf.log"):
        shutil.copy(generated / name, run_dir / "local" / name)
    (run_dir / "local" / "stdout.log").write_text("")
    result = json.loads((generated / "result.json").read_text())
    s = summarize(read_run(run_dir))
    assert s.benchmark == "translation-m2m100"  # never set beside MLPerf's transformer rows
    assert (s.throughput, s.throughput_unit) == (pytest.approx(result["samples_per_s"]), "samples")
    assert s.eval_metric == "spbleu" and s.eval_value == pytest.approx(result["pairs"][-1]["spbleu"])
    row = runs_table([s]).rows[0]
    assert any(f"{s.throughput:.1f}" in str(cell) or f"{s.throughput:,.0f}" in str(cell) for cell in row)
    assert any("spbleu" in str(cell) for cell in row)


@pytest.mark.parametrize(("args", "message"), [
    (("--lang-pairs", "de-xx"), "M2M-100 has no language xx; its 100 are af am"),
    (("--lang-pairs", "de"), "write each pair as SRC-TGT"),
    (("--lang-pairs", "de-it"), "lacks {dev}/dev.it: it needs one file per language"),
])
def test_bad_pairs_and_dev_sets_are_named_before_anything_runs(tiny: dict[str, Path], tmp_path: Path,
                                                               args: tuple[str, ...], message: str) -> None:
    proc = _run(tiny, tmp_path / "out", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message.format(dev=tiny["dev"]) in proc.stderr
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint_or_dictionary_is_named_with_where_to_get_it(tiny: dict[str, Path], tmp_path: Path) -> None:
    proc = _run(tiny, tmp_path / "out", model=str(tmp_path / "nowhere.pt"))
    assert proc.returncode == 2 and f"--m2m-model {tmp_path / 'nowhere.pt'}: no such checkpoint" in proc.stderr
    partial = tmp_path / "assets"
    shutil.copytree(tiny["assets"], partial)
    (partial / m2m100.MODEL_DICT).unlink()
    proc = _run({**tiny, "assets": partial}, tmp_path / "out")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"lacks {partial / m2m100.MODEL_DICT} ({m2m100.BASE_URL}/{m2m100.MODEL_DICT})" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_published_model_refuses_a_cpu_before_fetching(tiny: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "assets"
    proc = _run({**tiny, "assets": empty}, tmp_path / "out", model="418M")
    assert proc.returncode == 2 and "--m2m-model 418M on a CPU" in proc.stderr
    assert not empty.exists()  # nothing fetched
