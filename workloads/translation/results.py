"""result.json for a translation run (the fields of docs/workloads.md) and the facts it records."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import statistics
from pathlib import Path

import torch

from fairseq_log import Throughput, TrainLog

RESULT_FILE = "result.json"


def versions() -> dict[str, str | None]:
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(), "torch": torch.__version__, "fairseq": version("ve-fairseq"),
        "sacrebleu": version("sacrebleu"), "sentencepiece": version("sentencepiece"),
        "torch_xla": version("torch-xla"), "mlperf_logging": version("mlperf-logging"),
        "image": None, "runtime": f"cuda {torch.version.cuda}" if torch.cuda.is_available() else None,
    }


def device_name(accelerator: str) -> str:
    if accelerator == "gpu":
        return torch.cuda.get_device_name(0)
    if accelerator == "tpu":
        return os.environ.get("TPU_ACCELERATOR_TYPE", "TPU")  # set on Cloud TPU VMs, e.g. v4-32
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def model_shape(checkpoint: Path) -> dict:
    """The trained model's shape, read back from the checkpoint fairseq wrote (named archs hide it)."""
    if not checkpoint.exists():
        return {}
    # Our own checkpoint, so a full unpickle is safe; fairseq stores its config as plain objects.
    cfg = torch.load(checkpoint, map_location="cpu", weights_only=False)["cfg"]["model"]
    return {
        key: getattr(cfg, key, None)
        for key in ("arch", "encoder_layers", "decoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
                    "encoder_attention_heads", "dropout")
    }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def data_digest(files: list[Path]) -> str | None:
    """sha256 over the named files' names and bytes: equal digests are the same prepared data, wherever it lies.
    None when a file is missing (the data was never prepared)."""
    if not files or not all(f.is_file() for f in files):
        return None
    digest = hashlib.sha256()
    for f in sorted(files):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()


def prepared_digest(bin_dir: Path) -> str | None:
    """The binarised data's identity: its dictionaries and every split's index (each sentence's length), not
    bin/prepared.json, which names this host's paths."""
    return data_digest([*bin_dir.glob("dict.*.txt"), *bin_dir.glob("*.idx")])


def run_settings(*, processes: int, cpu_threads: int, accelerator: str, micro_batch: int, micro_batch_unit: str,
                 update_freq: int | None, data_name: str, synthetic: bool, train_examples: int | None,
                 data_sha256: str | None) -> dict:
    """result.json's `settings`, the fields and meaning of BERT's (docs/workloads.md): what a comparison must hold
    equal beyond the recipe. fairseq batches by tokens: `micro_batch` is --max-tokens per device per batch (a
    cap), `update_freq` batches make an update, and `sentences_per_update` is what the updates really held
    (fairseq's bsz, over all devices, over the timed updates; build() fills it in). `cpu_threads` 0: torch's default, which the
    fairseq processes inherit from this one."""
    return {
        "processes": processes,
        "threads": {"intra_op": cpu_threads or torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
        "host_cpus": len(os.sched_getaffinity(0)),
        "micro_batch": micro_batch, "micro_batch_unit": micro_batch_unit,
        "update_freq": update_freq,
        "sentences_per_update": None,
        "compile": "xla" if accelerator == "tpu" else "eager",  # fairseq 0.12 does not torch.compile
        "data": {"name": data_name, "synthetic": synthetic, "train_examples": train_examples,
                 "meta_sha256": data_sha256},
    }


def build(*, recipe: str, benchmark: str, model: dict, log: TrainLog, speed: Throughput | None, accelerator: str, chips: int,
          hosts: int, global_batch_tokens: int, precision: str, eval_block: dict, time_to_target_s: float | None,
          train_time_s: float | None, command: str, commands: dict[str, str], settings: dict,
          error: str | None = None) -> dict:
    steps = log.train[-1].num_updates if log.train else (log.inner[-1].num_updates if log.inner else 0)
    step_times = speed.step_times_ms if speed else []
    return {
        "workload": "translation", "framework": "fairseq", "framework_version": versions()["fairseq"],
        "recipe": recipe,
        # MLPerf's benchmark name only for the MLPerf recipe (recipes.Recipe.benchmark): a report sets a run
        # beside MLPerf's published rows only when this is theirs.
        "benchmark": benchmark,
        "model": {**model, "params": log.params},
        "accelerator": accelerator, "device_name": device_name(accelerator), "chips": chips, "hosts": hosts,
        "global_batch_size": global_batch_tokens, "global_batch_unit": "tokens",
        "seq_len": None,  # variable-length sentences, batched by token count
        "precision": precision,
        "steps": steps, "timed_steps": speed.timed_updates if speed else 0,
        "samples_per_s": speed.sentences_per_s if speed else None,
        # fairseq's "words" are target tokens after BPE, and so are its words/s.
        "tokens_per_s": speed.words_per_s if speed else None,
        "words_per_s": speed.words_per_s if speed else None,
        "step_time_ms_p50": percentile(step_times, 50), "step_time_ms_p90": percentile(step_times, 90),
        "flops_per_sample": None, "peak_flops_per_device": None, "mfu": None,
        "eval": eval_block,
        "valid_bleu_per_epoch": [
            {"epoch": v.epoch, "bleu": v.stats.get("bleu"), "loss": v.stats.get("loss")} for v in log.valid
        ],
        "train_loss_per_epoch": [{"epoch": t.epoch, "loss": t.stats.get("loss")} for t in log.train],
        "time_to_target_s": time_to_target_s, "train_time_s": train_time_s,
        "settings": {**settings, "sentences_per_update": round(speed.sentences_per_update, 1) if speed else None},
        "versions": versions(),
        "command": command, "commands": commands,
        "error": error,
    }


def write(out_dir: Path, result: dict) -> Path:
    path = out_dir / RESULT_FILE
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
