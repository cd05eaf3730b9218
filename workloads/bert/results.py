"""Throughput, MFU and result.json, computed the same way for both BERT trainers.

result.json is the contract of docs/workloads.md: ernie's reports read nothing else. Throughput is
measured over a timed region that excludes warm-up steps (compilation, allocator growth, first data
reads); step times are wall-clock seconds per optimizer step, taken after the device has finished the
step. Parameters are counted once per tensor: the MLM decoder's weight is tied to the word embeddings
and counted with them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flops import flops_per_sequence
from presets import Preset

EVAL_METRIC = "masked_lm_accuracy"


@dataclass(frozen=True)
class Throughput:
    """Steady-state speed over the timed steps."""

    timed_steps: int
    samples_per_s: float
    tokens_per_s: float
    step_time_ms_p50: float
    step_time_ms_p90: float


def summarize_steps(
    step_times_s: Sequence[float], *, warmup_steps: int, global_batch_size: int, seq_len: int
) -> Throughput:
    """Throughput over `step_times_s[warmup_steps:]`: samples/s is samples over the summed step time."""
    timed = np.asarray(step_times_s[warmup_steps:], dtype=np.float64)
    if timed.size == 0:
        raise ValueError(
            f"no timed steps: {len(step_times_s)} step(s) ran and the first {warmup_steps} are warm-up; "
            "run more steps or lower the warm-up"
        )
    samples_per_s = timed.size * global_batch_size / timed.sum()
    return Throughput(
        timed_steps=int(timed.size),
        samples_per_s=float(samples_per_s),
        tokens_per_s=float(samples_per_s * seq_len),
        step_time_ms_p50=float(np.percentile(timed, 50) * 1e3),
        step_time_ms_p90=float(np.percentile(timed, 90) * 1e3),
    )


def run_settings(*, processes: int, intra_op_threads: int, inter_op_threads: int, micro_batch: int,
                 compile_mode: str, data_dir: str | os.PathLike) -> dict:
    """How a run ran, beyond the recipe: what a framework comparison must hold equal (docs/workloads.md,
    "settings"). `compile_mode`: "eager", "torch.compile" or "xla". The data is named by its directory and
    identified by the digest of its meta.json (shards, counts, vocabulary digest, seed): equal digests are
    the same prepared data. Shards without a meta.json (the reference's hdf5 / TFRecord, formats.py) are
    identified by the digest of their names and sizes, and their example count is left unknown."""
    meta = Path(data_dir) / "meta.json"
    if meta.is_file():
        data = meta.read_bytes()  # read once: the digest names the very bytes parsed
        info, digest = json.loads(data), hashlib.sha256(data).hexdigest()
    else:
        files = sorted(p for p in Path(data_dir).glob("*") if p.is_file()) if Path(data_dir).is_dir() else [Path(data_dir)]
        listing = "".join(f"{p.name}:{p.stat().st_size}\n" for p in files if p.is_file())
        info, digest = {}, hashlib.sha256(listing.encode()).hexdigest()
    return {
        "processes": processes,
        "threads": {"intra_op": intra_op_threads, "inter_op": inter_op_threads},
        "host_cpus": len(os.sched_getaffinity(0)),
        "micro_batch": micro_batch,
        "compile": compile_mode,
        "data": {
            "name": Path(data_dir).name,
            "synthetic": bool(info.get("synthetic")),
            "train_examples": ((info.get("splits") or {}).get("train") or {}).get("examples"),
            "meta_sha256": digest,
        },
    }


def tf_threads() -> tuple[int, int]:
    """TensorFlow's intra- and inter-op thread counts: its TF_NUM_*_THREADS variables, else its default (one
    per schedulable core). tf.config.threading reports 0 for a count it was not given by the API."""
    cores = len(os.sched_getaffinity(0))
    return tuple(int(os.environ.get(f"TF_NUM_{k}_THREADS") or 0) or cores for k in ("INTRAOP", "INTEROP"))


def mfu(samples_per_s: float, flops_per_sample: float, peak_flops_per_device: float | None, chips: int) -> float | None:
    """Model-FLOPs utilisation: achieved model FLOP/s over the chips' peak; None when the peak is unknown."""
    if peak_flops_per_device is None:
        return None
    return samples_per_s * flops_per_sample / (peak_flops_per_device * chips)


def write_result(
    path: str | os.PathLike,
    *,
    workload: str,
    framework: str,
    framework_version: str,
    preset: Preset,
    params: int,
    accelerator: str,
    device_name: str,
    chips: int,
    hosts: int,
    global_batch_size: int,
    seq_len: int,
    max_predictions: int,
    precision: str,
    steps: int,
    throughput: Throughput,
    settings: dict | None = None,
    peak_flops_per_device: float | None,
    eval_value: float | None,
    eval_target: float,
    time_to_target_s: float | None,
    train_time_s: float,
    versions: dict[str, str | None],
    command: str,
    mlperf: dict | None = None,
) -> dict:
    """Write result.json (docs/workloads.md) and return it.

    `params`: the model's trainable parameters, each tensor once (tied decoder counted with the
    embeddings). `versions`: the framework's packages; python is added, image and runtime default to
    None (ernie's runner knows them). `eval_value`: the last masked-LM accuracy, None if never evaluated.
    `mlperf`: for BERT, how the run stands against MLPerf's closed division ({"division", "differences",
    "ruleset"}); the key is present only when given.
    """
    result = {
        "workload": workload,
        "framework": framework,
        "framework_version": framework_version,
        "model": _model(preset, params),
        "accelerator": accelerator,
        "device_name": device_name,
        "chips": chips,
        "hosts": hosts,
        "global_batch_size": global_batch_size,
        "seq_len": seq_len,
        "max_predictions": max_predictions,
        "precision": precision,
        "steps": steps,
        **_speed(throughput, flops_per_sequence(preset, seq_len, max_predictions), peak_flops_per_device, chips),
        "eval": {"metric": EVAL_METRIC, "value": eval_value, "target": eval_target,
                 "reached": eval_value is not None and eval_value >= eval_target},
        "time_to_target_s": time_to_target_s,
        "train_time_s": round(train_time_s, 3),
        "settings": settings,  # run_settings(); None from a trainer that does not record them
        "versions": {"python": platform.python_version(), "image": None, "runtime": None, **versions},
        "command": command,
    }
    if mlperf is not None:
        result["mlperf"] = mlperf
    _write_atomically(Path(path), json.dumps(result, indent=2) + "\n")
    return result


def _model(preset: Preset, params: int) -> dict:
    return {"preset": preset.name, "hidden": preset.hidden, "layers": preset.layers, "heads": preset.heads,
            "intermediate": preset.intermediate, "vocab": preset.vocab_size, "params": params}


def _speed(throughput: Throughput, flops_per_sample: float, peak_flops_per_device: float | None, chips: int) -> dict:
    """result.json's throughput fields, in their documented order."""
    return {
        "timed_steps": throughput.timed_steps,
        "samples_per_s": round(throughput.samples_per_s, 3),
        "tokens_per_s": round(throughput.tokens_per_s, 1),
        "words_per_s": None,  # a translation figure; BERT counts tokens
        "step_time_ms_p50": round(throughput.step_time_ms_p50, 2),
        "step_time_ms_p90": round(throughput.step_time_ms_p90, 2),
        "flops_per_sample": flops_per_sample,
        "peak_flops_per_device": peak_flops_per_device,
        "mfu": mfu(throughput.samples_per_s, flops_per_sample, peak_flops_per_device, chips),
    }


def _write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text)
    tmp.replace(path)
