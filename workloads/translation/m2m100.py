"""M2M-100 (Fan et al. 2020), many-to-many translation with fairseq: generation speed and spBLEU per language pair.

    cd workloads/translation
    python run.py --recipe m2m100 --m2m-model 418M --lang-pairs de-fr,en-zh --dev-dir ~/flores101/dev --out OUT
    python run.py --recipe m2m100 --m2m-model 1.2B --lang-pairs hi-bn --dev-dir D --data-dir ~/m2m --out OUT

As examples/m2m_100/README.md runs it: the sentencepiece model spm.128k.model encodes the text,
fairseq-preprocess binarises it with data_dict.128k.txt, and fairseq-generate decodes with beam 5 under
translation_multi_simple_epoch, the fixed dictionary model_dict.128k.txt, the language pairs of
language_pairs_small_models.txt and language tokens on both sides. Those files and the checkpoint are
fetched into --data-dir on the host (once; --mirror serves hosts without internet). --m2m-model may
instead name a local checkpoint of the same kind, which then finds every other file in --data-dir.

The dev set (--dev-dir) holds one file per language, `dev.LANG`, the same sentences line by line in
every language (FLORES-101's layout), so any pair of them is a test set. BLEU is spBLEU, as the M2M-100
and FLORES-101 authors report it: sacrebleu with the FLORES-101 sentencepiece tokenizer
(`tokenize="flores101"`), whose model sacrebleu keeps under $SACREBLEU/models/ (fetched here beforehand).
Throughput is fairseq-generate's own: sentences and generated tokens over its generation time, model
loading excluded. Writes result.json (samples_per_s = sentences/s), mlperf.log (run_start/run_stop around
the generation, one tracked_stats and eval_accuracy per pair, as `translation-m2m100`) and generate logs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

import corpora
import results
from fairseq_log import parse_generate, parse_generate_speed
from mlperf import MLPerfLog, constants
from prepare import FAIRSEQ_CMD

BASE_URL = "https://dl.fbaipublicfiles.com/m2m_100"
MODELS = {"418M": "418M_last_checkpoint.pt", "1.2B": "1.2B_last_checkpoint.pt"}
SPM_MODEL, DATA_DICT, MODEL_DICT = "spm.128k.model", "data_dict.128k.txt", "model_dict.128k.txt"
LANG_PAIRS = "language_pairs_small_models.txt"
# sacrebleu's FLORES-101 tokenizer model (sacrebleu.tokenizers.tokenizer_spm.SPM_MODELS["flores101"]).
FLORES_SPM_URL = "https://dl.fbaipublicfiles.com/fairseq/models/flores/sacrebleu_tokenizer_spm.model"
# The 100 languages of M2M-100, by the codes its language tokens (__xx__) use.
LANGUAGES = frozenset("""
af am ar ast az ba be bg bn br bs ca ceb cs cy da de el en es et fa ff fi fr fy ga gd gl gu ha he hi hr ht hu hy id
ig ilo is it ja jv ka kk km kn ko lb lg ln lo lt lv mg mk ml mn mr ms my ne nl no ns oc or pa pl ps pt ro ru sd si sk
sl so sq sr ss su sv sw ta th tl tn tr uk ur uz vi wo xh yi yo zh zu
""".split())
BENCHMARK = "translation-m2m100"  # not an MLPerf benchmark: the report never sets it beside MLPerf's rows


class AssetError(ValueError):
    """A file M2M-100 needs is missing; the message names it and where it comes from."""


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """"de-fr,en-zh" -> [("de", "fr"), ("en", "zh")], every language one of M2M-100's 100."""
    pairs = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        src, sep, tgt = item.partition("-")
        if not sep or not src or not tgt or src == tgt:
            raise ValueError(f"--lang-pairs {item!r}: write each pair as SRC-TGT of two different languages, e.g. de-fr")
        unknown = sorted({src, tgt} - LANGUAGES)
        if unknown:
            raise ValueError(f"--lang-pairs {item}: M2M-100 has no language {', '.join(unknown)}; its 100 are "
                             f"{' '.join(sorted(LANGUAGES))}")
        pairs.append((src, tgt))
    if not pairs:
        raise ValueError("--lang-pairs: name at least one pair, e.g. de-fr,en-zh")
    return pairs


