"""workloads/bert/checkpoint_tf1.py: a TF1 checkpoint in the MLPerf reference's variable names and layout
(optimiser slots included), written here at the tiny size, loads into both of ernie's models, which then give
the same masked-LM logits; a missing or misshapen variable is named."""

from __future__ import annotations

import os

import numpy as np
import pytest

from test_bert_data import _siblings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
data, presets, checkpoint_tf1 = _siblings("data", "presets", "checkpoint_tf1")
TINY = presets.get_preset("tiny")
SEQ, PRED = 32, 5


def reference_variables(seed: int = 0) -> dict[str, np.ndarray]:
    """Values for every reference variable of the tiny preset: kernels N(0, 0.05), LayerNorm gammas near 1."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in checkpoint_tf1.reference_shapes(TINY).items():
        base = 1.0 if name.endswith("gamma") else 0.0
        out[name] = (base + rng.normal(0, 0.05, shape)).astype(np.float32)
    return out


def write_tf1_checkpoint(prefix, variables: dict[str, np.ndarray], *, slots: bool = True) -> None:
    """Save as the reference's run_pretraining.py does: tf.compat.v1 variables under their scoped names, the
    optimiser's adam_m / adam_v slots beside each, global_step and the beta powers."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        for name, value in variables.items():
            tf.compat.v1.get_variable(name, initializer=tf.constant(value))
            if slots:
                for slot in ("adam_m", "adam_v"):
                    tf.compat.v1.get_variable(f"{name}/{slot}", initializer=tf.zeros_like(value), trainable=False)
        if slots:
            tf.compat.v1.get_variable("global_step", initializer=tf.constant(28252, tf.int64), trainable=False)
            tf.compat.v1.get_variable("beta1_power", initializer=tf.constant(0.9, tf.float32), trainable=False)
            tf.compat.v1.get_variable("beta2_power", initializer=tf.constant(0.999, tf.float32), trainable=False)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(prefix), write_meta_graph=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("ckpt") / "model.ckpt-28252"
    write_tf1_checkpoint(prefix, reference_variables())
    return prefix


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    data.make_synthetic(out, seq_len=SEQ, max_predictions=PRED, train_examples=8, eval_examples=4, seed=1)
    return data.load_split(out, "train")


def test_both_models_load_it_and_give_the_same_mlm_logits(checkpoint, batch):
    import tensorflow as tf
    import torch

    (torch_model,) = _siblings("torch_model")
    (tf_model,) = _siblings("keras_model" if (data.Path(data.__file__).parent / "keras_model.py").exists() else "tf_model")
    model = torch_model.BertPretraining(torch_model.bert_config(TINY, dropout=0.0)).eval()
    checkpoint_tf1.load_torch(model, checkpoint, TINY)
    reference = reference_variables()
    # Kernels transposed, gamma/beta to weight/bias, the NSP weights as they are.
    np.testing.assert_array_equal(model.bert.encoder.layer[1].intermediate.dense.weight.detach().numpy(),
                                  reference["bert/encoder/layer_1/intermediate/dense/kernel"].T)
    np.testing.assert_array_equal(model.bert.embeddings.LayerNorm.bias.detach().numpy(),
                                  reference["bert/embeddings/LayerNorm/beta"])
    np.testing.assert_array_equal(model.nsp.weight.detach().numpy(), reference["cls/seq_relationship/output_weights"])

    keys = ("input_ids", "segment_ids", "input_mask", "masked_lm_positions")
    with torch.no_grad():
        torch_logits, torch_nsp = model(*(torch.from_numpy(batch[k]) for k in keys))
    keras_model = tf_model.build_pretrainer(TINY, SEQ, PRED)
    checkpoint_tf1.load_keras(keras_model, checkpoint, TINY)
    outputs = keras_model({k: tf.constant(batch[k]) for k in keys}, training=False)
    np.testing.assert_allclose(outputs["mlm_logits"].numpy(), torch_logits.numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(outputs["nsp_logits"].numpy(), torch_nsp.numpy(), rtol=1e-3, atol=1e-3)
    # Not a trivial agreement: loaded weights predict otherwise than fresh ones.
    fresh, _ = torch_model.BertPretraining(torch_model.bert_config(TINY, dropout=0.0)).eval()(
        *(torch.from_numpy(batch[k]) for k in keys))
    assert not torch.allclose(fresh.detach(), torch_logits, atol=1e-2)


def test_slots_are_skipped_and_a_cached_copy_is_read_without_tensorflow(checkpoint, monkeypatch):
    variables = checkpoint_tf1.read_reference(checkpoint, TINY)
    assert set(variables) == set(checkpoint_tf1.reference_shapes(TINY))  # no adam_m, global_step, beta powers
    cached = checkpoint_tf1.cache_path(checkpoint)
    assert cached.is_file() and cached.parent == checkpoint.parent

    def no_tensorflow(_):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(checkpoint_tf1, "_read_with_tensorflow", no_tensorflow)
    again = checkpoint_tf1.read_reference(checkpoint, TINY)
    np.testing.assert_array_equal(again["cls/predictions/output_bias"], variables["cls/predictions/output_bias"])


def test_a_missing_or_misshapen_variable_is_named(tmp_path):
    variables = reference_variables()
    del variables["bert/encoder/layer_1/output/dense/bias"]
    write_tf1_checkpoint(tmp_path / "missing.ckpt", variables, slots=False)
    with pytest.raises(checkpoint_tf1.CheckpointError, match=r"lacks the variable bert/encoder/layer_1/output/dense/bias"):
        checkpoint_tf1.read_reference(tmp_path / "missing.ckpt", TINY)

    variables = reference_variables()
    variables["cls/predictions/transform/dense/kernel"] = variables["cls/predictions/transform/dense/kernel"][:, :64]
    write_tf1_checkpoint(tmp_path / "shape.ckpt", variables, slots=False)
    with pytest.raises(checkpoint_tf1.CheckpointError,
                       match=r"cls/predictions/transform/dense/kernel has shape \[128, 64\], preset tiny needs \[128, 128\]"):
        checkpoint_tf1.read_reference(tmp_path / "shape.ckpt", TINY)

    with pytest.raises(checkpoint_tf1.CheckpointError, match=r"nowhere.ckpt.index"):
        checkpoint_tf1.read_reference(tmp_path / "nowhere.ckpt", TINY)
    # The large preset's shapes are not the tiny checkpoint's: the first mismatch is named.
    with pytest.raises(checkpoint_tf1.CheckpointError, match=r"lacks the variable bert/encoder/layer_2/"):
        checkpoint_tf1.read_reference(tmp_path / "shape.ckpt", presets.get_preset("large"))
