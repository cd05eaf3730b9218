"""The reference's shards (formats.py: hdf5, TFRecord, or ernie's own) as train_torch.py's example stream.

Each process reads only its own rows: it is reader `rank` of `world` over the shards (formats.ShardStream),
and its rows of step s are its micro-batches of that step, placed where train_step looks for them in the
global batch (chunk micro * world + rank). The masked-token count that normalises the loss is summed over
the whole global batch with one all-reduce. Memory holds one block of rows, whatever the data's size.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

import formats


class ShardedExamples:
    """The interface of train_torch.ExampleStream (global_indices, tensors, gather, mlm_denominator), streamed."""

    def __init__(self, source: formats.Source, *, global_batch: int, micro_batch: int, accumulation: int,
                 rank: int, world: int, seed: int) -> None:
        self.world, self.rank = world, rank
        self.global_batch, self.micro_batch, self.accumulation = global_batch, micro_batch, accumulation
        self.stream = formats.ShardStream(source, reader=rank, readers=world, batch=micro_batch * accumulation,
                                          seed=seed)
        self.format = source.format
        self.size = source.examples if source.format != "tfrecord" else None  # TFRecord: counting reads every file
        self.tensors: dict[str, torch.Tensor] = {}

    def global_indices(self, step: int) -> torch.Tensor:
        """Positions in the global batch of step `step`, pointing at this process's rows (read now)."""
        self.tensors = {k: torch.from_numpy(v) for k, v in self.stream.batch_at(step).items()}
        indices = torch.zeros(self.global_batch, dtype=torch.long)
        for micro in range(self.accumulation):
            chunk = micro * self.world + self.rank
            indices[chunk * self.micro_batch : (chunk + 1) * self.micro_batch] = torch.arange(
                micro * self.micro_batch, (micro + 1) * self.micro_batch)
        return indices

    def gather(self, indices: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        return {k: v[indices].to(device, non_blocking=True) for k, v in self.tensors.items()}

    def mlm_denominator(self, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The real predictions of the whole global batch: this process's, summed over all of them."""
        total = self.tensors["masked_lm_weights"].sum().to(device)
        if self.world > 1:
            dist.all_reduce(total)
        return total
