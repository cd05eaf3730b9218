"""BERT pretraining in PyTorch: masked LM + next-sentence prediction, MLPerf-logged, one CPU to many GPU hosts.

Data comes from prep_data.py (the ernie-bert-v1 format, README.md). Launch:

    # one process, CPU or one GPU
    python train_torch.py --preset tiny --data-dir data/seq128 --global-batch 32 --max-steps 40 --out out
    # every GPU of one host
    torchrun --standalone --nproc-per-node gpu train_torch.py --preset large --data-dir data/seq128 \\
        --global-batch 4096 --micro-batch 256 --optimizer lamb --lr 4e-3 --compile --out out
    # several hosts: ernie sets ERNIE_NUM_WORKERS, ERNIE_WORKER_INDEX, ERNIE_COORDINATOR_ADDRESS
    torchrun --nnodes "$ERNIE_NUM_WORKERS" --node-rank "$ERNIE_WORKER_INDEX" \\
        --master-addr "$ERNIE_COORDINATOR_ADDRESS" --master-port 29500 --nproc-per-node gpu train_torch.py ...
    # after a preemption: the same command with --resume continues from the last checkpoint in --out
    (run_torch.sh, the workload's command, does all of this: data prep when missing, then torchrun.)

What a step does: the global batch (--global-batch sequences) is cut into micro-batches of --micro-batch
per process; each process runs global_batch / (processes x micro_batch) of them, accumulating gradients,
then DistributedDataParallel all-reduces once and the optimizer (AdamW, fused where the device has it, or
LAMB) steps. The loss is normalised by the masked-token count of the whole global batch, so any split of
the batch over processes and accumulation steps gives the same gradients. The data order is a function
of (seed, step) alone, so a resumed run reads exactly what the interrupted one would have.

Outputs in --out: mlperf.log (rank 0; also echoed to stdout), result.json (rank 0), checkpoints/.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import checkpoint_tf1
import common
import cpu_dropout
import data
import formats
import recipe
from cluster import cpu_name
from flops import peak_flops_for
from lamb import Lamb
from master_weights import MasterWeights
from mlperf import MLPerfLogger
from presets import Preset, get_preset
from recipe_args import add_recipe_arguments, bind_data, check_recipe, recipe_fingerprint
from results import run_settings
from torch_model import BertPretraining, PretrainingStep, bert_config, unique_parameter_count
from torch_shards import ShardedExamples

WORKLOAD = "bert-torch"
PROG = "train_torch.py"


# ---------------------------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags, validated against each other, the data and the launch (WORLD_SIZE) before anything runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_arguments(
        parser, precisions=("auto", "bf16", "fp16", "fp32"),
        precision_help="auto: bf16 where the device has it, fp16 with loss scaling on older GPUs, else fp32",
        timing_warmup_help="first steps left out of the throughput figures (compilation, allocator warm-up)")
    parser.add_argument("--micro-batch", type=int, default=0,
                        help="sequences per process per forward pass; 0: global batch / processes (no accumulation)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = parser.parse_args(argv)

    preset = check_recipe(parser, args)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.micro_batch < 0:
        parser.error(f"--micro-batch must be positive (or 0 for global batch / processes), got {args.micro_batch}")
    if args.micro_batch == 0:
        if args.global_batch % world:
            parser.error(f"--global-batch {args.global_batch} is not divisible by the {world} processes")
        args.micro_batch = args.global_batch // world
    if args.global_batch % (world * args.micro_batch):
        parser.error(
            f"--global-batch {args.global_batch} is not divisible by processes x --micro-batch "
            f"({world} x {args.micro_batch}); pick a global batch that is a multiple of {world * args.micro_batch}"
        )
    args.accumulation = args.global_batch // (world * args.micro_batch)
    bind_data(parser, args, preset)
    return args


# ---------------------------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Launch:
    """Where this process sits: its rank among all processes, its device, how many hosts."""

    rank: int
    local_rank: int
    world: int
    hosts: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_launch() -> Launch:
    """Join torchrun's process group (NCCL on GPUs, gloo on CPUs); a plain `python` run is a world of one."""
    rank, local_rank, world = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1)))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    hosts = int(os.environ.get("ERNIE_NUM_WORKERS", max(1, world // local_world)))
    return Launch(rank=rank, local_rank=local_rank, world=world, hosts=hosts, device=device)


def device_name(device: torch.device) -> str:
    """The accelerator's name as flops.peak_flops_for reads it: the GPU's, or the CPU's model."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def resolve_precision(requested: str, device: torch.device) -> str:
    """bf16 where the hardware computes it natively (Ampere+, Hopper; CPUs with AVX512-BF16 or AMX),
    fp16 with a gradient scaler on older GPUs (V100), fp32 otherwise. bf16 is autocast on GPUs and bf16
    weights with fp32 master copies on CPUs (master_weights.py says why)."""
    if device.type == "cuda":
        native = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    else:
        native = "bf16" if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    if requested == "auto":
        return native
    if requested == "fp16" and device.type != "cuda":
        common.fail(PROG, "--precision fp16 needs a GPU; use bf16 or fp32 on a CPU")
    return requested


# ---------------------------------------------------------------------------------------------- data


class ExampleStream:
    """The training examples, held in memory as tensors, in a fixed order: epoch e is a permutation
    seeded by (seed, e), and step s takes the s-th global batch of the epochs laid end to end."""

    def __init__(self, arrays: dict[str, np.ndarray], global_batch: int, seed: int, pin: bool) -> None:
        self.tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
        if pin:
            self.tensors = {k: v.pin_memory() for k, v in self.tensors.items()}
        self.size = len(arrays["input_ids"])
        self.global_batch = global_batch
        self.seed = seed
        self._orders: dict[int, torch.Tensor] = {}

    def _order(self, epoch: int) -> torch.Tensor:
        if epoch not in self._orders:
            self._orders = {epoch: torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))}
        return self._orders[epoch]

    def global_indices(self, step: int) -> torch.Tensor:
        positions = torch.arange(step * self.global_batch, (step + 1) * self.global_batch)
        epochs = positions // self.size
        return torch.cat([self._order(int(e))[positions[epochs == e] % self.size] for e in torch.unique(epochs)])

    def gather(self, indices: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        return {k: v[indices].to(device, non_blocking=True) for k, v in self.tensors.items()}

    def mlm_denominator(self, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The real predictions of the whole global batch (every process holds it all)."""
        return self.tensors["masked_lm_weights"][indices].sum().to(device)


# ---------------------------------------------------------------------------------------------- optimizer


def build_optimizer(params: list[torch.nn.Parameter], args: argparse.Namespace, device: torch.device) -> torch.optim.Optimizer:
    """AdamW or LAMB, without weight decay on biases and LayerNorm weights (as BERT)."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    betas = (args.beta1, args.beta2)
    if args.optimizer == "lamb":
        return Lamb(groups, lr=args.lr, betas=betas, eps=args.eps)
    # One fused kernel for the whole update on CUDA and CPU; elsewhere the multi-tensor path.
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=args.lr, betas=betas, eps=args.eps, fused=fused, foreach=None if fused else True)


def lr_lambda(warmup_steps: int, total_steps: int, start_warmup_step: int = 0, power: float = 1.0):
    """The reference's schedule as a factor of the peak (recipe.reference_lr): polynomial decay to zero at
    total_steps, linear warm-up from start_warmup_step; the update at step k uses factor(k), the first 0."""

    def factor(step: int) -> float:
        return recipe.reference_lr(step, base_lr=1.0, total_steps=total_steps, warmup_steps=warmup_steps,
                                   start_warmup_step=start_warmup_step, power=power)

    return factor


# ---------------------------------------------------------------------------------------------- one step


@dataclass
class Training:
    """Everything a training step touches. `model` is the plain module (its state_dict is the checkpoint),
    `ddp` the model with its loss (PretrainingStep), wrapped in DistributedDataParallel in a world of more
    than one, `step_model` what the step calls (`ddp`, compiled with --compile), `master` the fp32 weights
    of a bf16 CPU model."""

    model: BertPretraining
    ddp: torch.nn.Module
    step_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    master: MasterWeights | None
    launch: Launch
    args: argparse.Namespace

    def autocast(self):
        return torch.autocast(self.launch.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.master.state_dict(self.model) if self.master else self.model.state_dict()

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.master:
            self.master.load_state_dict(self.model, state)
        else:
            self.model.load_state_dict(state)


def build_training(args: argparse.Namespace, launch: Launch, precision: str) -> Training:
    torch.manual_seed(args.seed)  # the same initial weights on every process
    model = BertPretraining(bert_config(get_preset(args.preset), args.dropout)).to(launch.device)
    if launch.device.type == "cpu":
        cpu_dropout.install(model)  # dropout masks at a sixth of the cost of torch's (cpu_dropout.py)
    master = MasterWeights(model) if precision == "bf16" and launch.device.type == "cpu" else None
    optimizer = build_optimizer(master.params if master else list(model.parameters()), args, launch.device)
    # A bf16 CPU model takes its vocabulary softmax in bf16 (torch_model.pretraining_loss says why).
    ddp: torch.nn.Module = PretrainingStep(model, upcast=master is None)
    if launch.world > 1:
        ddp = DistributedDataParallel(ddp, device_ids=[launch.local_rank] if launch.device.type == "cuda" else None)
    return Training(
        model=model,
        ddp=ddp,
        step_model=torch.compile(ddp) if args.compile else ddp,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.warmup_steps, args.max_steps,
                                                                                args.start_warmup_step, args.poly_power)),
        scaler=torch.amp.GradScaler(launch.device.type, enabled=precision == "fp16"),
        amp_dtype=None if master else {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision),
        master=master,
        launch=launch,
        args=args,
    )


def train_step(t: Training, stream: ExampleStream, step: int) -> torch.Tensor:
    """One optimizer step on global batch `step`; returns this process's share of the global loss."""
    args, launch = t.args, t.launch
    torch.manual_seed(args.seed * 1_000_003 + step * 1009 + launch.rank)  # dropout, reproducible after a resume
    indices = stream.global_indices(step)
    mlm_denominator = stream.mlm_denominator(indices, launch.device)
    step_loss = torch.zeros((), device=launch.device)
    for micro in range(args.accumulation):
        chunk = micro * launch.world + launch.rank
        batch = stream.gather(indices[chunk * args.micro_batch : (chunk + 1) * args.micro_batch], launch.device)
        last = micro == args.accumulation - 1
        with contextlib.nullcontext() if last or launch.world == 1 else t.ddp.no_sync():
            with t.autocast():  # the loss takes its softmax in fp32 under autocast too (logits.float())
                loss = t.step_model(batch, mlm_denominator, args.global_batch)
            # DDP averages gradients over processes; the loss is already this share of the global mean.
            t.scaler.scale(loss * launch.world).backward()
        step_loss += loss.detach()
    if t.master:
        t.master.grads_to_master()
    if args.clip_grad_norm > 0:
        t.scaler.unscale_(t.optimizer)
        torch.nn.utils.clip_grad_norm_(t.master.params if t.master else t.model.parameters(), args.clip_grad_norm)
    t.scaler.step(t.optimizer)
    t.scaler.update()
    if t.master:
        t.master.master_to_model()
    t.scheduler.step()
    t.optimizer.zero_grad(set_to_none=True)
    if launch.device.type == "cuda":
        torch.cuda.synchronize(launch.device)  # the step is over when the device is done: honest step times
    return step_loss


# ---------------------------------------------------------------------------------------------- eval


@torch.no_grad()
def evaluate(model: torch.nn.Module, eval_data: dict[str, torch.Tensor], launch: Launch, batch: int, autocast) -> float:
    """Masked-LM accuracy over the eval examples, split over the processes: correct / predicted tokens."""
    model.eval()
    n = len(eval_data["input_ids"])
    mine = torch.arange(launch.rank, n, launch.world)
    counts = torch.zeros(2, dtype=torch.float64, device=launch.device)
    for start in range(0, len(mine), batch):
        b = {k: v[mine[start : start + batch]].to(launch.device) for k, v in eval_data.items()}
        with autocast():
            mlm_logits, _ = model(b["input_ids"], b["segment_ids"], b["input_mask"], b["masked_lm_positions"])
        weights = b["masked_lm_weights"]
        correct = (mlm_logits.argmax(-1) == b["masked_lm_ids"].long()).to(weights.dtype) * weights
        counts += torch.stack([correct.sum(), weights.sum()]).to(torch.float64)
    if launch.world > 1:
        dist.all_reduce(counts)
    model.train()
    return float(counts[0] / counts[1])


# ---------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(out: Path, step: int, t: Training) -> None:
    directory = out / common.CHECKPOINTS
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{step:08d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "step": step,
            "fingerprint": recipe_fingerprint(t.args),
            "model": t.model_state(),
            "optimizer": t.optimizer.state_dict(),
            "scheduler": t.scheduler.state_dict(),
            "scaler": t.scaler.state_dict(),
        },
        tmp,
    )
    tmp.replace(path)  # a checkpoint is either whole or absent, even if the host is preempted mid-write
    for old in sorted(directory.glob("step-*.pt"))[:-common.KEEP_CHECKPOINTS]:
        old.unlink()


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted((out / common.CHECKPOINTS).glob("step-*.pt"))
    return found[-1] if found else None


# ---------------------------------------------------------------------------------------------- main


def restore(args: argparse.Namespace, t: Training, preset: Preset) -> tuple[int, Path | None, bool]:
    """(start step, the checkpoint resumed from, resumed?): rank 0's last checkpoint in --out with --resume,
    checked against this run's settings; else step 0, from --init-checkpoint's weights when given."""
    resume_from = latest_checkpoint(args.out) if args.resume else None
    state = torch.load(resume_from, map_location="cpu", weights_only=False) if resume_from else None
    if t.launch.world > 1:  # only rank 0 writes checkpoints (on its own host): every rank resumes from its state
        shared = [state if t.launch.is_main else None]
        dist.broadcast_object_list(shared, src=0)
        state = shared[0]
    if state is None:
        if args.init_checkpoint is not None:  # initialisation, before the clock: the reference's phase-1 weights
            load_init_checkpoint(args, t, preset)
        return 0, resume_from, False
    if state["fingerprint"] != recipe_fingerprint(args):
        common.fail(PROG, f"--resume: {resume_from} was written with {state['fingerprint']}, "
                          f"this run has {recipe_fingerprint(args)}; use another --out or the same settings")
    if problem := common.resume_problem(args, resume_from, state["step"]):
        common.fail(PROG, problem)
    t.load_model_state(state["model"])
    t.optimizer.load_state_dict(state["optimizer"])
    t.scheduler.load_state_dict(state["scheduler"])
    t.scaler.load_state_dict(state["scaler"])
    return state["step"], resume_from, True


def load_init_checkpoint(args: argparse.Namespace, t: Training, preset: Preset) -> None:
    """The reference's TF1 checkpoint (--init-checkpoint) as the model's weights."""
    try:
        converted = checkpoint_tf1.torch_state(checkpoint_tf1.read_reference(args.init_checkpoint, preset), preset)
    except checkpoint_tf1.CheckpointError as exc:
        common.fail(PROG, f"--init-checkpoint: {exc}")
    model_state = t.model_state()
    unknown = sorted(set(converted) - set(model_state))
    if unknown:
        common.fail(PROG, f"--init-checkpoint: {unknown[0]} is not a parameter of the model")
    t.load_model_state({**model_state, **{k: torch.from_numpy(v) for k, v in converted.items()}})


def open_train(args: argparse.Namespace, launch: Launch) -> ExampleStream | ShardedExamples:
    """The training examples: ernie's own format in memory, the reference's shards streamed."""
    if args.data_format == "ernie":
        return ExampleStream(data.load_split(args.data_dir, "train"), args.global_batch, args.seed,
                             pin=launch.device.type == "cuda")
    return ShardedExamples(formats.open_source(args.data_dir, args.data_format, seq_len=args.seq_len),
                           global_batch=args.global_batch, micro_batch=args.micro_batch,
                           accumulation=args.accumulation, rank=launch.rank, world=launch.world, seed=args.seed)


def config_block(args: argparse.Namespace, launch: Launch, *, preset: Preset, params: int, name: str, precision: str,
                 start_step: int, train_size: int | None, eval_set: common.EvalSet, resume_from: Path | None) -> str:
    """The resolved configuration, printed once by rank 0 before the first step."""
    return (
        f"bert-torch: preset {preset.name} ({params / 1e6:.1f}M params), {launch.world} process(es) on "
        f"{launch.hosts} host(s), {name}, {precision}\n"
        f"  global batch {args.global_batch} = {launch.world} x micro-batch {args.micro_batch} x "
        f"{args.accumulation} accumulation step(s); seq {args.seq_len}, {args.max_predictions} predictions\n"
        f"  {args.optimizer} lr {args.lr} warm-up {args.warmup_steps}, steps {start_step}..{args.max_steps}, "
        f"{train_size if train_size is not None else 'streamed'} train ({args.data_format}) / {eval_set.count} eval "
        f"examples, compile {args.compile}"
        + common.standing_lines(eval_set.standing, resume_from)
    )


def train(args: argparse.Namespace, t: Training, timeline: common.Timeline, examples, eval_data: dict[str, torch.Tensor],
          initial_eval: bool) -> None:
    """The training loop, to the last step or the target accuracy; `initial_eval`: evaluate the starting
    checkpoint first (--init-checkpoint). Rank 0 writes the checkpoints."""
    launch = t.launch

    def accuracy() -> float:
        return evaluate(t.model, eval_data, launch, args.micro_batch, t.autocast)

    if initial_eval:  # the checkpoint's own accuracy (about 0.34 for MLPerf's)
        timeline.evaluate(0, accuracy)
    timeline.begin_block()
    while timeline.running:
        t0 = time.perf_counter()
        step_loss = train_step(t, examples, timeline.step)
        timeline.record(t0)
        step = timeline.step
        if timeline.log_due():
            if launch.world > 1:
                dist.all_reduce(step_loss)
            timeline.tracked_stats(loss=round(float(step_loss), 6), lr=t.scheduler.get_last_lr()[0])
        if timeline.end_of_step(accuracy):
            break
        if launch.is_main and (step % args.checkpoint_every == 0 or step == timeline.last_step):
            save_checkpoint(args.out, step, t)
    if timeline.time_to_target is not None and launch.is_main:
        save_checkpoint(args.out, timeline.step, t)
    timeline.stop()


def write_outputs(args: argparse.Namespace, t: Training, timeline: common.Timeline, standing: recipe.Conformance, *,
                  preset: Preset, params: int, name: str, precision: str) -> None:
    """Rank 0's result.json and the run's summary line."""
    import transformers  # only for its version

    launch = t.launch
    cuda = launch.device.type == "cuda"
    result = common.write_result(
        args, standing, timeline,
        workload=WORKLOAD, framework="pytorch", framework_version=torch.__version__.split("+")[0],
        preset=preset, params=params, accelerator="gpu" if cuda else "cpu", device_name=name,
        chips=launch.world, hosts=launch.hosts, precision=precision,
        settings=run_settings(
            processes=launch.world, intra_op_threads=torch.get_num_threads(),
            inter_op_threads=torch.get_num_interop_threads(), micro_batch=args.micro_batch,
            compile_mode="torch.compile" if args.compile else "eager", data_dir=args.data_dir),
        peak_flops_per_device=peak_flops_for(name) if cuda else None,
        versions={"torch": torch.__version__, "transformers": transformers.__version__,
                  "cuda": torch.version.cuda, "nccl": _nccl_version() if cuda else None,
                  "driver": _driver_version() if cuda else None},
    )
    print(common.summary("bert-torch", timeline, result), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    launch = init_launch()
    mllog = MLPerfLogger(args.out, rank=launch.rank, append=args.resume and latest_checkpoint(args.out) is not None)
    preset = get_preset(args.preset)
    precision = resolve_precision(args.precision, launch.device)
    name = device_name(launch.device)
    if launch.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (softmax, loss) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    training = build_training(args, launch, precision)
    params = unique_parameter_count(training.model)
    start_step, resume_from, resumed = restore(args, training, preset)

    # The eval set's size and the run's conformance come from the shards' headers: no example is read before
    # run_start (the rules' clock starts before the data is touched).
    eval_set = common.open_eval(args, PROG)
    timeline = common.Timeline(mllog, args, start_step)
    timeline.open(resumed=resumed, platform=f"{launch.world}x{name}", eval_size=eval_set.count,
                  accumulation=args.accumulation, division=eval_set.standing.division)
    examples = open_train(args, launch)
    eval_arrays = common.read_eval(args, eval_set, preset.vocab_size, PROG)
    eval_data = {k: torch.from_numpy(v) for k, v in eval_arrays.items()}
    if launch.is_main:
        print(config_block(args, launch, preset=preset, params=params, name=name, precision=precision,
                           start_step=start_step, train_size=examples.size, eval_set=eval_set,
                           resume_from=resume_from), flush=True)

    train(args, training, timeline, examples, eval_data, initial_eval=not resumed and args.init_checkpoint is not None)
    if launch.is_main:
        write_outputs(args, training, timeline, eval_set.standing, preset=preset, params=params, name=name,
                      precision=precision)
    mllog.close()
    if launch.world > 1:
        dist.barrier()  # leave together: rank 0 is still writing while the others would tear the group down
        dist.destroy_process_group()
    return 0


def _nccl_version() -> str | None:
    with contextlib.suppress(AttributeError, RuntimeError):
        return ".".join(map(str, torch.cuda.nccl.version()))
    return None


def _driver_version() -> str | None:
    """The NVIDIA driver, from the kernel module (no nvidia-smi needed)."""
    with contextlib.suppress(OSError):
        return Path("/proc/driver/nvidia/version").read_text().split("Kernel Module")[1].split()[0]
    return None


if __name__ == "__main__":
    sys.exit(main())
