"""Test BLEU: fairseq-generate with beam search, then sacrebleu on the detokenised hypotheses.

fairseq's own `--scoring` would score BPE pieces; here every hypothesis is decoded back to text
(`--post-process sentencepiece`) and scored by sacrebleu against the untouched reference text, the
way WMT and MLPerf report BLEU. WMT's BLEU is sacrebleu's default (cased, 13a tokens). MLPerf's v0.6
reference scores uncased, tokenised as mteval-v14 --international-tokenization (its bleu_tokenize), with
the NIST geometric smoothing of zero n-gram counts (its compute_bleu): sacrebleu's
`BLEU(lowercase=True, tokenize="intl")`, whose default smoothing ("exp") is that same rule.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import sacrebleu

from fairseq_log import parse_generate
from prepare import FAIRSEQ_CMD
from recipes import Recipe


def generate_command(recipe: Recipe, bin_dir: Path, checkpoint: Path, *, cpu: bool, fp16: bool,
                     num_workers: int) -> list[str]:
    """fairseq-generate over the test split with the recipe's beam and length penalty."""
    command = [
        sys.executable, str(FAIRSEQ_CMD), "generate", str(bin_dir), "--path", str(checkpoint), "--gen-subset", "test",
        "--beam", str(recipe.beam), "--lenpen", str(recipe.lenpen), "--max-tokens", "8192",
        "--max-len-a", str(recipe.max_len[0]), "--max-len-b", str(recipe.max_len[1]),
        "--post-process", "sentencepiece", "--num-workers", str(num_workers),
        # fairseq's batch_by_size drops a last batch whose size is not a multiple of this (default 8):
        # left at 8, up to 7 test sentences would go untranslated.
        "--required-batch-size-multiple", "1",
    ]
    if cpu:
        command.append("--cpu")
    if fp16:
        command.append("--fp16")
    return command


@dataclass(frozen=True)
class TestScore:
    """sacrebleu's corpus BLEU over every test sentence."""

    bleu: float
    signature: str
    sentences: int


def score(generate_output: list[str], references: list[str], bleu_args: dict | None = None) -> TestScore:
    """BLEU of the hypotheses in fairseq-generate's output against the raw reference lines, with the recipe's
    sacrebleu settings (`Recipe.bleu_args`; sacrebleu's defaults when None)."""
    generated = parse_generate(generate_output)
    if len(generated) != len(references):
        raise ValueError(f"fairseq-generate translated {len(generated)} sentences but the test set has "
                         f"{len(references)}: was it interrupted?")
    metric = sacrebleu.metrics.BLEU(**(bleu_args or {}))
    result = metric.corpus_score([g.hypothesis for g in generated], [references])
    return TestScore(bleu=result.score, signature=str(metric.get_signature()), sentences=len(generated))
