"""The one place that composes fairseq-train for every accelerator: CPU, GPU (fp16/amp) and TPU (--tpu).

Topology comes from ernie's environment (docs/workloads.md): ERNIE_NUM_WORKERS hosts, this one is
ERNIE_WORKER_INDEX, worker 0 at ERNIE_COORDINATOR_ADDRESS. fairseq's own distributed flags carry it:

* GPU: one process per host; fairseq spawns one per local GPU and numbers them from
  `--distributed-rank` (= worker index x GPUs per host), all meeting at tcp://COORDINATOR:PORT (NCCL).
* CPU: one process per host, `--distributed-no-spawn` (fairseq's spawn counts CUDA devices, so it
  would start none), gloo, and fairseq's own all-reduce (`legacy_ddp`): DistributedDataParallel
  rejects `device_ids` for a CPU module, which fairseq's pytorch_ddp wrapper always passes.
* TPU: `--tpu`; torch_xla's PJRT runtime starts one process per local chip and forms the world across
  the slice's hosts by itself (xla_compat.py fits fairseq 0.12's calls to it).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prepare import FAIRSEQ_CMD
from recipes import Recipe

Accelerator = Literal["cpu", "gpu", "tpu"]
Precision = Literal["fp32", "fp16", "amp", "bf16"]

DEFAULT_PORT = 29500
# fairseq 0.12: --fp16 and --amp (fp16 autocast) run on GPUs; its --bf16 switches on --tpu, so bf16
# exists only on TPUs; CPUs train in fp32.
PRECISIONS: dict[str, tuple[str, ...]] = {"cpu": ("fp32",), "gpu": ("fp16", "amp", "fp32"), "tpu": ("bf16", "fp32")}
PRECISION_FLAGS: dict[str, tuple[str, ...]] = {"fp32": (), "fp16": ("--fp16",), "amp": ("--amp",), "bf16": ("--bf16",)}


@dataclass(frozen=True)
class Topology:
    """Where this process sits among all the training processes."""

    accelerator: Accelerator
    num_workers: int
    """Hosts (ERNIE_NUM_WORKERS)."""
    worker_index: int
    coordinator: str
    port: int
    devices_per_host: int
    """GPUs or TPU cores per host; 1 on a CPU host."""

    @property
    def world_size(self) -> int:
        return self.num_workers * self.devices_per_host

    @property
    def first_rank(self) -> int:
        return self.worker_index * self.devices_per_host


def topology_from_env(accelerator: Accelerator, devices_per_host: int, port: int,
                      env: dict[str, str] | os._Environ = os.environ) -> Topology:
    """The topology ernie's ERNIE_* variables describe; a single local host when they are absent."""
    try:
        num_workers = int(env.get("ERNIE_NUM_WORKERS", "1"))
        worker_index = int(env.get("ERNIE_WORKER_INDEX", "0"))
    except ValueError as err:
        raise ValueError(f"ERNIE_NUM_WORKERS / ERNIE_WORKER_INDEX must be integers: {err}") from None
    if num_workers < 1 or not 0 <= worker_index < num_workers:
        raise ValueError(f"ERNIE_WORKER_INDEX={worker_index} must lie in 0..ERNIE_NUM_WORKERS-1 "
                         f"(ERNIE_NUM_WORKERS={num_workers})")
    coordinator = env.get("ERNIE_COORDINATOR_ADDRESS", "")
    if num_workers > 1 and not coordinator:
        raise ValueError(f"ERNIE_NUM_WORKERS={num_workers} but ERNIE_COORDINATOR_ADDRESS is unset: "
                         "set it to worker 0's private address")
    return Topology(accelerator, num_workers, worker_index, coordinator or "127.0.0.1", port, devices_per_host)


@dataclass(frozen=True)
class TrainSettings:
    """What a run chooses on top of the recipe."""

    precision: Precision
    max_tokens: int
    update_freq: int
    max_epoch: int
    max_update: int
    target_bleu: float | None
    log_interval: int
    num_workers: int
    """Data-loading processes (fairseq --num-workers)."""
    seed: int = 1


def global_batch_tokens(settings: TrainSettings, topology: Topology) -> int:
    """Tokens per optimizer step at most: per-device batch x accumulation x devices."""
    return settings.max_tokens * settings.update_freq * topology.world_size


def distributed_flags(topology: Topology) -> list[str]:
    """fairseq's distributed flags for this process; none when it trains alone."""
    if topology.world_size == 1:
        return []
    if topology.accelerator == "tpu":
        return ["--distributed-world-size", str(topology.world_size)]
    flags = [
        "--distributed-world-size", str(topology.world_size),
        "--distributed-rank", str(topology.first_rank),
        "--distributed-init-method", f"tcp://{topology.coordinator}:{topology.port}",
    ]
    if topology.accelerator == "cpu":
        flags += ["--distributed-backend", "gloo", "--distributed-no-spawn", "--ddp-backend", "legacy_ddp"]
    return flags


def train_command(recipe: Recipe, bin_dir: Path, save_dir: Path, settings: TrainSettings,
                  topology: Topology) -> list[str]:
    """The full command line that trains `recipe` on this host."""
    if settings.precision not in PRECISIONS[topology.accelerator]:
        raise ValueError(f"--precision {settings.precision} does not run on {topology.accelerator}: "
                         f"choose one of {', '.join(PRECISIONS[topology.accelerator])}")
    command = [
        sys.executable, str(FAIRSEQ_CMD), "train", str(bin_dir),
        "--arch", recipe.arch, *recipe.train_flags,
        "--max-tokens", str(settings.max_tokens), "--update-freq", str(settings.update_freq),
        "--max-epoch", str(settings.max_epoch), "--seed", str(settings.seed),
        "--save-dir", str(save_dir), "--no-epoch-checkpoints",  # checkpoint_last/best: enough to resume
        "--log-format", "simple", "--log-interval", str(settings.log_interval),
        "--num-workers", str(settings.num_workers),
        # Validation BLEU must see every sentence: fairseq drops a last batch whose size is not a
        # multiple of this (default 8), in training and validation alike.
        "--required-batch-size-multiple", "1",
        *PRECISION_FLAGS[settings.precision],
        *distributed_flags(topology),
    ]
    if settings.max_update:
        command += ["--max-update", str(settings.max_update)]
    if topology.accelerator == "cpu":
        command.append("--cpu")
    elif topology.accelerator == "tpu":
        # XLA compiles one graph per input shape: bucket lengths so it compiles a handful, not hundreds.
        command += ["--tpu", "--num-batch-buckets", "5"]
    if settings.target_bleu is not None:
        # Validation BLEU each epoch, scored as the final test is: sacrebleu on detokenised beam output.
        command += [
            "--eval-bleu", "--eval-bleu-args", json.dumps({"beam": recipe.beam, "lenpen": recipe.lenpen,
                                                           "max_len_a": recipe.max_len[0], "max_len_b": recipe.max_len[1]}),
            "--eval-bleu-remove-bpe", "sentencepiece", "--valid-subset", recipe.bleu_subset,
            "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric",
            "--target-bleu", str(settings.target_bleu),
        ]
        if recipe.bleu_args:
            command += ["--bleu-args", json.dumps(recipe.bleu_args)]
    return command
