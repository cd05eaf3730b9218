"""BERT with its pretraining heads, in PyTorch: `transformers`' BertModel plus heads that predict only
the masked positions.

Hugging Face's BertForPreTraining runs the MLM transform and the vocabulary-sized decoder over every
position (seq_len x hidden x vocab per sequence) and then ignores all but the ~15% masked ones. Here
the encoder output is gathered at `masked_lm_positions` first, so the head costs max_predictions rather
than seq_len rows: for BERT-base at seq 128 that is 20 rows instead of 128. The decoder's weight is the
word-embedding matrix itself (tied, one tensor), as in BERT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertPredictionHeadTransform

from presets import Preset


def bert_config(preset: Preset, dropout: float | None = None) -> BertConfig:
    """The `transformers` config of a preset, with SDPA attention (flash / memory-efficient kernels)."""
    p = preset.dropout if dropout is None else dropout
    return BertConfig(
        vocab_size=preset.vocab_size,
        hidden_size=preset.hidden,
        num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads,
        intermediate_size=preset.intermediate,
        max_position_embeddings=preset.max_position,
        type_vocab_size=preset.type_vocab,
        hidden_dropout_prob=p,
        attention_probs_dropout_prob=p,
        attn_implementation="sdpa",
    )


class BertPretraining(nn.Module):
    """BertModel, a masked-LM head applied at the masked positions only, and the next-sentence head."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=True)
        self.mlm_transform = BertPredictionHeadTransform(config)  # dense + GELU + LayerNorm, as in BERT
        self.mlm_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.nsp = nn.Linear(config.hidden_size, 2)
        for module in (self.mlm_transform.dense, self.nsp):
            nn.init.normal_(module.weight, std=config.initializer_range)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        segment_ids: torch.Tensor,
        input_mask: torch.Tensor,
        masked_lm_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MLM logits [B, P, vocab] at the masked positions, and NSP logits [B, 2]."""
        out = self.bert(input_ids=input_ids, token_type_ids=segment_ids, attention_mask=input_mask)
        hidden = out.last_hidden_state  # [B, S, H]
        index = masked_lm_positions.long().unsqueeze(-1).expand(-1, -1, hidden.size(-1))
        masked = torch.gather(hidden, 1, index)  # [B, P, H]: only these rows reach the vocab projection
        mlm_logits = F.linear(self.mlm_transform(masked), self.bert.embeddings.word_embeddings.weight, self.mlm_bias)
        return mlm_logits, self.nsp(out.pooler_output)


def pretraining_loss(
    mlm_logits: torch.Tensor,
    nsp_logits: torch.Tensor,
    batch: dict[str, torch.Tensor],
    mlm_denominator: torch.Tensor | float,
    nsp_denominator: torch.Tensor | float,
    upcast: bool = True,
) -> torch.Tensor:
    """Sum over this micro-batch of the weighted MLM and the NSP cross-entropies, each divided by its
    count over the whole global batch: summed over micro-batches and workers it is exactly the global
    batch's mean loss, however the batch was split.

    `upcast`: the vocabulary softmax in fp32. Without it a bf16 model's log-softmax runs in bf16 (its
    kernels accumulate in fp32; only the per-token losses are rounded, and they are summed in fp32):
    on a CPU that halves the memory traffic of the largest tensor of the step, [B*P, vocab]."""
    logits = mlm_logits.flatten(0, 1)
    mlm = F.cross_entropy(logits.float() if upcast else logits, batch["masked_lm_ids"].long().flatten(), reduction="none")
    mlm = (mlm.float() * batch["masked_lm_weights"].flatten()).sum() / mlm_denominator
    nsp = F.cross_entropy(nsp_logits.float(), batch["next_sentence_labels"].long(), reduction="sum") / nsp_denominator
    return mlm + nsp


class PretrainingStep(nn.Module):
    """The model and its loss as one module: what DistributedDataParallel wraps and torch.compile traces.

    With the loss inside, a compiled step fuses the vocabulary log-softmax, the loss and their backward
    into the model's graph: on a CPU those were three separate passes over [B*P, vocab] (log-softmax, its
    backward, and zero-filling the loss's gradient) outside it."""

    def __init__(self, model: BertPretraining, upcast: bool) -> None:
        super().__init__()
        self.model = model
        self.upcast = upcast

    def forward(self, batch: dict[str, torch.Tensor], mlm_denominator: torch.Tensor | float,
                nsp_denominator: torch.Tensor | float) -> torch.Tensor:
        mlm_logits, nsp_logits = self.model(
            batch["input_ids"], batch["segment_ids"], batch["input_mask"], batch["masked_lm_positions"])
        return pretraining_loss(mlm_logits, nsp_logits, batch, mlm_denominator, nsp_denominator, self.upcast)


def unique_parameter_count(model: nn.Module) -> int:
    """Trainable parameters, each tensor once (the tied decoder is the embedding tensor)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