def dev_files(dev_dir: Path, pairs: list[tuple[str, str]]) -> dict[str, Path]:
    """dev.LANG for every language of `pairs`, all of the same length, or a ValueError naming what is wrong."""
    files = {lang: dev_dir / f"dev.{lang}" for pair in pairs for lang in pair}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise ValueError(f"--dev-dir {dev_dir} lacks {', '.join(missing)}: it needs one file per language, dev.LANG, "
                         "holding the same sentences line by line (e.g. FLORES-101's dev split, renamed to M2M-100's codes)")
    lengths = {lang: len(path.read_text(encoding="utf-8").splitlines()) for lang, path in files.items()}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise ValueError(f"--dev-dir {dev_dir}: dev files must hold the same, non-zero number of lines: {lengths}")
    return files


def assets(data_dir: Path, model: str, *, mirror: str | None) -> dict[str, Path]:
    """The sentencepiece model, dictionaries, language pairs and checkpoint, fetched for a published model.

    A local checkpoint (a path) fetches nothing: every other file must already be in data_dir.
    """
    names = {"spm": SPM_MODEL, "data_dict": DATA_DICT, "model_dict": MODEL_DICT, "lang_pairs": LANG_PAIRS}
    if model in MODELS:
        names["checkpoint"] = MODELS[model]
        return {key: corpora.download(f"{BASE_URL}/{name}", data_dir, mirror=mirror) for key, name in names.items()}
    found = {key: data_dir / name for key, name in names.items()}
    found["checkpoint"] = Path(model).expanduser()
    if not found["checkpoint"].is_file():
        raise AssetError(f"--m2m-model {model}: no such checkpoint; name a published model ({', '.join(MODELS)}), "
                         "which is fetched, or an existing fairseq checkpoint file")
    missing = [f"{path} ({BASE_URL}/{path.name})" for key, path in found.items() if key != "checkpoint" and not path.is_file()]
    if missing:
        raise AssetError(f"--data-dir {data_dir} lacks {'; '.join(missing)}: a local checkpoint fetches nothing, so put "
                         f"them there (or run once with --m2m-model {next(iter(MODELS))}, which fetches them)")
    return found


def flores_tokenizer_model(*, mirror: str | None) -> Path:
    """sacrebleu's FLORES-101 sentencepiece model, where sacrebleu looks for it, fetched if absent."""
    from sacrebleu.utils import SACREBLEU_DIR

    return corpora.download(FLORES_SPM_URL, Path(SACREBLEU_DIR) / "models", mirror=mirror)


def binarise(found: dict[str, Path], files: dict[str, Path], src: str, tgt: str, work: Path,
             env: dict[str, str]) -> Path:
    """The dev set of one pair as fairseq-generate reads it: sentencepiece pieces, then fairseq-preprocess."""
    processor = spm.SentencePieceProcessor(model_file=str(found["spm"]))
    prefix = work / f"spm.{src}-{tgt}"
    for lang in (src, tgt):
        lines = files[lang].read_text(encoding="utf-8").splitlines()
        Path(f"{prefix}.{lang}").write_text("".join(" ".join(p) + "\n" for p in processor.encode(lines, out_type=str)),
                                            encoding="utf-8")
    dest = work / f"bin.{src}-{tgt}"
    command = [sys.executable, str(FAIRSEQ_CMD), "preprocess", "--source-lang", src, "--target-lang", tgt,
               "--testpref", str(prefix), "--thresholdsrc", "0", "--thresholdtgt", "0", "--destdir", str(dest),
               "--srcdict", str(found["data_dict"]), "--tgtdict", str(found["data_dict"]), "--workers", "1"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"fairseq-preprocess exited {done.returncode}: {done.stderr[-2000:]}")
    return dest


