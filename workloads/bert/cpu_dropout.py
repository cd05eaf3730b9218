"""Dropout for CPU training whose random draws cost a sixth of torch's: 16 random bits per element.

BERT-mini's training step drops out 17M activations (the embeddings, and per layer the attention
probabilities and two residual branches). Measured on one core (CPU time per million elements, forward
and backward): torch.compile's dropout 21 ms (it draws each element with its own 10-round Philox
evaluation, and again in the backward), eager `F.dropout` 7 ms (MKL's Bernoulli), these masks 1.6 ms.
At that rate dropout was a quarter of a compiled fp32 step.

A mask here is a view of random 64-bit words as 16-bit lanes, kept where a lane is at or above a
threshold: the drop probability is p rounded to a multiple of 2**-16 (0.1 becomes 0.1000061), and the
kept values are scaled by the inverse of the exact keep probability, so the expectation is unchanged.
The words come from torch's CPU generator (`random_`), so a run seeded the same draws the same masks,
eager or compiled. The mask is a custom op that torch.compile calls rather than traces: its code
generator would otherwise lower the draw to per-element Philox again. Tagged nondeterministic, it is
never recomputed in the backward; the multiply around it is fused with its neighbours.

`install(model)` puts these masks into a `transformers` BERT: its `nn.Dropout` modules and, through an
attention function registered with `transformers`, the attention-probability dropout (SDPA's own
dropout cannot take a mask). Only on CPUs: on GPUs compiled dropout is cheap and SDPA's fused kernels
matter more.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

LANES = 1 << 16  # values of one 16-bit lane
ATTENTION = "ernie_cpu_dropout"


@torch.library.custom_op("ernie::keep_mask", mutates_args=(), tags=(torch.Tag.nondeterministic_seeded,))
def keep_mask(like: torch.Tensor, threshold: int) -> torch.Tensor:
    """A bool tensor shaped like `like`, each element False with probability threshold / 2**16."""
    n = like.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=like.device).random_(-(2**63), None)  # all 64 bits
    return words.view(torch.int16)[:n].view(like.shape) >= threshold - LANES // 2


@keep_mask.register_fake
def _(like: torch.Tensor, threshold: int) -> torch.Tensor:
    return torch.empty(like.shape, dtype=torch.bool, device=like.device)


def threshold_and_scale(p: float) -> tuple[int, float]:
    """The lane threshold for dropping with probability ~p, and the scale that keeps the mean."""
    threshold = round(p * LANES)
    return threshold, LANES / (LANES - threshold)


def mask_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    threshold, scale = threshold_and_scale(p)
    if threshold == 0:
        return x
    return x * keep_mask(x, threshold) * scale


class MaskDropout(nn.Module):
    """nn.Dropout(p) with the masks above."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mask_dropout(x, self.p) if self.training else x

    def extra_repr(self) -> str:
        return f"p={self.p}"


def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
              **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: SDPA without dropout (eval, --dropout 0), otherwise
    the same arithmetic written out (what SDPA itself falls back to when it drops out) with a mask above."""
    if dropout == 0.0:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=0.0, **kwargs)
    scores = torch.matmul(query, key.transpose(2, 3)) * (query.size(-1) ** -0.5 if scaling is None else scaling)
    if attention_mask is not None:  # sdpa_mask's: True where a query may attend
        scores = scores.masked_fill(attention_mask.logical_not(), float("-inf"))
    probs = mask_dropout(torch.softmax(scores, dim=-1), dropout)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the masks SDPA gets: boolean, None when nothing is padded


def install(model: nn.Module) -> None:
    """Every dropout of a `transformers` BERT (`model` or the modules under it) through these masks."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Dropout):
                setattr(parent, name, MaskDropout(child.p).train(child.training))  # the mode it replaces
    for bert in [m for m in model.modules() if hasattr(m, "set_attn_implementation")]:
        bert.set_attn_implementation(ATTENTION)
