"""The MLPerf reference's TF1 BERT checkpoint (google-research/bert variable names), as ernie's weights.

MLPerf's BERT starts from the phase-1 checkpoint `model.ckpt-28252` (bert_config.json: BERT-large,
vocab 30522). Its variables are named as google-research/bert's modeling.py names them:

    bert/embeddings/{word,position,token_type}_embeddings, bert/embeddings/LayerNorm/{gamma,beta}
    bert/encoder/layer_N/attention/self/{query,key,value}/{kernel,bias}
    bert/encoder/layer_N/attention/output/dense/{kernel,bias}, .../attention/output/LayerNorm/{gamma,beta}
    bert/encoder/layer_N/intermediate/dense/{kernel,bias}, bert/encoder/layer_N/output/dense/{kernel,bias}
    bert/encoder/layer_N/output/LayerNorm/{gamma,beta}, bert/pooler/dense/{kernel,bias}
    cls/predictions/transform/dense/{kernel,bias}, cls/predictions/transform/LayerNorm/{gamma,beta}
    cls/predictions/output_bias, cls/seq_relationship/{output_weights,output_bias}

A TF dense kernel is [in, out]; torch's Linear weight is [out, in], so kernels are transposed for
PyTorch; gamma/beta become LayerNorm weight/bias. cls/seq_relationship/output_weights is already [2, H].
The MLM decoder is tied to the word embeddings in all three models. The optimiser's slots (adam_m, adam_v,
LAMB*, beta1_power, beta2_power) and global_step are skipped: MLPerf restarts the optimiser.

Reading needs TensorFlow (tf.train.load_checkpoint). The model's variables are cached once, beside the
checkpoint (or in `cache_dir`), as `<prefix>.ernie.npz` keyed by the reference names, so a PyTorch host
reads the cache without TensorFlow: `python checkpoint_tf1.py CKPT --preset large` writes it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np

from presets import Preset, get_preset

CACHE_SUFFIX = ".ernie.npz"
SOURCE_KEY = "__source__"  # the cache's record of which checkpoint files it was made from
SKIPPED = re.compile(r"(^|/)(global_step|beta[12]_power|adam_[mv]|LAMB(_\d+)?|Adam(_\d+)?|Momentum)(/|$)")


class CheckpointError(ValueError):
    """The checkpoint is missing, lacks a variable, or holds one of another shape than the model's."""


# ---------------------------------------------------------------------------------------------- reference layout


def reference_shapes(preset: Preset) -> dict[str, tuple[int, ...]]:
    """Every model variable of the reference checkpoint for `preset`, with its TF shape."""
    h, i = preset.hidden, preset.intermediate
    shapes = {
        "bert/embeddings/word_embeddings": (preset.vocab_size, h),
        "bert/embeddings/position_embeddings": (preset.max_position, h),
        "bert/embeddings/token_type_embeddings": (preset.type_vocab, h),
        "bert/embeddings/LayerNorm/gamma": (h,),
        "bert/embeddings/LayerNorm/beta": (h,),
        "bert/pooler/dense/kernel": (h, h),
        "bert/pooler/dense/bias": (h,),
        "cls/predictions/transform/dense/kernel": (h, h),
        "cls/predictions/transform/dense/bias": (h,),
        "cls/predictions/transform/LayerNorm/gamma": (h,),
        "cls/predictions/transform/LayerNorm/beta": (h,),
        "cls/predictions/output_bias": (preset.vocab_size,),
        "cls/seq_relationship/output_weights": (2, h),
        "cls/seq_relationship/output_bias": (2,),
    }
    for n in range(preset.layers):
        layer = f"bert/encoder/layer_{n}"
        for part in ("query", "key", "value"):
            shapes[f"{layer}/attention/self/{part}/kernel"] = (h, h)
            shapes[f"{layer}/attention/self/{part}/bias"] = (h,)
        shapes.update({
            f"{layer}/attention/output/dense/kernel": (h, h),
            f"{layer}/attention/output/dense/bias": (h,),
            f"{layer}/attention/output/LayerNorm/gamma": (h,),
            f"{layer}/attention/output/LayerNorm/beta": (h,),
            f"{layer}/intermediate/dense/kernel": (h, i),
            f"{layer}/intermediate/dense/bias": (i,),
            f"{layer}/output/dense/kernel": (i, h),
            f"{layer}/output/dense/bias": (h,),
            f"{layer}/output/LayerNorm/gamma": (h,),
            f"{layer}/output/LayerNorm/beta": (h,),
        })
    return shapes


