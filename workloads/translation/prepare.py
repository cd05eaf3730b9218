"""Data preparation on the host: raw parallel text -> joint sentencepiece BPE -> fairseq-preprocess.

    python prepare.py --recipe synthetic --data-dir data/synthetic
    python prepare.py --recipe iwslt14-de-en --data-dir data/iwslt14 [--mirror DIR_OR_URL]
    python prepare.py --recipe wmt-en-de --data-dir data/wmt [--mirror DIR_OR_URL]

Layout under --data-dir: raw/ (plain text), spm.model, bpe/ (pieces), bin/ (what fairseq-train reads)
and bin/prepared.json, written last, so a half-prepared directory is never mistaken for a ready one; it records
what the data was prepared from (`inputs`), so that `run.py --prepare` reuses a directory only for the same.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import sentencepiece as spm

import corpora
import synthetic
from fairseq_cmd import keep_tensorflow_out
from recipes import RECIPES, Recipe, get_recipe

SPLITS = ("train", "valid", "test")
FAIRSEQ_CMD = Path(__file__).resolve().parent / "fairseq_cmd.py"
MARKER = "prepared.json"


class DataError(ValueError):
    """The data directory is missing, incomplete or corrupted; the message says how to fix it."""


def _prepare_command(recipe: Recipe, data_dir: Path) -> str:
    return f"python prepare.py --recipe {recipe.name} --data-dir {shlex.quote(str(data_dir))}"


def preprocess_command(recipe: Recipe, data_dir: Path, workers: int) -> list[str]:
    """fairseq-preprocess over the BPE text, one dictionary for both languages (shared embeddings)."""
    bpe = data_dir / "bpe"
    return [
        sys.executable, str(FAIRSEQ_CMD), "preprocess", "--source-lang", recipe.source_lang, "--target-lang", recipe.target_lang,
        "--trainpref", str(bpe / "train"), "--validpref", str(bpe / "valid"), "--testpref", str(bpe / "test"),
        "--destdir", str(data_dir / "bin"), "--joined-dictionary", "--workers", str(workers),
    ]


def train_bpe(recipe: Recipe, data_dir: Path) -> Path:
    """Learn one sentencepiece BPE model over both sides of the training text."""
    raw = data_dir / "raw"
    prefix = data_dir / "spm"
    spm.SentencePieceTrainer.train(
        input=[str(raw / f"train.{recipe.source_lang}"), str(raw / f"train.{recipe.target_lang}")],
        model_prefix=str(prefix), vocab_size=recipe.bpe_vocab_size, model_type="bpe",
        character_coverage=1.0, input_sentence_size=2_000_000, shuffle_input_sentence=True,
        hard_vocab_limit=False,  # a small corpus may hold fewer pieces than asked for
        bos_id=-1, eos_id=-1,  # fairseq adds its own end of sentence
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def encode(model: Path, data_dir: Path, recipe: Recipe) -> dict[str, int]:
    """raw/{split}.{lang} -> bpe/{split}.{lang}: space-separated pieces, one sentence per line.

    Training pairs longer than the recipe's max_train_pieces are dropped here (validation and test
    never are); returns the pairs each split keeps.
    """
    processor = spm.SentencePieceProcessor(model_file=str(model))
    (data_dir / "bpe").mkdir(exist_ok=True)
    kept = {}
    for split in SPLITS:
        sides = [processor.encode((data_dir / "raw" / f"{split}.{lang}").read_text(encoding="utf-8").splitlines(),
                                  out_type=str) for lang in (recipe.source_lang, recipe.target_lang)]
        pairs = list(zip(*sides, strict=True))
        if split == "train" and recipe.max_train_pieces:
            # +1: fairseq appends the end-of-sentence symbol, which counts against its positions.
            pairs = [p for p in pairs if max(len(p[0]), len(p[1])) + 1 <= recipe.max_train_pieces]
        for side, lang in enumerate((recipe.source_lang, recipe.target_lang)):
            (data_dir / "bpe" / f"{split}.{lang}").write_text("".join(" ".join(p[side]) + "\n" for p in pairs))
        kept[split] = len(pairs)
    return kept


def inputs(recipe: Recipe, synthetic_pairs: int) -> dict:
    """What the prepared data depends on, recorded in bin/prepared.json: a directory is reused only for the same.
    The corpus of a real recipe is fixed by its name; the synthetic one is made with `synthetic_pairs` pairs."""
    return {
        "recipe": recipe.name, "source_lang": recipe.source_lang, "target_lang": recipe.target_lang,
        "bpe_vocab_size": recipe.bpe_vocab_size, "max_train_pieces": recipe.max_train_pieces,
        "synthetic_pairs": synthetic_pairs if recipe.name == "synthetic" else None,
    }


def stale(recipe: Recipe, data_dir: Path, wanted: dict) -> str | None:
    """Why data_dir must be prepared (again) for `wanted` (inputs()), or None when it is ready for it.

    Data of another recipe is refused rather than overwritten: a real corpus takes hours to prepare."""
    marker = data_dir / "bin" / MARKER
    if not marker.is_file():
        return f"{marker} is missing"
    recorded = json.loads(marker.read_text())
    if recorded.get("recipe") != recipe.name:
        raise DataError(f"--data-dir {data_dir} was prepared for recipe {recorded.get('recipe')!r}, not "
                        f"{recipe.name!r}: pass another --data-dir for {recipe.name!r}, or delete {data_dir}")
    had = recorded.get("inputs")
    if had is None:
        return "it was prepared before its inputs were recorded"
    changed = [f"{key} {had.get(key)!r} -> {value!r}" for key, value in wanted.items() if had.get(key) != value]
    return f"it was prepared with other inputs ({', '.join(changed)})" if changed else None


def prepare(recipe: Recipe, data_dir: Path, *, synthetic_pairs: int = 2000, mirror: str | None = None,
            env: dict[str, str] | None = None) -> dict:
    """Make data_dir ready for fairseq-train; return what bin/prepared.json records."""
    marker = data_dir / "bin" / MARKER
    # The stamp first (a half-prepared directory is never ready), then the rest: fairseq-preprocess refuses to
    # write over an earlier preparation's dictionaries.
    marker.unlink(missing_ok=True)
    shutil.rmtree(data_dir / "bin", ignore_errors=True)
    raw = data_dir / "raw"
    if recipe.name == "synthetic":
        counts = synthetic.write_corpus(raw, synthetic_pairs)
    else:
        splits = corpora.CORPORA[recipe.name](data_dir / "downloads", mirror=mirror)
        counts = corpora.write_raw(splits, raw, recipe.source_lang, recipe.target_lang)
    model = train_bpe(recipe, data_dir)
    counts = encode(model, data_dir, recipe)
    command = preprocess_command(recipe, data_dir, workers=min(os.cpu_count() or 1, 8))
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL)  # its log goes on to stderr
    if done.returncode != 0:
        raise DataError(f"fairseq-preprocess exited {done.returncode} (its log is above): {shlex.join(command)}")
    record = {"recipe": recipe.name, "inputs": inputs(recipe, synthetic_pairs), "pairs": counts,
              "spm_model": str(model), "preprocess": shlex.join(command)}
    marker.write_text(json.dumps(record, indent=2) + "\n")
    return record


def check_data_bin(recipe: Recipe, data_dir: Path) -> dict:
    """Fail with a DataError unless data_dir/bin is complete and every binarised file matches its index.

    A truncated or overwritten .bin would otherwise surface as an IndexError deep inside a training
    step, hours into a run.
    """
    bin_dir = data_dir / "bin"
    fix = f"run `{_prepare_command(recipe, data_dir)}`"
    if not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} does not exist: {fix} (or pass --prepare)")
    marker = bin_dir / MARKER
    if not marker.is_file():
        raise DataError(f"--data-dir {data_dir} holds no prepared data ({marker} is missing): {fix}")
    record = json.loads(marker.read_text())
    if record.get("recipe") != recipe.name:
        raise DataError(f"--data-dir {data_dir} was prepared for recipe {record.get('recipe')!r}, "
                        f"not {recipe.name!r}: pass its recipe or {fix}")
    keep_tensorflow_out()
    from fairseq.data.indexed_dataset import MMapIndexedDataset  # imports fairseq: only once data exists

    pair = f"{recipe.source_lang}-{recipe.target_lang}"
    for lang in (recipe.source_lang, recipe.target_lang):
        if not (bin_dir / f"dict.{lang}.txt").is_file():
            raise DataError(f"{bin_dir / f'dict.{lang}.txt'} is missing: {fix}")
        for split in SPLITS:
            idx, data = (bin_dir / f"{split}.{pair}.{lang}.{ext}" for ext in ("idx", "bin"))
            for path in (idx, data):
                if not path.is_file():
                    raise DataError(f"{path} is missing: {fix}")
            try:
                index = MMapIndexedDataset.Index(str(idx))
                last_pointer, last_size = index[len(index) - 1] if len(index) else (0, 0)
            except (AssertionError, ValueError, OSError, IndexError) as err:
                raise DataError(f"{idx} is corrupted ({err}): {fix}") from None
            expected = int(last_pointer) + int(last_size) * index.dtype().itemsize
            actual = data.stat().st_size
            if actual != expected:
                raise DataError(f"{data} is corrupted: {actual} bytes where its index expects {expected}: {fix}")
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, help=f"one of {', '.join(RECIPES)}")
    parser.add_argument("--data-dir", type=Path, required=True, help="where raw/, bpe/ and bin/ go")
    parser.add_argument("--synthetic-pairs", type=int, default=2000, help="training pairs of the synthetic recipe")
    parser.add_argument("--mirror", help="a directory or URL holding the corpus archives by file name")
    args = parser.parse_args(argv)
    try:
        args.recipe = get_recipe(args.recipe)
    except ValueError as err:
        parser.error(f"--recipe: {err}")
    if args.synthetic_pairs < 20:
        parser.error(f"--synthetic-pairs {args.synthetic_pairs}: use at least 20 so valid and test are not empty")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    record = prepare(args.recipe, args.data_dir, synthetic_pairs=args.synthetic_pairs, mirror=args.mirror)
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
