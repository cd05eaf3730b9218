"""A parallel corpus the workload makes itself: a made-up language pair with a learnable mapping.

Each source word has one fixed target word (a lexicon drawn once from the seed), words are drawn with
Zipf-like frequencies, and the target swaps each adjective-like word with the noun-like word after it:
a word-by-word mapping plus local reordering, which a small Transformer learns in a few epochs, so
BLEU rises from ~0 and shows training works end to end. Both sides are plain text that then go through
the same BPE and fairseq-preprocess path as the real recipes.
"""

from __future__ import annotations

import random
from pathlib import Path

SPLITS = {"train": 1.0, "valid": 0.1, "test": 0.1}
"""Sizes of valid and test relative to the training pairs."""

_SOURCE_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "pe", "du", "ga", "zo")
_TARGET_SYLLABLES = ("bra", "ech", "fil", "gor", "hun", "isk", "jol", "kur", "mel", "nov", "orp", "tas")


def _words(rng: random.Random, syllables: tuple[str, ...], count: int) -> list[str]:
    words: set[str] = set()
    while len(words) < count:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))))
    return sorted(words)


def write_corpus(raw_dir: Path, pairs: int, *, seed: int = 1, vocab: int = 40) -> dict[str, int]:
    """Write raw/{train,valid,test}.{src,tgt}; return the number of pairs in each split."""
    rng = random.Random(seed)
    source = _words(rng, _SOURCE_SYLLABLES, vocab)
    target = _words(rng, _TARGET_SYLLABLES, vocab)
    rng.shuffle(target)
    lexicon = dict(zip(source, target))
    modifiers = set(source[: vocab // 4])  # "adjectives": swapped with the following word
    weights = [1.0 / (rank + 1) for rank in range(vocab)]

    def sentence() -> tuple[str, str]:
        words = rng.choices(source, weights=weights, k=rng.randint(3, 8))
        out = [lexicon[w] for w in words]
        i = 0
        while i < len(words) - 1:
            if words[i] in modifiers:
                out[i], out[i + 1] = out[i + 1], out[i]
                i += 2
            else:
                i += 1
        return " ".join(words), " ".join(out)

    raw_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, fraction in SPLITS.items():
        n = max(1, int(pairs * fraction))
        lines = [sentence() for _ in range(n)]
        (raw_dir / f"{split}.src").write_text("".join(s + "\n" for s, _ in lines))
        (raw_dir / f"{split}.tgt").write_text("".join(t + "\n" for _, t in lines))
        counts[split] = n
    return counts