# ---------------------------------------------------------------------------------------------- reading


def cache_path(checkpoint: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    prefix = Path(checkpoint)
    return (Path(cache_dir) if cache_dir else prefix.parent) / (prefix.name + CACHE_SUFFIX)


def _source_stamp(checkpoint: Path) -> str:
    """Which files the cache was made from: the index file's size and mtime."""
    index = Path(str(checkpoint) + ".index")
    if not index.is_file():
        raise CheckpointError(f"checkpoint {checkpoint} not found: expected {index} (give the prefix, e.g. "
                              "model.ckpt-28252, not a file)")
    stat = index.stat()
    return f"{index.name}:{stat.st_size}:{int(stat.st_mtime)}"


def read_reference(checkpoint: str | os.PathLike, preset: Preset, *,
                   cache_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The model variables of a reference TF1 checkpoint, every one present and of `preset`'s shape,
    from the cached copy when it was made from these files, else read with TensorFlow and cached."""
    checkpoint = Path(checkpoint)
    cached = cache_path(checkpoint, cache_dir)
    stamp = _source_stamp(checkpoint) if Path(str(checkpoint) + ".index").is_file() else None
    if cached.is_file():
        with np.load(cached, allow_pickle=False) as archive:
            if stamp is None or str(archive[SOURCE_KEY]) == stamp:
                variables = {k: archive[k] for k in archive.files if k != SOURCE_KEY}
                _check(variables, preset, str(cached))
                return variables
    if stamp is None:
        _source_stamp(checkpoint)  # raises, naming the missing file
    variables = _read_with_tensorflow(checkpoint)
    _check(variables, preset, str(checkpoint))
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(cached.name + ".tmp.npz")
        np.savez(tmp, **{SOURCE_KEY: np.array(stamp)}, **variables)
        tmp.replace(cached)
    except OSError as exc:  # a read-only checkpoint directory: convert again next time
        print(f"checkpoint_tf1: could not cache {cached} ({exc})", file=sys.stderr)
    return variables


def _read_with_tensorflow(checkpoint: Path) -> dict[str, np.ndarray]:
    try:
        import tensorflow as tf
    except ImportError:
        raise CheckpointError(
            f"reading {checkpoint} needs TensorFlow: pip install tensorflow-cpu, or convert it where TensorFlow "
            f"is with `python checkpoint_tf1.py {checkpoint}` and ship {cache_path(checkpoint).name} beside it"
        ) from None
    try:
        reader = tf.train.load_checkpoint(str(checkpoint))
    except (tf.errors.OpError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {checkpoint} cannot be read ({exc})") from None
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map() if not SKIPPED.search(name)}


def _check(variables: dict[str, np.ndarray], preset: Preset, where: str) -> None:
    expected = reference_shapes(preset)
    missing = [name for name in expected if name not in variables]
    if missing:
        raise CheckpointError(f"{where} lacks the variable {missing[0]}"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                              + f": it is not a reference BERT checkpoint of preset {preset.name}")
    for name, shape in expected.items():
        if tuple(variables[name].shape) != shape:
            raise CheckpointError(f"{where}: {name} has shape {list(variables[name].shape)}, preset {preset.name} "
                                  f"needs {list(shape)}")


# ---------------------------------------------------------------------------------------------- ernie's models


def torch_state(variables: dict[str, np.ndarray], preset: Preset) -> dict[str, np.ndarray]:
    """torch_model.BertPretraining's parameters by name (transformers' BertModel plus ernie's heads)."""
    v = variables
    state = {
        "bert.embeddings.word_embeddings.weight": v["bert/embeddings/word_embeddings"],
        "bert.embeddings.position_embeddings.weight": v["bert/embeddings/position_embeddings"],
        "bert.embeddings.token_type_embeddings.weight": v["bert/embeddings/token_type_embeddings"],
        "bert.embeddings.LayerNorm.weight": v["bert/embeddings/LayerNorm/gamma"],
        "bert.embeddings.LayerNorm.bias": v["bert/embeddings/LayerNorm/beta"],
        "bert.pooler.dense.weight": v["bert/pooler/dense/kernel"].T,
        "bert.pooler.dense.bias": v["bert/pooler/dense/bias"],
        "mlm_transform.dense.weight": v["cls/predictions/transform/dense/kernel"].T,
        "mlm_transform.dense.bias": v["cls/predictions/transform/dense/bias"],
        "mlm_transform.LayerNorm.weight": v["cls/predictions/transform/LayerNorm/gamma"],
        "mlm_transform.LayerNorm.bias": v["cls/predictions/transform/LayerNorm/beta"],
        "mlm_bias": v["cls/predictions/output_bias"],
        "nsp.weight": v["cls/seq_relationship/output_weights"],
        "nsp.bias": v["cls/seq_relationship/output_bias"],
    }
    for n in range(preset.layers):
        tf_layer, layer = f"bert/encoder/layer_{n}", f"bert.encoder.layer.{n}"
        for tf_name, name in (("attention/self/query", "attention.self.query"),
                              ("attention/self/key", "attention.self.key"),
                              ("attention/self/value", "attention.self.value"),
                              ("attention/output/dense", "attention.output.dense"),
                              ("intermediate/dense", "intermediate.dense"),
                              ("output/dense", "output.dense")):
            state[f"{layer}.{name}.weight"] = v[f"{tf_layer}/{tf_name}/kernel"].T
            state[f"{layer}.{name}.bias"] = v[f"{tf_layer}/{tf_name}/bias"]
        for tf_name, name in (("attention/output/LayerNorm", "attention.output.LayerNorm"),
                              ("output/LayerNorm", "output.LayerNorm")):
            state[f"{layer}.{name}.weight"] = v[f"{tf_layer}/{tf_name}/gamma"]
            state[f"{layer}.{name}.bias"] = v[f"{tf_layer}/{tf_name}/beta"]
    return {k: np.ascontiguousarray(a, dtype=np.float32) for k, a in state.items()}


def keras_weights(variables: dict[str, np.ndarray], preset: Preset) -> dict[str, np.ndarray]:
    """tf_model.build_pretrainer's variables by path (keras-hub's BertBackbone and MaskedLMHead, the NSP head);
    keras-hub's attention keeps its kernels per head: [H, heads, head_dim] and [heads, head_dim, H]."""
    v, heads, hd, h = variables, preset.heads, preset.head_dim, preset.hidden
    weights = {
        "token_embedding/embeddings": v["bert/embeddings/word_embeddings"],
        "position_embedding/embeddings": v["bert/embeddings/position_embeddings"],
        "segment_embedding/embeddings": v["bert/embeddings/token_type_embeddings"],
        "embeddings_layer_norm/gamma": v["bert/embeddings/LayerNorm/gamma"],
        "embeddings_layer_norm/beta": v["bert/embeddings/LayerNorm/beta"],
        "pooled_dense/kernel": v["bert/pooler/dense/kernel"],
        "pooled_dense/bias": v["bert/pooler/dense/bias"],
        "mlm_head/intermediate_dense/kernel": v["cls/predictions/transform/dense/kernel"],
        "mlm_head/intermediate_dense/bias": v["cls/predictions/transform/dense/bias"],
        "mlm_head/intermediate_layer_norm/gamma": v["cls/predictions/transform/LayerNorm/gamma"],
        "mlm_head/intermediate_layer_norm/beta": v["cls/predictions/transform/LayerNorm/beta"],
        "mlm_head/output_bias": v["cls/predictions/output_bias"],
        "nsp_head/kernel": v["cls/seq_relationship/output_weights"].T,
        "nsp_head/bias": v["cls/seq_relationship/output_bias"],
    }
    for n in range(preset.layers):
        tf_layer, layer = f"bert/encoder/layer_{n}", f"transformer_layer_{n}"
        for part in ("query", "key", "value"):
            weights[f"{layer}/self_attention_layer/{part}/kernel"] = v[f"{tf_layer}/attention/self/{part}/kernel"].reshape(h, heads, hd)
            weights[f"{layer}/self_attention_layer/{part}/bias"] = v[f"{tf_layer}/attention/self/{part}/bias"].reshape(heads, hd)
        weights.update({
            f"{layer}/self_attention_layer/attention_output/kernel":
                v[f"{tf_layer}/attention/output/dense/kernel"].reshape(heads, hd, h),
            f"{layer}/self_attention_layer/attention_output/bias": v[f"{tf_layer}/attention/output/dense/bias"],
            f"{layer}/self_attention_layer_norm/gamma": v[f"{tf_layer}/attention/output/LayerNorm/gamma"],
            f"{layer}/self_attention_layer_norm/beta": v[f"{tf_layer}/attention/output/LayerNorm/beta"],
            f"{layer}/feedforward_intermediate_dense/kernel": v[f"{tf_layer}/intermediate/dense/kernel"],
            f"{layer}/feedforward_intermediate_dense/bias": v[f"{tf_layer}/intermediate/dense/bias"],
            f"{layer}/feedforward_output_dense/kernel": v[f"{tf_layer}/output/dense/kernel"],
            f"{layer}/feedforward_output_dense/bias": v[f"{tf_layer}/output/dense/bias"],
            f"{layer}/feedforward_layer_norm/gamma": v[f"{tf_layer}/output/LayerNorm/gamma"],
            f"{layer}/feedforward_layer_norm/beta": v[f"{tf_layer}/output/LayerNorm/beta"],
        })
    return {k: np.ascontiguousarray(a, dtype=np.float32) for k, a in weights.items()}


def load_torch(model, checkpoint: str | os.PathLike, preset: Preset, *, cache_dir=None) -> None:
    """Set every parameter of a torch_model.BertPretraining from the checkpoint; none may be left out."""
    import torch

    state = torch_state(read_reference(checkpoint, preset, cache_dir=cache_dir), preset)
    params = dict(model.named_parameters())
    unset = sorted(set(params) - set(state))
    if unset:
        raise CheckpointError(f"the PyTorch model's {unset[0]} has no counterpart in {checkpoint}")
    with torch.no_grad():
        for name, array in state.items():
            if name not in params:
                raise CheckpointError(f"{checkpoint}: {name} has no parameter in the PyTorch model")
            params[name].copy_(torch.from_numpy(array))


def load_keras(model, checkpoint: str | os.PathLike, preset: Preset, *, cache_dir=None) -> None:
    """Assign every variable of a tf_model.build_pretrainer model from the checkpoint; none may be left out."""
    weights = keras_weights(read_reference(checkpoint, preset, cache_dir=cache_dir), preset)
    for variable in model.weights:
        if variable.path not in weights:
            raise CheckpointError(f"the Keras model's {variable.path} has no counterpart in {checkpoint}")
        variable.assign(weights[variable.path].astype(variable.dtype))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert a reference TF1 BERT checkpoint to ernie's cached copy.")
    parser.add_argument("checkpoint", help="the checkpoint prefix, e.g. bert_large/model.ckpt-28252")
    parser.add_argument("--preset", default="large", help="the model size the checkpoint holds")
    parser.add_argument("--cache-dir", default=None, help="where the .ernie.npz goes (default: beside it)")
    args = parser.parse_args(argv)
    try:
        variables = read_reference(args.checkpoint, get_preset(args.preset), cache_dir=args.cache_dir)
    except (CheckpointError, ValueError) as exc:
        parser.error(str(exc))
    print(f"{len(variables)} variables -> {cache_path(args.checkpoint, args.cache_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