def generate_command(found: dict[str, Path], bin_dir: Path, src: str, tgt: str, *, cpu: bool, fp16: bool,
                     batch_size: int, beam: int) -> list[str]:
    """fairseq-generate as examples/m2m_100/README.md runs it."""
    command = [
        sys.executable, str(FAIRSEQ_CMD), "generate", str(bin_dir), "--path", str(found["checkpoint"]),
        "--fixed-dictionary", str(found["model_dict"]), "-s", src, "-t", tgt, "--remove-bpe", "sentencepiece",
        "--beam", str(beam), "--batch-size", str(batch_size), "--task", "translation_multi_simple_epoch",
        "--lang-pairs", str(found["lang_pairs"]), "--decoder-langtok", "--encoder-langtok", "src",
        "--gen-subset", "test",
        # fairseq drops a last batch whose size is not a multiple of this (default 8): every sentence counts.
        "--required-batch-size-multiple", "1",
    ]
    return command + (["--cpu"] if cpu else []) + (["--fp16"] if fp16 else [])


@dataclass(frozen=True)
class PairResult:
    """One language pair: how fast it was generated and its spBLEU against the dev references."""

    pair: str
    sentences: int
    tokens: int
    seconds: float
    spbleu: float
    signature: str


def spbleu(generate_output: list[str], references: list[str]) -> tuple[float, str]:
    """spBLEU (sacrebleu, FLORES-101 sentencepiece tokens) of fairseq-generate's hypotheses."""
    import sacrebleu

    generated = parse_generate(generate_output)
    if len(generated) != len(references):
        raise RuntimeError(f"fairseq-generate translated {len(generated)} of {len(references)} sentences")
    # The language token that opens every hypothesis is the model's, not the translation's.
    hypotheses = [" ".join(w for w in g.hypothesis.split() if not (w.startswith("__") and w.endswith("__")))
                  for g in generated]
    metric = sacrebleu.metrics.BLEU(tokenize="flores101")
    return metric.corpus_score(hypotheses, [references]).score, str(metric.get_signature())


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=("m2m100",), default="m2m100")
    parser.add_argument("--m2m-model", default="418M",
                        help=f"{' or '.join(MODELS)} (fetched), or the path of a fairseq checkpoint of the same kind")
    parser.add_argument("--lang-pairs", default="de-fr,en-zh", help="comma-separated SRC-TGT pairs of M2M-100's languages")
    parser.add_argument("--dev-dir", type=Path, required=True, help="dev.LANG files, the same sentences in every language")
    parser.add_argument("--data-dir", required=True, help="where M2M-100's files are fetched to; {recipe} and ~ expanded")
    parser.add_argument("--mirror", help="a directory or URL holding M2M-100's files by name (hosts without internet)")
    parser.add_argument("--out", type=Path, default=os.environ.get("ERNIE_OUTPUT_DIR"), help="output directory")
    parser.add_argument("--accelerator", choices=("auto", "cpu", "gpu", "tpu"), default="auto",
                        help="auto: gpu when CUDA is available, else cpu")
    parser.add_argument("--precision", choices=("auto", "fp16", "fp32"), default="auto", help="auto: fp16 on GPUs")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per batch (the README's 32)")
    parser.add_argument("--beam", type=int, default=5, help="beam size (the README's 5)")
    # The workload's one command line also carries the training recipes' flags; they mean nothing here.
    args, ignored = parser.parse_known_args(argv)
    if args.out is None:
        parser.error("--out: give an output directory or set ERNIE_OUTPUT_DIR")
    args.data_dir = Path(args.data_dir.replace("{recipe}", "m2m100")).expanduser()
    for name in ("batch_size", "beam"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    return args, ignored


def accelerator_for(choice: str, model: str) -> str:
    """The device generation runs on; the published models refuse a CPU, and every model a TPU."""
    import torch

    if choice == "auto":
        choice = "gpu" if torch.cuda.is_available() else "cpu"
    if choice == "gpu" and not torch.cuda.is_available():
        raise ValueError("--accelerator gpu: this torch sees no CUDA device")
    if choice == "tpu":
        # fairseq 0.12's generate has no XLA device (fairseq_cli/generate.py: CUDA or CPU only).
        raise ValueError("--accelerator tpu: fairseq-generate has no TPU path; run M2M-100 on a GPU host")
    if choice == "cpu" and model in MODELS:
        raise ValueError(f"--m2m-model {model} on a CPU: M2M-100's published models need a GPU host "
                         "(--accelerator gpu); a CPU runs only a small local checkpoint")
    return choice


def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    # Everything that can be checked without fetching or running anything comes first.
    pairs = parse_pairs(args.lang_pairs)
    files = dev_files(args.dev_dir.expanduser(), pairs)
    accelerator = accelerator_for(args.accelerator, args.m2m_model)
    fp16 = args.precision == "fp16" or (args.precision == "auto" and accelerator == "gpu")
    if fp16 and accelerator != "gpu":
        raise ValueError("--precision fp16 runs on a GPU only")
    found = assets(args.data_dir, args.m2m_model, mirror=args.mirror)
    known = set(found["lang_pairs"].read_text().replace("\n", ",").split(","))
    absent = [f"{s}-{t}" for s, t in pairs if f"{s}-{t}" not in known]
    if absent:
        raise ValueError(f"{found['lang_pairs']} lists no {', '.join(absent)}: the model was not trained on it")
    flores_tokenizer_model(mirror=args.mirror)

    out: Path = args.out.resolve()
    work = out / "m2m100"
    work.mkdir(parents=True, exist_ok=True)
    done: list[PairResult] = []
    commands: dict[str, str] = {"run": shlex.join([sys.executable, *sys.argv])}
    bins = {(src, tgt): binarise(found, files, src, tgt, work, env) for src, tgt in pairs}
    # The log every ernie workload writes (progress from tracked_stats, one per pair), under a benchmark name
    # MLPerf does not have: run_start/run_stop bracket the generation, the data being binarised before.
    mllog = MLPerfLog(out, enabled=True)
    mllog.submission(BENCHMARK, platform=f"{accelerator} x1")
    mllog.start(constants.RUN_START)
    for step, (src, tgt) in enumerate(pairs, 1):
        command = generate_command(found, bins[src, tgt], src, tgt, cpu=accelerator != "gpu", fp16=fp16,
                                   batch_size=args.batch_size, beam=args.beam)
        commands[f"generate {src}-{tgt}"] = shlex.join(command)
        generated = subprocess.run(command, env=env, capture_output=True, text=True)
        (out / f"generate.{src}-{tgt}.log").write_text(generated.stdout + generated.stderr)
        if generated.returncode != 0:
            raise RuntimeError(f"fairseq-generate {src}-{tgt} exited {generated.returncode}; see "
                               f"{out / f'generate.{src}-{tgt}.log'}")
        speed = parse_generate_speed(generated.stderr.splitlines() + generated.stdout.splitlines())
        if speed is None:
            raise RuntimeError(f"fairseq-generate {src}-{tgt} printed no 'Translated ...' line")
        references = files[tgt].read_text(encoding="utf-8").splitlines()
        score, signature = spbleu(generated.stdout.splitlines(), references)
        done.append(PairResult(f"{src}-{tgt}", speed.sentences, speed.tokens, speed.seconds, score, signature))
        mllog.tracked_stats(step, sentences_per_s=speed.sentences / speed.seconds,
                            tokens_per_s=speed.tokens / speed.seconds)
        mllog.event(constants.EVAL_ACCURACY, score, {"epoch_num": 0, "pair": f"{src}-{tgt}", "metric": "spbleu"})
        print(f"m2m100: {src}-{tgt} spBLEU {score:.2f} | {speed.sentences / speed.seconds:.1f} sentences/s, "
              f"{speed.tokens / speed.seconds:.1f} tokens/s", flush=True)

    mllog.end(constants.RUN_STOP, metadata={"status": constants.SUCCESS})
    mllog.close()
    seconds = sum(p.seconds for p in done)
    result = build_result(args, accelerator, fp16, found, files, done, seconds, commands)
    path = results.write(out, result)
    print(f"m2m100: mean spBLEU {result['eval']['value']:.2f} over {len(done)} pairs | "
          f"{result['samples_per_s']:.1f} sentences/s | {path}", flush=True)
    return 0


def build_result(args: argparse.Namespace, accelerator: str, fp16: bool, found: dict[str, Path],
                 dev: dict[str, Path], done: list[PairResult], seconds: float, commands: dict[str, str]) -> dict:
    """result.json (docs/workloads.md): throughput over every pair's generation time, spBLEU per pair and mean.
    `dev`: the dev files the pairs were scored on (dev_files), the run's data."""
    import torch

    state = torch.load(found["checkpoint"], map_location="cpu", weights_only=False)
    params = sum(t.numel() for t in state["model"].values())
    cfg = state["cfg"]["model"]
    return {
        "workload": "translation", "framework": "fairseq", "framework_version": results.versions()["fairseq"],
        "recipe": "m2m100", "benchmark": BENCHMARK, "mode": "generate",
        "model": {"name": args.m2m_model if args.m2m_model in MODELS else Path(args.m2m_model).name,
                  "arch": getattr(cfg, "arch", None), "encoder_layers": getattr(cfg, "encoder_layers", None),
                  "decoder_layers": getattr(cfg, "decoder_layers", None),
                  "encoder_embed_dim": getattr(cfg, "encoder_embed_dim", None), "params": params},
        "accelerator": accelerator, "device_name": results.device_name(accelerator), "chips": 1, "hosts": 1,
        "global_batch_size": args.batch_size, "global_batch_unit": "sentences", "seq_len": None,
        "precision": "fp16" if fp16 else "fp32", "beam": args.beam,
        "steps": None, "timed_steps": None,
        "samples_per_s": sum(p.sentences for p in done) / seconds,
        "tokens_per_s": sum(p.tokens for p in done) / seconds,
        "words_per_s": None,
        "step_time_ms_p50": None, "step_time_ms_p90": None,
        "flops_per_sample": None, "peak_flops_per_device": None, "mfu": None,
        "eval": {"metric": "spbleu", "value": sum(p.spbleu for p in done) / len(done), "target": None,
                 "reached": False, "split": "dev", "signature": done[0].signature},
        "pairs": [{"pair": p.pair, "sentences": p.sentences, "tokens": p.tokens, "generate_s": p.seconds,
                   "sentences_per_s": p.sentences / p.seconds, "tokens_per_s": p.tokens / p.seconds,
                   "spbleu": p.spbleu} for p in done],
        "time_to_target_s": None, "train_time_s": None,
        # Generation: a batch of --batch-size sentences, no updates; the data is the dev files of the pairs.
        "settings": results.run_settings(
            processes=1, cpu_threads=0, accelerator=accelerator, micro_batch=args.batch_size,
            micro_batch_unit="sentences", update_freq=None, data_name=args.dev_dir.name, synthetic=False,
            train_examples=None, data_sha256=results.data_digest(list(dev.values()))),
        "versions": results.versions(), "command": commands["run"], "commands": commands, "error": None,
    }


def main(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    args, ignored = parse_args(argv)
    if ignored:
        print(f"m2m100: training flags not used in generation: {' '.join(ignored)}", flush=True)
    started = time.time()
    try:
        code = run(args, env if env is not None else {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    except (ValueError, OSError) as err:  # AssetError is a ValueError; OSError: a download or a file
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"m2m100: done in {time.time() - started:.1f} s", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
