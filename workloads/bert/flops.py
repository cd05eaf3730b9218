"""Parameter and FLOP counts for BERT pretraining, and per-device peaks, for model-FLOPs utilisation.

Both trainers report through these functions so that their MFU figures are comparable.

FLOPs per sequence (PaLM, appendix B: 6*N per token for the forward and backward matmuls, plus
12*L*H*Q*T per token for attention scores and values, H*Q = hidden, T = seq_len):

    6 * seq_len * N_encoder                                   # the encoder layers
  + 12 * layers * hidden * seq_len**2                          # attention
  + 6 * max_predictions * (hidden**2 + hidden * vocab)         # MLM transform + decoder, masked positions only
  + 6 * (hidden**2 + 2 * hidden)                               # pooler + next-sentence head, [CLS] only

Embedding look-ups cost no matmul FLOPs. For BERT-base at seq 128 with 20 predictions this gives
70.0 GFLOP, for BERT-large 240.9 GFLOP, and at seq 512 with 76 predictions 1020.7 GFLOP, the figures
in ../shared/REFERENCE.md.
"""

from __future__ import annotations

import re

from presets import Preset


def encoder_parameters(preset: Preset) -> int:
    """Parameters of the transformer layers (no embeddings, pooler or heads): base 85.05M, large 302.31M."""
    h, i = preset.hidden, preset.intermediate
    attention = 4 * (h * h + h)  # query, key, value, output projections
    feed_forward = h * i + i + i * h + h
    layer_norms = 2 * 2 * h
    return preset.layers * (attention + feed_forward + layer_norms)


def parameter_count(preset: Preset) -> int:
    """Trainable parameters of BERT with its pretraining heads, each tensor counted once.

    The MLM decoder's weight is the word-embedding matrix (tied), so it is counted once, with the
    embeddings; the decoder's own bias (vocab) is counted. Base: 110,106,428; large: 336,226,108.
    """
    h, v = preset.hidden, preset.vocab_size
    embeddings = (v + preset.max_position + preset.type_vocab) * h + 2 * h
    pooler = h * h + h
    mlm_head = (h * h + h) + 2 * h + v  # transform dense, its LayerNorm, decoder bias
    nsp_head = 2 * h + 2
    return embeddings + encoder_parameters(preset) + pooler + mlm_head + nsp_head


def flops_per_sequence(preset: Preset, seq_len: int, max_predictions: int) -> float:
    """Training FLOPs (forward + backward) for one sequence; see the module docstring for the formula."""
    h, v = preset.hidden, preset.vocab_size
    encoder = 6 * seq_len * encoder_parameters(preset)
    attention = 12 * preset.layers * h * seq_len**2
    mlm = 6 * max_predictions * (h * h + h * v)
    nsp = 6 * (h * h + 2 * h)
    return float(encoder + attention + mlm + nsp)


def full_head_flops_per_sequence(preset: Preset, seq_len: int) -> float:
    """The same for Hugging Face's BertForPreTraining, whose MLM head (transform and vocabulary decoder) runs
    at all seq_len positions and ignores the unmasked ones afterwards. Mini at seq 128: 8.68 GFLOP per
    sequence, 2.43x the 3.57 of the head gathered at 20 positions."""
    return flops_per_sequence(preset, seq_len, max_predictions=seq_len)


# Dense bf16 peak FLOP/s per chip (fp16 for V100, which has no bf16), from vendor datasheets and
# cloud.google.com/tpu/docs/<generation>. A device missing here has no MFU: unknown, never guessed.
PEAK_FLOPS: dict[str, float] = {
    "A100": 312e12,
    "H100": 989e12,  # SXM
    "H200": 989e12,
    "V100": 125e12,
    "TPU v3": 123e12,
    "TPU v4": 275e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6e": 918e12,  # Trillium (cloud.google.com/tpu/docs/v6e)
}

# How frameworks spell the devices: torch.cuda.get_device_name ("NVIDIA H100 80GB HBM3",
# "Tesla V100-SXM2-16GB"), TPU device kinds ("TPU v4", "TPU v5 lite", "TPU v5p", JAX's "TPU v6 lite"). Order matters:
# the first match wins, so the more specific spellings come first.
_DEVICE_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"\bH100\b.*\bPCIe\b", ""),  # the PCIe card has a lower peak than the SXM part: not in the table
    (r"\bH200\b", "H200"),
    (r"\bH100\b", "H100"),
    (r"\bA100\b", "A100"),
    (r"\bV100\b", "V100"),
    (r"\bTPU\s*v6\s*(lite|e)\b|\bv6e\b", "TPU v6e"),
    (r"\bTPU\s*v5\s*(lite|e)\b|\bv5litepod\b|\bv5e\b", "TPU v5e"),
    (r"\bTPU\s*v5p?\b|\bv5p\b", "TPU v5p"),
    (r"\bTPU\s*v4\b|\bv4\b", "TPU v4"),
    (r"\bTPU\s*v3\b|\bv3\b", "TPU v3"),
)


def peak_flops_for(device_name: str) -> float | None:
    """The dense bf16 peak of one chip called `device_name`, or None when it is not known."""
    for pattern, key in _DEVICE_PATTERNS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return PEAK_FLOPS.get(key)
    return None
