"""The BERT pretraining run on Keras 3's JAX backend: one program over every device of every worker.

Imported by train_tf.py (`--backend jax`) once jax_placement has set XLA's environment. The model, loss,
optimizers and schedule are the TensorFlow trainer's (keras_model.py, keras_optim.py); what differs is
how a step runs:

- A mesh over all devices (`jax.devices()`: every chip of every worker after jax.distributed), one
  axis, "batch". Each step's global batch is one array split along that axis (jax_data.py), the
  parameters, optimizer state and dropout seeds are replicated.
- The whole step (forward, backward, global-norm clip, optimizer update) is one `jax.jit` program of
  Keras's stateless API (`stateless_call`, `stateless_apply`). The loss is the global batch's mean, so
  its gradient is too: XLA inserts the cross-device (and cross-host) reduction itself.
- Worker 0 writes mlperf.log, result.json, step_times.tsv and the checkpoints
  (`checkpoints/step-NNNNNNNN.npz`, the last two, written atomically). `--resume`: worker 0 reads the
  newest and every worker receives it from worker 0, so the other hosts need no copy.

A step is timed from the request for its batch until its loss is back on the host; the wait for the
batch is recorded on its own (step_times.tsv), as tf_pretrain.py does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import keras
import keras_hub
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from mlperf_logging.mllog import constants as mlc

import checkpoint_tf1
import data
import flops
import formats
import jax_data
import jax_placement
import keras_optim
import recipe
import results
from cluster import cpu_name
from keras_model import build_pretrainer, masked_lm_counts, precision_policy, pretraining_loss
from mlperf import MLPerfLogger
from presets import get_preset
from recipe_args import conformance, recipe_fingerprint

WORKLOAD = "bert-jax"
CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2
TIMINGS = "step_times.tsv"
_TWO_CORES_A_CHIP = ("TPU v2", "TPU v3")  # JAX's devices are TensorCores there, chips elsewhere


class TrainingError(SystemExit):
    """A run that cannot go on: the message names what and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(f"train_tf.py --backend jax: error: {message}")


# Everything a step reads and writes, as arrays (Keras's variables stay untouched after the build):
# {"trainable": [...], "non_trainable": [...], "optimizer": [...]}, in the order of Keras's variable lists.
State = dict[str, list[jax.Array]]
GROUPS = ("trainable", "non_trainable", "optimizer")


def device_name(placement: jax_placement.Placement) -> str:
    """The accelerator's name as flops.peak_flops_for reads it ("TPU v4", "TPU v5 lite", a GPU's, a CPU's)."""
    if placement.accelerator == "cpu":
        return cpu_name()
    return jax.devices()[0].device_kind


def chips(placement: jax_placement.Placement, name: str) -> int:
    """Chips across the run: JAX devices, less TPU v2/v3's two TensorCores a chip; a CPU's virtual devices."""
    devices = jax.device_count()
    return devices // 2 if placement.accelerator == "tpu" and name.startswith(_TWO_CORES_A_CHIP) else devices


def xla_threads() -> int:
    """XLA's CPU compute threads: 1 when --threads 1 turned its Eigen pool off (data.sh), else one per core."""
    if re.search(r"--xla_cpu_multi_thread_eigen=false", os.environ.get("XLA_FLAGS", "")):
        return 1
    return len(os.sched_getaffinity(0))


def resolve_policy(requested: str, placement: jax_placement.Placement) -> str:
    """The Keras dtype policy: --precision, or keras_model.precision_policy for the device."""
    if requested != "auto":
        return {"fp32": "float32", "bf16": "mixed_bfloat16"}[requested]
    capability = None
    if placement.accelerator == "gpu":
        raw = getattr(jax.devices()[0], "compute_capability", None)  # "9.0" on NVIDIA GPUs
        capability = tuple(int(p) for p in str(raw).split(".")[:2]) if raw else None
    return precision_policy(placement.accelerator, capability)


# ---------------------------------------------------------------------------------------------- checkpoints


def checkpoint_path(out: Path, step: int) -> Path:
    return out / CHECKPOINTS / f"step-{step:08d}.npz"


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted((out / CHECKPOINTS).glob("step-*.npz"))
    return found[-1] if found else None


