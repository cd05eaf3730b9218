"""BERT model sizes shared by the PyTorch and TensorFlow trainers.

The numbers are the published BERT shapes (Devlin et al. 2018; google-research/bert's model table);
`tiny` exists so tests train in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """The shape of one BERT model."""

    name: str
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int = 30522  # bert-base-uncased WordPiece
    max_position: int = 512
    type_vocab: int = 2
    dropout: float = 0.1

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("tiny", hidden=128, layers=2, heads=2, intermediate=512),
        Preset("mini", hidden=256, layers=4, heads=4, intermediate=1024),
        Preset("base", hidden=768, layers=12, heads=12, intermediate=3072),
        Preset("large", hidden=1024, layers=24, heads=16, intermediate=4096),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; a ValueError naming the known presets otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}") from None
