"""BERT-large pretraining throughput and MFU on one GPU, with ernie's PyTorch BERT (workloads/bert).

BERT-large (24 layers, hidden 1024, 16 heads), seq 128, 20 masked positions per sequence, bf16 autocast,
SDPA attention, the MLM head at the masked positions only, fused AdamW, torch.compile; the largest
micro-batch that fits (searched eagerly, powers of two, before compiling). Synthetic full-length
sequences made in memory, so nothing needs preparing. Finishes within a few minutes on an H100/H200.

Prints the GPU, driver and versions, then samples/s and MFU = samples/s x FLOPs per sequence / peak
(flops.py: 240.9 GFLOP per sequence; the per-device dense bf16 peak, none invented for an unknown GPU).
Reference point: NVIDIA DeepLearningExamples reach about 0.44 MFU on an A100 (../shared/REFERENCE.md).

    python benchmarks/gpu/bert_large.py [--out result.json]
    python benchmarks/gpu/bert_large.py --dry-run      # CPU smoke test: tiny preset, a few steps
Last line: mfu=<value> (or mfu=unknown when the GPU's peak is not in flops.PEAK_FLOPS).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

# workloads/bert ships alone, not a package: its modules import by bare name
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workloads" / "bert"))
from flops import flops_per_sequence, peak_flops_for  # noqa: E402
from presets import get_preset  # noqa: E402
from torch_model import BertPretraining, bert_config, pretraining_loss  # noqa: E402

SEQ_LEN, MAX_PREDICTIONS = 128, 20


def synthetic_batch(batch: int, vocab: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Full-length sequences with MAX_PREDICTIONS distinct masked positions each (no [CLS]/[SEP] slots)."""
    g = torch.Generator().manual_seed(0)
    positions = torch.sort(torch.rand(batch, SEQ_LEN - 2, generator=g).argsort(dim=1)[:, :MAX_PREDICTIONS] + 1).values
    b = {
        "input_ids": torch.randint(999, vocab, (batch, SEQ_LEN), generator=g, dtype=torch.int32),
        "segment_ids": (torch.arange(SEQ_LEN) >= SEQ_LEN // 2).int().expand(batch, -1).contiguous(),
        "input_mask": torch.ones(batch, SEQ_LEN, dtype=torch.int32),
        "masked_lm_positions": positions.int(),
        "masked_lm_ids": torch.randint(999, vocab, (batch, MAX_PREDICTIONS), generator=g, dtype=torch.int32),
        "masked_lm_weights": torch.ones(batch, MAX_PREDICTIONS),
        "next_sentence_labels": torch.randint(0, 2, (batch,), generator=g, dtype=torch.int32),
    }
    return {k: v.to(device) for k, v in b.items()}


def make_step(model, optimizer, device: torch.device, dtype: torch.dtype | None):
    def step(step_model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            mlm, nsp = step_model(batch["input_ids"], batch["segment_ids"], batch["input_mask"],
                                  batch["masked_lm_positions"])
        loss = pretraining_loss(mlm, nsp, batch, batch["masked_lm_weights"].sum(), len(batch["input_ids"]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def largest_micro_batch(model, step, vocab: int, device: torch.device, candidates: list[int]) -> int:
    """The largest candidate whose eager training step fits in memory (compiled steps need no more)."""
    for batch in candidates:
        try:
            step(model, synthetic_batch(batch, vocab, device))
            torch.cuda.synchronize(device)
            return batch
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
    raise SystemExit(f"not even a micro-batch of {candidates[-1]} fits on {torch.cuda.get_device_name(device)}")


def environment(device: torch.device) -> dict:
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "host": platform.node()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    compute_capability=f"{props.major}.{props.minor}", nccl=".".join(map(str, torch.cuda.nccl.version())))
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, check=False) if _has_nvidia_smi() else None
        info["driver"] = smi.stdout.strip().splitlines()[0] if smi and smi.returncode == 0 else _driver_from_proc()
    else:
        info["gpu"] = None
    return info


def _has_nvidia_smi() -> bool:
    from shutil import which

    return which("nvidia-smi") is not None


def _driver_from_proc() -> str | None:
    try:
        return Path("/proc/driver/nvidia/version").read_text().split("Kernel Module")[1].split()[0]
    except (OSError, IndexError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU smoke test: tiny preset, micro-batch 4, 4 steps")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=8, help="untimed steps first (compilation happens here)")
    parser.add_argument("--micro-batch", type=int, default=0, help="fix the micro-batch; 0: the largest that fits")
    parser.add_argument("--no-compile", action="store_true", help="eager mode")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()

    if args.dry_run:
        device, preset, dtype = torch.device("cpu"), get_preset("tiny"), None
        args.steps, args.warmup, args.micro_batch = min(args.steps, 3), min(args.warmup, 1), args.micro_batch or 4
    else:
        if not torch.cuda.is_available():
            raise SystemExit("bert_large.py: no CUDA GPU here; --dry-run runs the CPU smoke test")
        device, preset, dtype = torch.device("cuda", 0), get_preset("large"), torch.bfloat16
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            raise SystemExit("bert_large.py: this GPU computes no bf16 (a V100?); the benchmark measures bf16")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    info = environment(device)
    print(json.dumps(info), flush=True)
    torch.manual_seed(0)
    model = BertPretraining(bert_config(preset)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    step = make_step(model, optimizer, device, dtype)

    micro = args.micro_batch or largest_micro_batch(model, step, preset.vocab_size, device, [512, 384, 256, 192, 128, 96, 64, 32])
    step_model = model if args.no_compile else torch.compile(model)
    batch = synthetic_batch(micro, preset.vocab_size, device)
    for _ in range(args.warmup):
        step(step_model, batch)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step(step_model, batch)
    sync()
    elapsed = time.perf_counter() - start

    samples_per_s = args.steps * micro / elapsed
    flops = flops_per_sequence(preset, SEQ_LEN, MAX_PREDICTIONS)
    peak = peak_flops_for(info["gpu"]) if info["gpu"] else None
    mfu = samples_per_s * flops / peak if peak else None
    figures = {"preset": preset.name, "seq_len": SEQ_LEN, "max_predictions": MAX_PREDICTIONS, "micro_batch": micro,
               "precision": {torch.bfloat16: "bf16", None: "fp32"}[dtype], "compiled": not args.no_compile,
               "timed_steps": args.steps, "step_time_ms": round(elapsed / args.steps * 1e3, 2),
               "samples_per_s": round(samples_per_s, 2), "tokens_per_s": round(samples_per_s * SEQ_LEN, 1),
               "flops_per_sample": flops, "peak_flops": peak, "mfu": mfu, "final_loss": float(loss),
               "dry_run": args.dry_run, **info}
    print(json.dumps(figures), flush=True)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"samples_per_s={samples_per_s:.1f}")
    print(f"mfu={mfu:.3f}" if mfu is not None else "mfu=unknown")


if __name__ == "__main__":
    main()
