"""tf.data pipelines over the prepared ernie-bert-v1 arrays (data.py), for any tf.distribute strategy.

The order of the training examples is a pure function of (seed, global step): epoch e visits the
split in the order of a stateless permutation (`tf.random.experimental.index_shuffle` seeded with
[seed, e]), and step s takes rows s*B .. s*B+B-1 of it (B the global batch; an epoch's last partial batch
is skipped). So a resumed run starts at its step with no data replayed, every input pipeline takes its
own slice of the same global batch, and the order does not depend on how many hosts read it. Each
element is one replica's batch, gathered from the split held in memory, and prefetched.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from data import pad_to_batches

FEATURES = ("input_ids", "segment_ids", "input_mask", "masked_lm_positions")
LABELS = ("masked_lm_ids", "masked_lm_weights", "next_sentence_labels")


def replica_batch_size(global_batch: int, replicas: int) -> int:
    """The batch each replica computes; the global batch must split evenly."""
    if global_batch % replicas:
        raise ValueError(f"--batch-size {global_batch} must be a multiple of the {replicas} replicas in sync")
    return global_batch // replicas


def _slices(
    num_steps: int, first_step: int, global_batch: int, context: tf.distribute.InputContext
) -> tuple[tf.data.Dataset, int]:
    """(step, row offset within the global batch) for each of this pipeline's replica batches, in order."""
    per_replica = context.get_per_replica_batch_size(global_batch)
    local = context.num_replicas_in_sync // context.num_input_pipelines  # replicas fed by this pipeline
    first_replica = context.input_pipeline_id * local
    elements = tf.data.Dataset.range(first_step * local, (first_step + num_steps) * local)
    return elements.map(lambda k: (k // local, (first_replica + k % local) * per_replica)), per_replica


def train_dataset(
    arrays: dict[str, np.ndarray],
    *,
    global_batch: int,
    seed: int,
    first_step: int,
    num_steps: int,
    context: tf.distribute.InputContext,
) -> tf.data.Dataset:
    """Replica batches for steps first_step .. first_step+num_steps-1 of the seeded order (module docstring)."""
    examples = len(arrays["input_ids"])
    steps_per_epoch = examples // global_batch
    if steps_per_epoch == 0:
        raise ValueError(f"the train split holds {examples} examples, fewer than one global batch of {global_batch}")
    tensors = {name: tf.constant(array) for name, array in arrays.items()}
    slices, per_replica = _slices(num_steps, first_step, global_batch, context)

    def gather(step: tf.Tensor, offset: tf.Tensor) -> dict[str, tf.Tensor]:
        epoch = step // steps_per_epoch
        positions = (step % steps_per_epoch) * global_batch + offset + tf.range(per_replica, dtype=tf.int64)
        rows = tf.random.experimental.index_shuffle(
            positions, seed=tf.stack([tf.constant(seed, tf.int64), epoch]), max_index=examples - 1
        )
        return {name: tf.gather(tensor, rows) for name, tensor in tensors.items()}

    return slices.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(
    arrays: dict[str, np.ndarray], *, global_batch: int, context: tf.distribute.InputContext
) -> tf.data.Dataset:
    """The whole eval split in file order, padded to whole global batches (see `pad_to_batches`)."""
    padded = pad_to_batches(arrays, global_batch)
    tensors = {name: tf.constant(array) for name, array in padded.items()}
    slices, per_replica = _slices(len(padded["input_ids"]) // global_batch, 0, global_batch, context)

    def gather(step: tf.Tensor, offset: tf.Tensor) -> dict[str, tf.Tensor]:
        start = step * global_batch + offset
        return {name: tensor[start : start + per_replica] for name, tensor in tensors.items()}

    return slices.map(gather).prefetch(tf.data.AUTOTUNE)
