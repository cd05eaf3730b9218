"""The reference's shards (formats.py: hdf5, TFRecord, or ernie's own) as tf_pretrain.py's training input.

Each input pipeline (one per worker host under tf.distribute) is one reader of formats.ShardStream: it reads
only its own shards, one block of rows at a time, and yields its replicas' batches of each step in turn, as
distribute_datasets_from_function expects. With one pipeline the batches are train_torch.py's with one
process, step for step: the same stream, the same order. The global masked-token count is all-reduced by
the replica step itself (tf_pretrain.replica_step).
"""

from __future__ import annotations

import tensorflow as tf

import formats
from data import FIELDS


def train_dataset(source: formats.Source, *, global_batch: int, seed: int, first_step: int, num_steps: int,
                  context: tf.distribute.InputContext) -> tf.data.Dataset:
    """Replica batches for steps first_step .. first_step+num_steps-1 of this pipeline's stream."""
    per_replica = context.get_per_replica_batch_size(global_batch)
    local = context.num_replicas_in_sync // context.num_input_pipelines

    def rows():
        stream = formats.ShardStream(source, reader=context.input_pipeline_id, readers=context.num_input_pipelines,
                                     batch=per_replica * local, seed=seed)
        for step in range(first_step, first_step + num_steps):
            batch = stream.batch_at(step)
            for replica in range(local):
                yield {k: v[replica * per_replica : (replica + 1) * per_replica] for k, v in batch.items()}

    dims = {"seq": source.seq_len, "pred": source.max_predictions}
    signature = {name: tf.TensorSpec((per_replica,) if dim is None else (per_replica, dims[dim]), tf.as_dtype(dtype))
                 for name, (dtype, dim) in FIELDS.items()}
    return tf.data.Dataset.from_generator(rows, output_signature=signature).prefetch(2)
