"""Prepare BERT pretraining data in the ernie-bert-v1 format (data.py) from text, or synthetic.

    # real text: one sentence per line, a blank line between documents (files or directories of *.txt)
    python prep_data.py --input corpus.txt --out data/seq128 --seq-len 128 --max-predictions 20
    # random tokens of the same shape, for throughput runs
    python prep_data.py --synthetic --out data/synthetic --seq-len 128 --max-predictions 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import data


def _text_files(inputs: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(path.rglob("*.txt"))
            if not found:
                raise data.DataError(f"--input {path} is a directory with no *.txt files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise data.DataError(f"--input {path} does not exist")
    return files


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, nargs="+", help="text files, or directories of *.txt")
    source.add_argument("--synthetic", action="store_true", help="random tokens of the same shape")
    parser.add_argument("--out", type=Path, required=True, help="directory to write meta.json and shards to")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per example, [CLS] and [SEP]s included")
    parser.add_argument("--max-predictions", type=int, default=20, help="masked positions per example at most")
    parser.add_argument("--masked-lm-prob", type=float, default=0.15, help="fraction of tokens to predict")
    parser.add_argument("--short-seq-prob", type=float, default=0.1, help="fraction of shorter examples")
    parser.add_argument("--dupe-factor", type=int, default=1, help="passes over the text, each masked anew")
    parser.add_argument("--eval-fraction", type=float, default=0.05, help="fraction of documents held out")
    parser.add_argument("--examples-per-shard", type=int, default=65536, help="examples per .npz shard")
    parser.add_argument("--vocab-file", type=Path, default=None, help="WordPiece vocab.txt (default: found)")
    parser.add_argument("--train-examples", type=int, default=8192, help="--synthetic: training examples")
    parser.add_argument("--eval-examples", type=int, default=1024, help="--synthetic: eval examples")
    parser.add_argument("--seed", type=int, default=12345, help="the same seed and input give the same bytes")
    args = parser.parse_args(argv)
    for flag in ("seq_len", "max_predictions", "dupe_factor", "examples_per_shard", "train_examples", "eval_examples"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if not 0.0 < args.masked_lm_prob < 1.0:
        parser.error(f"--masked-lm-prob must be in (0, 1), got {args.masked_lm_prob}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.synthetic:
        meta = data.make_synthetic(
            args.out,
            seq_len=args.seq_len,
            max_predictions=args.max_predictions,
            train_examples=args.train_examples,
            eval_examples=args.eval_examples,
            masked_lm_prob=args.masked_lm_prob,
            examples_per_shard=args.examples_per_shard,
            seed=args.seed,
        )
    else:
        meta = data.prepare(
            _text_files(args.input),
            args.out,
            vocab_file=args.vocab_file,
            seq_len=args.seq_len,
            max_predictions=args.max_predictions,
            masked_lm_prob=args.masked_lm_prob,
            short_seq_prob=args.short_seq_prob,
            dupe_factor=args.dupe_factor,
            eval_fraction=args.eval_fraction,
            examples_per_shard=args.examples_per_shard,
            seed=args.seed,
        )
    counts = ", ".join(f"{split} {info['examples']}" for split, info in meta["splits"].items())
    print(f"wrote {args.out} ({counts} examples, seq {meta['seq_len']}) in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    try:
        main()
    except data.DataError as exc:
        raise SystemExit(f"prep_data.py: error: {exc}") from None
