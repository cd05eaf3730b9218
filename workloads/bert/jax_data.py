"""The JAX trainer's input: each step's global batch as one array sharded over every device of every worker.

The order of the training examples is a pure function of (seed, global step), as in the other trainers:
epoch e visits the split in the order of `numpy.random.default_rng([seed, e]).permutation(N)`, and step s
takes rows s*B .. s*B+B-1 of the epochs laid end to end (B the global batch). Every worker holds the split
in memory (each prepared the same bytes) and gathers only the rows its own devices hold, so the global
batch, and every loss, is the same whether 1 process or 2 feed the 8 devices, and a resumed run starts at
its step with no data replayed.

The reference's shards (formats.py: hdf5, TFRecord) are streamed instead (`Streamed`): each worker is
reader `process_index` of `process_count` (formats.ShardStream) and reads only its own share of each global
batch, which lands on its own devices. With one worker the batches are train_torch.py's with one process,
step for step.

A background thread gathers and places the next batches while the device computes; the trainer times
its wait for them apart from the step.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding

import formats

FEATURES = ("input_ids", "segment_ids", "input_mask", "masked_lm_positions")
PREFETCH = 2  # batches gathered ahead of the step that takes them


class Order:
    """Which examples make each global batch (module docstring)."""

    def __init__(self, examples: int, global_batch: int, seed: int) -> None:
        if examples < global_batch:
            raise ValueError(f"the train split holds {examples} examples, fewer than one global batch of {global_batch}")
        self.examples, self.global_batch, self.seed = examples, global_batch, seed
        self._epoch, self._permutation = -1, np.empty(0, np.int64)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch, self._permutation = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.examples)
        return self._permutation

    def rows(self, step: int) -> np.ndarray:
        """The split's rows that make global batch `step` (0-based)."""
        positions = np.arange(step * self.global_batch, (step + 1) * self.global_batch)
        epochs, offsets = np.divmod(positions, self.examples)
        return np.concatenate([self._order(int(e))[offsets[epochs == e]] for e in np.unique(epochs)])


def global_batch(arrays: dict[str, np.ndarray], rows: np.ndarray, sharding: NamedSharding) -> dict[str, jax.Array]:
    """The rows `rows` of the split as global arrays split along the batch over `sharding`'s devices;
    this process gathers and places only the rows its own devices hold."""
    batch = {}
    for name, array in arrays.items():
        shape = (len(rows), *array.shape[1:])
        pieces = [jax.device_put(array[rows[index[0]]], device)
                  for device, index in sharding.addressable_devices_indices_map(shape).items()]
        batch[name] = jax.make_array_from_single_device_arrays(shape, sharding, pieces)
    return batch


class Streamed:
    """This worker's share of each global batch from the reference's shards, placed on its own devices."""

    def __init__(self, source: formats.Source, global_batch_size: int, seed: int, sharding: NamedSharding) -> None:
        workers = jax.process_count()
        self.sharding = sharding
        self.stream = formats.ShardStream(source, reader=jax.process_index(), readers=workers,
                                          batch=global_batch_size // workers, seed=seed)

    def batch(self, step: int) -> dict[str, jax.Array]:
        # The batch axis is laid over the devices in process order, so this worker's rows are one contiguous
        # block of the global batch: make_array_from_process_local_data places them there.
        return {name: jax.make_array_from_process_local_data(self.sharding, rows)
                for name, rows in self.stream.batch_at(step).items()}


def in_memory(arrays: dict[str, np.ndarray], order: Order, sharding: NamedSharding) -> Callable[[int], dict]:
    """Global batch `step` of a split held in memory (ernie's own format)."""
    return lambda step: global_batch(arrays, order.rows(step), sharding)


class Feeder:
    """Global batches `make(step)` for steps first..last-1 from a background thread; `next()` blocks only
    when the thread is behind (that wait is the input-pipeline figure)."""

    def __init__(self, make: Callable[[int], dict[str, jax.Array]], first: int, last: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=PREFETCH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(make, first, last), daemon=True,
                                        name="bert-jax-input")
        self._thread.start()

    def _fill(self, make: Callable[[int], dict[str, jax.Array]], first: int, last: int) -> None:
        try:
            for step in range(first, last):
                item = make(step)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as exc:  # handed to the training loop, which raises it there
            self._queue.put(exc)

    def next(self) -> dict[str, jax.Array]:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def eval_batches(arrays: dict[str, np.ndarray], global_batch_size: int, sharding: NamedSharding) -> Iterator[dict[str, jax.Array]]:
    """The eval split (already padded to whole global batches: data.pad_to_batches) in file order."""
    for start in range(0, len(arrays["input_ids"]), global_batch_size):
        yield global_batch(arrays, np.arange(start, start + global_batch_size), sharding)
