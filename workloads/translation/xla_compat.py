"""fairseq 0.12's `--tpu` path on current torch_xla (2.x, PJRT): the calls it makes that torch_xla removed or changed,
mapped onto their replacements in the fairseq process before fairseq is imported. No fairseq file is edited.

fairseq 0.12 (2022) was written against torch_xla's XRT runtime. What it calls, and what torch_xla 2.9 has instead:

* `xla_model.xrt_world_size()` / `get_ordinal()` (distributed/utils.py: distributed_init, get_global_rank,
  get_global_world_size): removed with XRT; `torch_xla.runtime.world_size()` / `global_ordinal()` replace them.
* `xmp.spawn(fn, nprocs=min(world_size, 8))` (distributed/utils.py: call_main): PJRT's spawn accepts only
  nprocs 1 or None and starts one process per local device by itself (a v4/v5 TPU VM: one per chip); the world
  size then comes from the runtime, which distributed_init checks against --distributed-world-size.
* `xla_model.get_memory_info(device)["kb_free"/"kb_total"]` (trainer.py, every --log-interval): now
  `bytes_used`/`bytes_limit`; XLA's CPU device keeps no allocator statistics and raises, so it reads as 0.

Two more removals sit on the same path, in numpy 2: `--num-batch-buckets` (launch.py passes it with `--tpu`, so
that XLA compiles a few graphs, not hundreds) calls `np.percentile(..., interpolation="lower")`
(data_utils.get_buckets; numpy 2.4 removed `interpolation`, named `method` since 1.22, so it is passed on as that)
and `np.compat.long` (language_pair_dataset.py; numpy 2.0 removed np.compat, where long was Python's int).

And one in how it starts: `import torch_xla` calls a bare `logging.basicConfig()`, a WARNING-level handler on stderr,
so fairseq_cli's own basicConfig (INFO on stdout) does nothing and every line run.py reads from fairseq is lost.
install() takes off every root handler added while it imports torch_xla and fairseq.

fairseq's own `utils.tpu_data_loader` has a race that current torch_xla's ParallelLoader makes bite: it starts the
loader (whose thread begins taking batches at once) before it reads how many batches the iterator has already given,
and counts from there, so batches the thread took first are counted as already done. A one-batch validation set came
out empty here at the third epoch (fairseq then fails with KeyError: 'bleu'). The replacement reads the count first.

Validation BLEU (`--eval-bleu`, every epoch: the stop rule) decodes on the host CPU, not on the XLA device.
fairseq's beam search grows its tensors one token at a time and reads results back at every step, so XLA compiles a
new graph per step and per batch: measured here on XLA's CPU device, ten synthetic sentences had not finished in seven
minutes. `bleu_on_host` hands the generator a float32 copy of the weights on the CPU, made once per validation, and the
batch moved there; the loss part of validation stays on the device. (The final test, fairseq-generate, already runs on
the CPU on TPU hosts: evaluate.generate_command.)

`unsupported_reason()` runs in run.py's own process, before anything starts; it imports torch_xla but never
starts its runtime (a TPU chip admits one process, which must be fairseq's).
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib
import importlib.metadata
import inspect
import json
import logging
import types
from typing import Any

# What this module puts in place, and the torch_xla functions it puts them on.
REPLACEMENTS = {"xrt_world_size": "world_size", "get_ordinal": "global_ordinal"}


def unsupported_reason() -> str | None:
    """Why fairseq's --tpu path cannot run with the installed torch_xla, even with this module; None when it can."""
    try:
        runtime = importlib.import_module("torch_xla.runtime")
        xm = importlib.import_module("torch_xla.core.xla_model")
    except ImportError as err:
        return (f"torch_xla is not installed ({err}): on a TPU VM install torch-xla[tpu] matching torch "
                "(requirements-xla.lock pins torch 2.9.0 and torch-xla 2.9.0); `make xla-env` builds it here")
    version = importlib.metadata.version("torch-xla")
    missing = [f"torch_xla.runtime.{new}" for old, new in REPLACEMENTS.items()
               if not hasattr(xm, old) and not hasattr(runtime, new)]
    missing += [f"xla_model.{name}" for name in ("get_local_ordinal", "rendezvous", "mark_step", "xla_device",
                                                 "get_memory_info") if not hasattr(xm, name)]
    if missing:
        return f"torch_xla {version} has neither fairseq 0.12's calls nor their replacements: {', '.join(missing)}"
    return None


def _memory_info(original: Any, device: Any) -> dict:
    try:
        info = dict(original(device))
    except RuntimeError:  # XLA's CPU device: "GetAllocatorStats is not supported"
        return {"kb_free": 0, "kb_total": 0}
    if "kb_free" not in info and "bytes_limit" in info:
        info["kb_total"] = info["bytes_limit"] / 1024
        info["kb_free"] = (info["bytes_limit"] - info.get("bytes_used", 0)) / 1024
    return info