def host_copy(array: jax.Array) -> np.ndarray:
    """A replicated global array's value, from this process's own copy (no collective)."""
    return np.asarray(array.addressable_data(0))


def save_checkpoint(out: Path, step: int, state: State, fingerprint: dict) -> Path:
    """Worker 0: the state at `step`, written atomically; older ones beyond the last two removed."""
    path = checkpoint_path(out, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{group}/{i}": host_copy(a) for group, values in state.items() for i, a in enumerate(values)}
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:  # np.savez on a file object keeps the name as given
        np.savez(f, step=np.int64(step), fingerprint=np.array(json.dumps(fingerprint, sort_keys=True)), **arrays)
    tmp.replace(path)
    for old in sorted(path.parent.glob("step-*.npz"))[:-KEEP_CHECKPOINTS]:
        old.unlink()
    return path


def read_checkpoint(path: Path, state: State, fingerprint: dict) -> tuple[int, dict[str, list[np.ndarray]]]:
    """(step, arrays) from a checkpoint of this run's settings and shapes; a TrainingError otherwise."""
    with np.load(path) as saved:
        written = json.loads(str(saved["fingerprint"]))
        if written != fingerprint:
            raise TrainingError(f"--resume: {path} was written with {written}, this run has {fingerprint}; "
                                "use another --out or the same settings")
        restored = {}
        for group, values in state.items():
            restored[group] = [saved[f"{group}/{i}"] for i in range(len(values))]
            for i, (old, new) in enumerate(zip(values, restored[group])):
                if old.shape != new.shape:
                    raise TrainingError(f"--resume: {path}: {group}/{i} has shape {new.shape}, the model {old.shape}")
        return int(saved["step"]), restored


def resume_state(args: argparse.Namespace, placement: jax_placement.Placement, state: State,
                 replicate) -> tuple[int, Path | None, State]:
    """Worker 0 reads the newest checkpoint; every worker gets its step and arrays from worker 0."""
    fingerprint = recipe_fingerprint(args)
    path = latest_checkpoint(args.out) if args.resume and placement.is_chief else None
    step, problem, arrays = 0, "", {g: [host_copy(a) for a in v] for g, v in state.items()}
    if path is not None:
        try:
            step, arrays = read_checkpoint(path, state, fingerprint)
        except TrainingError as exc:
            problem = str(exc.code)
        if not problem and step >= args.max_steps:
            problem = f"train_tf.py --backend jax: error: --resume: {path} already holds all {args.max_steps} steps"
    if jax.process_count() > 1:  # worker 0's verdict and state to all, so no worker trains alone
        verdict = multihost_utils.broadcast_one_to_all(np.int64(step if not problem else -1))
        if int(verdict) < 0:
            raise SystemExit(problem or "train_tf.py --backend jax: error: worker 0 refused its checkpoint "
                                        "(its log says why)")
        if int(verdict) == 0:
            return 0, None, state
        step, arrays = int(verdict), multihost_utils.broadcast_one_to_all(arrays)
    elif problem:
        raise SystemExit(problem)
    elif path is None:
        return 0, None, state
    restored = {g: [replicate(np.asarray(a)) for a in arrays[g]] for g in GROUPS}
    return step, path, restored


# ---------------------------------------------------------------------------------------------- the run


def run(args: argparse.Namespace, placement: jax_placement.Placement) -> None:
    """Train as `args` says over every device of every worker; the chief writes the logs and results."""
    devices = jax.devices()
    if args.global_batch % len(devices):
        raise TrainingError(
            f"--global-batch {args.global_batch} is not divisible by the {len(devices)} devices "
            f"({jax.process_count()} worker(s) x {jax.local_device_count()}): each device takes an equal share"
        )
    mesh = jax.make_mesh((len(devices),), ("batch",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))

    def replicate(value) -> jax.Array:
        value = np.asarray(value)
        return jax.make_array_from_callback(value.shape, replicated, lambda index: value[index])

    preset = get_preset(args.preset)
    if args.dropout is not None:
        preset = dataclasses.replace(preset, dropout=args.dropout)
    policy = resolve_policy(args.precision, placement)
    keras.mixed_precision.set_global_policy(policy)
    name = device_name(placement)
    keras.utils.set_random_seed(args.seed)  # the same initial weights and dropout seeds on every worker
    model = build_pretrainer(preset, args.seq_len, args.max_predictions)
    optimizer = keras_optim.make_optimizer(
        args.optimizer, model.trainable_variables, lr=args.lr, warmup_steps=args.warmup_steps,
        total_steps=args.max_steps, weight_decay=args.weight_decay, beta_1=args.beta1, beta_2=args.beta2,
        epsilon=args.eps, start_warmup_step=args.start_warmup_step, power=args.poly_power,
    )
    schedule = keras_optim.WarmupLinearDecay(args.lr, args.warmup_steps, args.max_steps, args.start_warmup_step,
                                             args.poly_power)  # the optimizer's, for the log
    if args.init_checkpoint is not None:  # the reference's phase-1 weights (a resumed run replaces them below)
        try:
            checkpoint_tf1.load_keras(model, args.init_checkpoint, preset)
        except checkpoint_tf1.CheckpointError as exc:
            raise TrainingError(f"--init-checkpoint: {exc}") from None
    params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    state: State = {
        "trainable": [replicate(v.value) for v in model.trainable_variables],
        "non_trainable": [replicate(v.value) for v in model.non_trainable_variables],
        "optimizer": [replicate(v.value) for v in optimizer.variables],
    }
    start_step, resume_from, state = resume_state(args, placement, state, replicate)
    mllog = MLPerfLogger(args.out, rank=jax.process_index(), append=resume_from is not None)

    # The eval set's size and the run's conformance come from the shards' headers: no example is read before
    # run_start (the rules' clock starts before the data is touched).
    try:
        eval_source = formats.open_source(args.eval_data or args.data_dir, "auto" if args.eval_data else args.data_format,
                                          split="eval", seq_len=args.seq_len, max_predictions=args.max_predictions)
        eval_count = min(args.eval_samples, eval_source.examples)
    except data.DataError as exc:
        raise TrainingError(f"--eval-data: {exc}") from None
    standing = conformance(args, eval_count)
    last_step = args.max_steps
    if args.max_samples_termination is not None:
        last_step = min(last_step, -(-args.max_samples_termination // args.global_batch))
    if resume_from is None:
        mllog.open_run(args, platform=f"{len(devices)}x{name}", eval_size=eval_count, accumulation=1,
                       division=standing.division)
    else:
        mllog.event(mlc.INIT_CHECKPOINT_STEP, start_step)
    run_start = time.time()

    if args.data_format == "ernie":
        train_arrays = data.load_split(args.data_dir, "train")
        train_size = str(len(train_arrays["input_ids"]))
        make_batch = jax_data.in_memory(
            train_arrays, jax_data.Order(len(train_arrays["input_ids"]), args.global_batch, args.seed), split)
    else:
        train_source = formats.open_source(args.data_dir, args.data_format, seq_len=args.seq_len)
        train_size = "streamed"
        make_batch = jax_data.Streamed(train_source, args.global_batch, args.seed, split).batch
    try:
        eval_arrays = formats.read_examples(eval_source, limit=eval_count)
        formats.check_vocab(eval_arrays, vocab_size=preset.vocab_size, cls_id=data.CLS_ID,
                            where=str(args.eval_data or args.data_dir))
    except data.DataError as exc:
        raise TrainingError(f"--eval-data: {exc}") from None
    eval_arrays = data.pad_to_batches(eval_arrays, args.global_batch)
    if placement.is_chief:
        print(
            f"bert-jax: preset {preset.name} ({params / 1e6:.1f}M params), {len(devices)} device(s) on "
            f"{jax.process_count()} host(s) ({jax.local_device_count()} each), {name}, {policy}\n"
            f"  global batch {args.global_batch} = {len(devices)} x {args.global_batch // len(devices)}; seq "
            f"{args.seq_len}, {args.max_predictions} predictions\n"
            f"  {args.optimizer} lr {args.lr} warm-up {args.warmup_steps}, steps {start_step}..{last_step}, "
            f"{train_size} train ({args.data_format}) / {eval_count} eval examples; jax {jax.__version__}, "
            f"keras {keras.__version__}, keras-hub {keras_hub.__version__}\n  MLPerf {standing.division} division"
            + "".join(f"\n    open: {why}" for why in standing.differences)
            + (f"\n  resuming from {resume_from}" if resume_from else ""),
            flush=True,
        )

    def forward(trainable, non_trainable, batch, training: bool):
        return model.stateless_call(trainable, non_trainable, {k: batch[k] for k in jax_data.FEATURES},
                                    training=training)

    def loss_fn(trainable, non_trainable, batch):
        outputs, non_trainable = forward(trainable, non_trainable, batch, training=True)
        losses = pretraining_loss(outputs, batch, jnp.sum(batch["masked_lm_weights"]),
                                  jnp.float32(batch["input_ids"].shape[0]))
        return losses["loss"], (losses, non_trainable)

    state_shardings = {group: [replicated] * len(values) for group, values in state.items()}

    def train_step(state: State, batch):
        grads, (losses, non_trainable) = jax.grad(loss_fn, has_aux=True)(state["trainable"], state["non_trainable"], batch)
        if args.clip_grad_norm > 0:  # as tf.clip_by_global_norm
            norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in grads))
            scale = args.clip_grad_norm / jnp.maximum(norm, args.clip_grad_norm)
            grads = [g * scale.astype(g.dtype) for g in grads]
        trainable, optimizer_state = optimizer.stateless_apply(state["optimizer"], grads, state["trainable"])
        return {"trainable": trainable, "non_trainable": non_trainable, "optimizer": optimizer_state}, losses

    step_fn = jax.jit(train_step, in_shardings=(state_shardings, split), out_shardings=(state_shardings, replicated),
                      donate_argnums=(0,))

    @jax.jit
    def eval_counts(trainable, non_trainable, batch):
        outputs, _ = forward(trainable, non_trainable, batch, training=False)
        return masked_lm_counts(outputs, batch)

    def evaluate() -> float:
        counts = np.zeros(2)
        for batch in jax_data.eval_batches(eval_arrays, args.global_batch, split):
            counts += [float(host_copy(c)) for c in eval_counts(state["trainable"], state["non_trainable"], batch)]
        return float(counts[0] / counts[1])

    feeder = jax_data.Feeder(make_batch, start_step, last_step)

    # ---- the training loop
    step_times: list[float] = []
    input_waits: list[float] = []
    accuracy: float | None = None
    time_to_target: float | None = None
    step = start_step
    try:
        if resume_from is None and args.init_checkpoint is not None:  # the checkpoint's own accuracy
            mllog.start(mlc.EVAL_START, metadata={"epoch_num": 0})
            mllog.event(mlc.EVAL_ACCURACY, evaluate(), metadata={"epoch_num": 0})
            mllog.end(mlc.EVAL_STOP, metadata={"epoch_num": 0})
        mllog.start(mlc.BLOCK_START, metadata={"samples_count": step * args.global_batch})
        while step < last_step:
            t0 = time.perf_counter()
            batch = feeder.next()
            t1 = time.perf_counter()
            state, losses = step_fn(state, batch)
            loss = float(host_copy(losses["loss"]))  # the host waits here for every device to finish the step
            step += 1
            step_times.append(time.perf_counter() - t0)
            input_waits.append(t1 - t0)
            if not np.isfinite(loss):
                mllog.end(mlc.RUN_STOP, metadata={"status": mlc.ABORTED})
                raise TrainingError(f"step {step}: the loss is {loss}; lower --lr or check the data")

            if step % args.log_every == 0 or step == last_step:
                recent = step_times[-args.log_every :]
                mllog.tracked_stats(
                    step,
                    loss=round(loss, 6),
                    mlm_loss=round(float(host_copy(losses["mlm_loss"])), 6),
                    nsp_loss=round(float(host_copy(losses["nsp_loss"])), 6),
                    lr=float(schedule(step)),  # the next step's, as the other trainers log it
                    samples_per_s=round(len(recent) * args.global_batch / sum(recent), 2),
                    input_wait=round(sum(input_waits[-args.log_every :]) / sum(recent), 4),
                )
            reached = False
            if args.eval_every_samples:
                due = recipe.eval_due((step - 1) * args.global_batch, step * args.global_batch, args.eval_every_samples)
            else:
                due = step % args.eval_every == 0
            if due or step == last_step:
                samples = step * args.global_batch
                mllog.end(mlc.BLOCK_STOP, metadata={"samples_count": samples})
                mllog.start(mlc.EVAL_START, metadata={"epoch_num": samples})
                accuracy = evaluate()
                mllog.event(mlc.EVAL_ACCURACY, accuracy, metadata={"epoch_num": samples})
                mllog.end(mlc.EVAL_STOP, metadata={"epoch_num": samples})
                reached = accuracy >= args.target_accuracy
                if reached:
                    time_to_target = time.time() - run_start
                elif step < last_step:
                    mllog.start(mlc.BLOCK_START, metadata={"samples_count": samples})
            if placement.is_chief and (reached or step % args.checkpoint_every == 0 or step == last_step):
                save_checkpoint(args.out, step, state, recipe_fingerprint(args))
            if reached:
                break
    except jax.errors.JaxRuntimeError as exc:  # a collective or the coordination service lost a worker
        peer = jax_placement.peer_named(str(exc))
        who = f"worker {peer}" if peer is not None else "another worker"
        raise TrainingError(f"step {step + 1}: {who} stopped answering ({str(exc).strip().splitlines()[0]}); "
                            "the run cannot go on without it: resume it (`ernie run --resume RUN_ID`)") from exc
    finally:
        feeder.close()

    mllog.samples(train=step * args.global_batch)  # the samples to converge (or trained, if it did not)
    mllog.end(mlc.RUN_STOP, metadata={"status": mlc.SUCCESS if time_to_target is not None else mlc.ABORTED})
    mllog.close()
    train_time = time.time() - run_start
    if not placement.is_chief:
        return

    warmup = min(args.timing_warmup, len(step_times) - 1)
    throughput = results.summarize_steps(
        step_times, warmup_steps=warmup, global_batch_size=args.global_batch, seq_len=args.seq_len
    )
    result = results.write_result(
        args.out / "result.json",
        workload=WORKLOAD, framework="jax", framework_version=jax.__version__,
        preset=preset, params=params, accelerator=placement.accelerator, device_name=name,
        chips=chips(placement, name), hosts=jax.process_count(),
        global_batch_size=args.global_batch, seq_len=args.seq_len, max_predictions=args.max_predictions,
        precision="bf16" if policy == "mixed_bfloat16" else "fp32", steps=step, throughput=throughput,
        settings=results.run_settings(
            processes=jax.process_count(), intra_op_threads=xla_threads(), inter_op_threads=1,
            micro_batch=args.global_batch // len(devices), compile_mode="xla", data_dir=args.data_dir),
        peak_flops_per_device=flops.peak_flops_for(name) if placement.accelerator != "cpu" else None,
        eval_value=accuracy, eval_target=args.target_accuracy, time_to_target_s=time_to_target,
        train_time_s=train_time,
        versions={"jax": jax.__version__, "jaxlib": jaxlib.__version__, "keras": keras.__version__,
                  "keras_hub": keras_hub.__version__},
        command=shlex.join([Path(sys.executable).name, *sys.argv]),
        mlperf={"division": standing.division, "differences": list(standing.differences), "ruleset": recipe.RULESET},
    )
    (args.out / TIMINGS).write_text("".join(f"{s:.6f}\t{w:.6f}\n" for s, w in zip(step_times, input_waits)))
    wait_share = sum(input_waits[warmup:]) / sum(step_times[warmup:])
    print(
        f"bert-jax: {step} steps in {train_time:.1f}s, {result['samples_per_s']} samples/s "
        f"(p50 {result['step_time_ms_p50']} ms/step), input wait {wait_share:.2%}, eval accuracy {accuracy:.4f}, "
        f"mfu {result['mfu']}",
        flush=True,
    )
