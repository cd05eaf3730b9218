"""A few DistributedDataParallel steps of ernie's PyTorch BERT: the NCCL path, proven on one GPU.

`python ddp_step.py --procs N` starts N ranks on this host itself (spawned processes meeting at a free loopback
port); under torchrun it is one rank of torchrun's world. Every rank trains the same model
on its own batch; after the steps the ranks' weights must be identical (DDP all-reduced every gradient) and the
all-reduce of the ranks' numbers must equal their sum. Rank 0 prints one JSON line and `ddp=ok world=N backend=B`.

On one GPU every rank uses device 0. NCCL refuses two ranks on one device ("Duplicate GPU detected") in the
releases seen so far; run_all.sh then runs a world of one, which still initialises NCCL and runs its all-reduce
kernels on the GPU, and says which it was. `--dry-run` uses gloo on the CPU at the tiny preset.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

# workloads/bert ships alone, not a package: its modules import by bare name
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workloads" / "bert"))
from presets import get_preset  # noqa: E402
from torch_model import BertPretraining, bert_config, pretraining_loss  # noqa: E402

from bert_large import synthetic_batch  # noqa: E402  (benchmarks/gpu is the script's directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="gloo on the CPU, tiny preset")
    parser.add_argument("--procs", type=int, default=2, help="ranks to start on this host (ignored under torchrun)")
    parser.add_argument("--preset", default="base")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--micro-batch", type=int, default=32)
    args = parser.parse_args()
    if "RANK" in os.environ:  # started by torchrun
        train(args)
        return
    with socket.socket() as sock:  # a free port for the ranks to meet at
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(_rank, args=(args, port), nprocs=args.procs, start_method="spawn")


def _rank(rank: int, args: argparse.Namespace, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(args.procs),
                      LOCAL_WORLD_SIZE=str(args.procs), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    train(args)


def train(args: argparse.Namespace) -> None:
    gpu = not args.dry_run
    if gpu and not torch.cuda.is_available():
        raise SystemExit("ddp_step.py: no CUDA GPU here; --dry-run runs gloo on the CPU")
    backend = "nccl" if gpu else "gloo"
    device = torch.device("cuda", 0) if gpu else torch.device("cpu")
    if gpu:
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=timedelta(seconds=120))  # a lost rank fails, never hangs
    rank, world = dist.get_rank(), dist.get_world_size()
    print(f"rank {rank}/{world}: process group up ({backend})", flush=True)
    preset = get_preset("tiny" if args.dry_run else args.preset)

    torch.manual_seed(0)  # the same initial weights on every rank
    model = BertPretraining(bert_config(preset)).to(device)
    ddp = DistributedDataParallel(model, device_ids=[0] if gpu else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = torch.bfloat16 if gpu else None
    batch = synthetic_batch(args.micro_batch, preset.vocab_size, device)
    # Each rank its own targets: without DDP's all-reduce the ranks' weights would then drift apart.
    g = torch.Generator().manual_seed(1 + rank)
    batch["masked_lm_ids"] = torch.randint(999, preset.vocab_size, batch["masked_lm_ids"].shape, generator=g,
                                           dtype=torch.int32).to(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            mlm, nsp = ddp(batch["input_ids"], batch["segment_ids"], batch["input_mask"], batch["masked_lm_positions"])
        loss = pretraining_loss(mlm, nsp, batch, batch["masked_lm_weights"].sum(), len(batch["input_ids"]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if rank == 0:
            print(f"step loss {loss.item():.4f}", flush=True)
    if gpu:
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start

    # Identical weights on every rank: the gradients were all-reduced.
    digest = torch.stack([p.detach().float().sum() for p in model.parameters()]).sum().reshape(1)
    digests = [torch.zeros_like(digest) for _ in range(world)]
    dist.all_gather(digests, digest)
    total = torch.tensor([float(rank + 1)], device=device)
    dist.all_reduce(total)
    same = all(torch.equal(d, digests[0]) for d in digests)
    summed = total.item() == world * (world + 1) / 2
    if rank == 0:
        figures = {"backend": backend, "world": world, "preset": preset.name, "micro_batch": args.micro_batch,
                   "steps": args.steps, "seconds": round(elapsed, 3), "final_loss": loss.item(),
                   "weights_identical": same, "all_reduce_sum_ok": summed,
                   "nccl": ".".join(map(str, torch.cuda.nccl.version())) if gpu else None,
                   "local_world": int(os.environ.get("LOCAL_WORLD_SIZE", world))}
        print(json.dumps(figures), flush=True)
        print(f"ddp={'ok' if same and summed else 'FAILED'} world={world} backend={backend}", flush=True)
    # DDP's reducer goes while its process group is alive: freed after destroy_process_group (when train()
    # returned), it hung one spawned rank in about one run in four here. Then every rank passes its last
    # collective before any tears the group down (pytorch/pytorch#75097).
    del ddp
    dist.barrier()
    dist.destroy_process_group()
    if not (same and summed):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