def _spawn(original: Any, fn: Any, args: tuple = (), nprocs: int | None = None, **kwargs: Any) -> Any:
    # PJRT starts one process per local device whatever fairseq asks for; 1 stays 1 (a single process).
    return original(fn, args=args, nprocs=1 if nprocs == 1 else None, **kwargs)


def _percentile(original: Any, *args: Any, interpolation: str | None = None, **kwargs: Any) -> Any:
    if interpolation is not None:
        kwargs["method"] = interpolation
    return original(*args, **kwargs)


def _tpu_data_loader(xm: Any, itr: Any) -> Any:
    # fairseq.utils.tpu_data_loader, with start read before ParallelLoader's thread can advance itr.
    parallel_loader = importlib.import_module("torch_xla.distributed.parallel_loader")
    iterators = importlib.import_module("fairseq.data.iterators")
    xm.rendezvous("tpu_data_loader")  # wait for all workers
    xm.mark_step()
    device = xm.xla_device()
    start, total = getattr(itr, "n", 0), len(itr)
    return iterators.CountingIterator(parallel_loader.ParallelLoader(itr, [device]).per_device_loader(device),
                                      start=start, total=total)


def install() -> list[str]:
    """Put the replacements in place (idempotent); return the names it supplied, for the log."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    runtime = importlib.import_module("torch_xla.runtime")
    xm = importlib.import_module("torch_xla.core.xla_model")
    xmp = importlib.import_module("torch_xla.distributed.xla_multiprocessing")
    supplied = []
    for old, new in REPLACEMENTS.items():
        if not hasattr(xm, old):
            setattr(xm, old, getattr(runtime, new))
            supplied.append(f"xla_model.{old} = runtime.{new}")
    if not getattr(xm.get_memory_info, "_ernie_compat", False):
        xm.get_memory_info = functools.partial(_memory_info, xm.get_memory_info)
        xm.get_memory_info._ernie_compat = True
        supplied.append("xla_model.get_memory_info (kb_free, kb_total)")
    if not getattr(xmp.spawn, "_ernie_compat", False):
        xmp.spawn = functools.partial(_spawn, xmp.spawn)
        xmp.spawn._ernie_compat = True
        supplied.append("xla_multiprocessing.spawn (nprocs: one per local device)")
    numpy = importlib.import_module("numpy")
    if "interpolation" not in inspect.signature(numpy.percentile).parameters and \
            not getattr(numpy.percentile, "_ernie_compat", False):
        numpy.percentile = functools.partial(_percentile, numpy.percentile)
        numpy.percentile._ernie_compat = True
        supplied.append("numpy.percentile (interpolation= as method=)")
    if not hasattr(numpy, "compat"):
        numpy.compat = types.SimpleNamespace(long=int)
        supplied.append("numpy.compat.long")
    utils = importlib.import_module("fairseq.utils")
    if not getattr(utils.tpu_data_loader, "_ernie_compat", False):
        utils.tpu_data_loader = functools.partial(_tpu_data_loader, xm)
        utils.tpu_data_loader._ernie_compat = True
        supplied.append("fairseq.utils.tpu_data_loader (counts before the loader thread starts)")
    translation = importlib.import_module("fairseq.tasks.translation")
    if bleu_on_host(translation.TranslationTask):
        supplied.append("TranslationTask validation BLEU decoded on the host CPU")
    for handler in [h for h in root.handlers if h not in handlers]:  # torch_xla's, and those of what it imports
        root.removeHandler(handler)
        supplied.append(f"root log handler {handler} removed")
    return supplied


def bleu_on_host(task_class: type) -> bool:
    """Make task_class's validation BLEU decode a CPU copy of an XLA model; False when it already does."""
    if getattr(task_class._inference_with_bleu, "_ernie_compat", False):
        return False
    torch = importlib.import_module("torch")
    utils = importlib.import_module("fairseq.utils")
    inference, begin = task_class._inference_with_bleu, task_class.begin_valid_epoch

    def begin_valid_epoch(self: Any, epoch: int, model: Any) -> Any:
        self._ernie_host_generator = None  # trained since the last validation: copy the weights again
        return begin(self, epoch, model)

    def inference_with_bleu(self: Any, generator: Any, sample: Any, model: Any) -> Any:
        if next(model.parameters()).device.type != "xla":
            return inference(self, generator, sample, model)
        host = getattr(self, "_ernie_host_generator", None)
        if host is None:
            # The generator's own model is the bare one build_model made (model may be a distributed wrapper).
            weights = copy.deepcopy(generator.model.models[0]).to("cpu", torch.float32).eval()
            host = self._ernie_host_generator = self.build_generator(
                [weights], argparse.Namespace(**json.loads(self.cfg.eval_bleu_args)))
        return inference(self, host, utils.move_to_cpu(sample), host.model.models[0])

    inference_with_bleu._ernie_compat = True
    task_class._inference_with_bleu, task_class.begin_valid_epoch = inference_with_bleu, begin_valid_epoch
    return True
