"""BERT with its pretraining heads on Keras 3 and keras-hub, the pretraining loss and accuracy, the dtype policy.

Backend-neutral (keras.ops only): the TensorFlow trainer (tf_pretrain.py) and the JAX one
(jax_pretrain.py) build, train and score the same model from here.

The model is the one the PyTorch workload trains, tensor for tensor: keras-hub's `BertBackbone`
(embeddings, encoder, tanh pooler), keras-hub's `MaskedLMHead` applied only at the masked positions
(dense + GELU + LayerNorm, decoder tied to the token embedding, its own bias) and a two-way
next-sentence classifier on the pooled [CLS] vector. Parameters count each tensor once, the tied
decoder with the embeddings: 4,433,468 for `tiny`, the figure of `flops.parameter_count`.

The loss is Google BERT's (run_pretraining.py): the masked-LM cross-entropy averaged over the real
predictions (`masked_lm_weights`) plus the next-sentence cross-entropy averaged over the batch, both
in float32 whatever the compute dtype, and normalised over the global batch as the PyTorch workload
normalises it.
"""

from __future__ import annotations

from typing import Any

import keras
import keras_hub
from keras import ops

from presets import Preset

Tensor = Any  # a tf.Tensor or a jax.Array, whichever backend Keras runs on

INITIALIZER_STDDEV = 0.02  # BERT's truncated-normal initializer range
LAYER_NORM_EPSILON = 1e-12  # BERT's, as keras-hub's backbone and transformers' BertConfig use


def build_pretrainer(preset: Preset, seq_len: int, max_predictions: int) -> keras.Model:
    """BERT plus masked-LM and next-sentence heads; inputs are the data format's fields by name."""
    if seq_len > preset.max_position:
        raise ValueError(f"seq_len {seq_len} exceeds the preset's max_position {preset.max_position}")
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=preset.vocab_size,
        num_layers=preset.layers,
        num_heads=preset.heads,
        hidden_dim=preset.hidden,
        intermediate_dim=preset.intermediate,
        dropout=preset.dropout,
        max_sequence_length=preset.max_position,
        num_segments=preset.type_vocab,
    )
    inputs = {
        name: keras.Input(shape=(length,), dtype="int32", name=name)
        for name, length in (
            ("input_ids", seq_len),
            ("segment_ids", seq_len),
            ("input_mask", seq_len),
            ("masked_lm_positions", max_predictions),
        )
    }
    encoded = backbone(
        {"token_ids": inputs["input_ids"], "segment_ids": inputs["segment_ids"], "padding_mask": inputs["input_mask"]}
    )
    initializer = keras.initializers.TruncatedNormal(stddev=INITIALIZER_STDDEV)
    mlm_logits = keras_hub.layers.MaskedLMHead(
        token_embedding=backbone.token_embedding,
        intermediate_activation="gelu",
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        kernel_initializer=initializer,
        name="mlm_head",
    )(encoded["sequence_output"], mask_positions=inputs["masked_lm_positions"])
    nsp_logits = keras.layers.Dense(2, kernel_initializer=initializer, name="nsp_head")(encoded["pooled_output"])
    return keras.Model(inputs, {"mlm_logits": mlm_logits, "nsp_logits": nsp_logits}, name="bert_pretrainer")


def pretraining_loss(
    outputs: dict[str, Tensor], batch: dict[str, Tensor], mlm_denominator: Tensor, nsp_denominator: Tensor
) -> dict[str, Tensor]:
    """This replica's share of the global batch's mean losses, as train_torch.py's `pretraining_loss`.

    The masked-LM cross-entropies are summed over this replica's real predictions and divided by the
    count of real predictions in the whole global batch (`mlm_denominator`), the next-sentence ones
    summed and divided by the global batch size (`nsp_denominator`): summed over replicas, the loss and
    its gradient are exactly the global batch's mean, however the batch is split. (On JAX the step sees
    the whole global batch as one sharded array, so the denominators are its own counts.)
    """
    per_token = ops.sparse_categorical_crossentropy(
        batch["masked_lm_ids"], ops.cast(outputs["mlm_logits"], "float32"), from_logits=True
    )
    mlm_loss = ops.sum(per_token * batch["masked_lm_weights"]) / mlm_denominator
    nsp_loss = (
        ops.sum(
            ops.sparse_categorical_crossentropy(
                batch["next_sentence_labels"], ops.cast(outputs["nsp_logits"], "float32"), from_logits=True
            )
        )
        / nsp_denominator
    )
    return {"loss": mlm_loss + nsp_loss, "mlm_loss": mlm_loss, "nsp_loss": nsp_loss}


def masked_lm_counts(outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(correct, real) masked-LM predictions of a batch: masked-LM accuracy is their ratio over the eval set."""
    weights = batch["masked_lm_weights"]
    predicted = ops.cast(ops.argmax(outputs["mlm_logits"], axis=-1), "int32")
    correct = ops.sum(ops.cast(ops.equal(predicted, ops.cast(batch["masked_lm_ids"], "int32")), "float32") * weights)
    return correct, ops.sum(weights)


def precision_policy(accelerator: str, gpu_compute_capability: tuple[int, int] | None = None) -> str:
    """The Keras dtype policy per device: bf16 where the hardware has it in its matrix units, else fp32.

    TPUs and Ampere-or-newer GPUs compute in bfloat16 with float32 variables (`mixed_bfloat16`, which
    needs no loss scaling). CPUs train in float32, as the PyTorch workload does there.
    """
    if accelerator == "tpu":
        return "mixed_bfloat16"
    if accelerator == "gpu" and gpu_compute_capability is not None and tuple(gpu_compute_capability) >= (8, 0):
        return "mixed_bfloat16"
    return "float32"
