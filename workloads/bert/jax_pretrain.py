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
import json
import os
import re
import time
from dataclasses import dataclass
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

import checkpoint_tf1
import common
import data
import flops
import formats
import jax_data
import jax_placement
import keras_optim
import results
from cluster import cpu_name
from keras_model import build_pretrainer, masked_lm_counts, precision_policy, pretraining_loss
from mlperf import MLPerfLogger
from presets import Preset
from recipe_args import recipe_fingerprint

WORKLOAD = "bert-jax"
PROG = "train_tf.py --backend jax"
_TWO_CORES_A_CHIP = ("TPU v2", "TPU v3")  # JAX's devices are TensorCores there, chips elsewhere


class TrainingError(SystemExit):
    """A run that cannot go on: the message names what and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{PROG}: error: {message}")


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
    return out / common.CHECKPOINTS / f"step-{step:08d}.npz"


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted((out / common.CHECKPOINTS).glob("step-*.npz"))
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
    for old in sorted(path.parent.glob("step-*.npz"))[:-common.KEEP_CHECKPOINTS]:
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
        if not problem and (done := common.resume_problem(args, path, step)):
            problem = f"{PROG}: error: {done}"
    if jax.process_count() > 1:  # worker 0's verdict and state to all, so no worker trains alone
        verdict = multihost_utils.broadcast_one_to_all(np.int64(step if not problem else -1))
        if int(verdict) < 0:
            raise SystemExit(problem or f"{PROG}: error: worker 0 refused its checkpoint (its log says why)")
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


@dataclass(frozen=True)
class Mesh:
    """Every device of every worker on one axis, "batch": a global batch is split along it, the state replicated."""

    devices: list
    replicated: NamedSharding
    split: NamedSharding

    def replicate(self, value) -> jax.Array:
        value = np.asarray(value)
        return jax.make_array_from_callback(value.shape, self.replicated, lambda index: value[index])


def make_mesh(args: argparse.Namespace) -> Mesh:
    devices = jax.devices()
    if args.global_batch % len(devices):
        raise TrainingError(
            f"--global-batch {args.global_batch} is not divisible by the {len(devices)} devices "
            f"({jax.process_count()} worker(s) x {jax.local_device_count()}): each device takes an equal share"
        )
    mesh = jax.make_mesh((len(devices),), ("batch",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)
    return Mesh(devices=devices, replicated=NamedSharding(mesh, P()), split=NamedSharding(mesh, P("batch")))


@dataclass
class Model:
    """The Keras model and optimizer (built once, then used statelessly), and the facts the logs report."""

    preset: Preset
    policy: str  # the Keras dtype policy
    name: str  # the device's, as flops.peak_flops_for reads it
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    schedule: keras_optim.WarmupLinearDecay  # the optimizer's, for the log
    params: int


def build_model(args: argparse.Namespace, placement: jax_placement.Placement, mesh: Mesh) -> tuple[Model, State]:
    """The model with the same initial weights and dropout seeds on every worker (--init-checkpoint's
    weights when given), its optimizer, and their state replicated over the mesh."""
    preset = common.recipe_preset(args)
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
                                             args.poly_power)
    if args.init_checkpoint is not None:  # the reference's phase-1 weights (a resumed run replaces them later)
        try:
            checkpoint_tf1.load_keras(model, args.init_checkpoint, preset)
        except checkpoint_tf1.CheckpointError as exc:
            raise TrainingError(f"--init-checkpoint: {exc}") from None
    params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    state: State = {
        "trainable": [mesh.replicate(v.value) for v in model.trainable_variables],
        "non_trainable": [mesh.replicate(v.value) for v in model.non_trainable_variables],
        "optimizer": [mesh.replicate(v.value) for v in optimizer.variables],
    }
    return Model(preset=preset, policy=policy, name=name, model=model, optimizer=optimizer, schedule=schedule,
                 params=params), state


def open_train(args: argparse.Namespace, split: NamedSharding):
    """(make_batch, size for the log): global batch `step` of the training data, split over the mesh; ernie's
    own format in memory, the reference's shards streamed."""
    if args.data_format == "ernie":
        arrays = data.load_split(args.data_dir, "train")
        size = len(arrays["input_ids"])
        return jax_data.in_memory(arrays, jax_data.Order(size, args.global_batch, args.seed), split), str(size)
    source = formats.open_source(args.data_dir, args.data_format, seq_len=args.seq_len)
    return jax_data.Streamed(source, args.global_batch, args.seed, split).batch, "streamed"


def config_block(args: argparse.Namespace, m: Model, mesh: Mesh, start_step: int, last_step: int, train_size: str,
                 eval_set: common.EvalSet, resume_from: Path | None) -> str:
    """The resolved configuration, printed once by worker 0 before the first step."""
    devices = len(mesh.devices)
    return (
        f"bert-jax: preset {m.preset.name} ({m.params / 1e6:.1f}M params), {devices} device(s) on "
        f"{jax.process_count()} host(s) ({jax.local_device_count()} each), {m.name}, {m.policy}\n"
        f"  global batch {args.global_batch} = {devices} x {args.global_batch // devices}; seq "
        f"{args.seq_len}, {args.max_predictions} predictions\n"
        f"  {args.optimizer} lr {args.lr} warm-up {args.warmup_steps}, steps {start_step}..{last_step}, "
        f"{train_size} train ({args.data_format}) / {eval_set.count} eval examples; jax {jax.__version__}, "
        f"keras {keras.__version__}, keras-hub {keras_hub.__version__}"
        + common.standing_lines(eval_set.standing, resume_from)
    )


def compile_steps(args: argparse.Namespace, m: Model, mesh: Mesh, state: State, eval_arrays: dict[str, np.ndarray]):
    """(step_fn, evaluate): the whole optimizer step as one jit program, state -> (state, losses), the state
    donated; the masked-LM accuracy of a state over the eval examples."""
    model, optimizer = m.model, m.optimizer

    def forward(trainable, non_trainable, batch, training: bool):
        return model.stateless_call(trainable, non_trainable, {k: batch[k] for k in jax_data.FEATURES},
                                    training=training)

    def loss_fn(trainable, non_trainable, batch):
        outputs, non_trainable = forward(trainable, non_trainable, batch, training=True)
        losses = pretraining_loss(outputs, batch, jnp.sum(batch["masked_lm_weights"]),
                                  jnp.float32(batch["input_ids"].shape[0]))
        return losses["loss"], (losses, non_trainable)

    def train_step(state: State, batch):
        grads, (losses, non_trainable) = jax.grad(loss_fn, has_aux=True)(state["trainable"], state["non_trainable"], batch)
        if args.clip_grad_norm > 0:  # as tf.clip_by_global_norm
            norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in grads))
            scale = args.clip_grad_norm / jnp.maximum(norm, args.clip_grad_norm)
            grads = [g * scale.astype(g.dtype) for g in grads]
        trainable, optimizer_state = optimizer.stateless_apply(state["optimizer"], grads, state["trainable"])
        return {"trainable": trainable, "non_trainable": non_trainable, "optimizer": optimizer_state}, losses

    state_shardings = {group: [mesh.replicated] * len(values) for group, values in state.items()}
    step_fn = jax.jit(train_step, in_shardings=(state_shardings, mesh.split),
                      out_shardings=(state_shardings, mesh.replicated), donate_argnums=(0,))

    @jax.jit
    def eval_counts(trainable, non_trainable, batch):
        outputs, _ = forward(trainable, non_trainable, batch, training=False)
        return masked_lm_counts(outputs, batch)

    def evaluate(state: State) -> float:
        counts = np.zeros(2)
        for batch in jax_data.eval_batches(eval_arrays, args.global_batch, mesh.split):
            counts += [float(host_copy(c)) for c in eval_counts(state["trainable"], state["non_trainable"], batch)]
        return float(counts[0] / counts[1])

    return step_fn, evaluate


def train(args: argparse.Namespace, m: Model, timeline: common.Timeline, feeder: jax_data.Feeder, state: State,
          step_fn, evaluate, *, is_chief: bool, initial_eval: bool) -> None:
    """The training loop, to the last step or the target accuracy; `initial_eval`: evaluate the starting
    checkpoint first (--init-checkpoint). Worker 0 writes the checkpoints."""
    if initial_eval:  # the checkpoint's own accuracy
        timeline.evaluate(0, lambda: evaluate(state))
    timeline.begin_block()
    while timeline.running:
        t0 = time.perf_counter()
        batch = feeder.next()
        t1 = time.perf_counter()
        state, losses = step_fn(state, batch)
        loss = float(host_copy(losses["loss"]))  # the host waits here for every device to finish the step
        timeline.record(t0, t1)
        timeline.check_loss(loss, PROG)
        step = timeline.step
        if timeline.log_due():
            timeline.tracked_stats(
                loss=round(loss, 6),
                mlm_loss=round(float(host_copy(losses["mlm_loss"])), 6),
                nsp_loss=round(float(host_copy(losses["nsp_loss"])), 6),
                lr=float(m.schedule(step)),  # the next step's, as the other trainers log it
            )
        reached = timeline.end_of_step(lambda: evaluate(state))
        if is_chief and (reached or step % args.checkpoint_every == 0 or step == timeline.last_step):
            save_checkpoint(args.out, step, state, recipe_fingerprint(args))
        if reached:
            break


def write_outputs(args: argparse.Namespace, m: Model, placement: jax_placement.Placement, mesh: Mesh,
                  timeline: common.Timeline, standing) -> None:
    """Worker 0's result.json and step_times.tsv, and the run's summary line."""
    result = common.write_result(
        args, standing, timeline,
        workload=WORKLOAD, framework="jax", framework_version=jax.__version__,
        preset=m.preset, params=m.params, accelerator=placement.accelerator, device_name=m.name,
        chips=chips(placement, m.name), hosts=jax.process_count(),
        precision="bf16" if m.policy == "mixed_bfloat16" else "fp32",
        settings=results.run_settings(
            processes=jax.process_count(), intra_op_threads=xla_threads(), inter_op_threads=1,
            micro_batch=args.global_batch // len(mesh.devices), compile_mode="xla", data_dir=args.data_dir),
        peak_flops_per_device=flops.peak_flops_for(m.name) if placement.accelerator != "cpu" else None,
        versions={"jax": jax.__version__, "jaxlib": jaxlib.__version__, "keras": keras.__version__,
                  "keras_hub": keras_hub.__version__},
    )
    wait_share = common.write_timings(args.out, timeline)
    print(common.summary("bert-jax", timeline, result, wait_share), flush=True)


def run(args: argparse.Namespace, placement: jax_placement.Placement) -> None:
    """Train as `args` says over every device of every worker; the chief writes the logs and results."""
    mesh = make_mesh(args)
    m, state = build_model(args, placement, mesh)
    start_step, resume_from, state = resume_state(args, placement, state, mesh.replicate)
    mllog = MLPerfLogger(args.out, rank=jax.process_index(), append=resume_from is not None)

    # The eval set's size and the run's conformance come from the shards' headers: no example is read before
    # run_start (the rules' clock starts before the data is touched).
    eval_set = common.open_eval(args, PROG)
    timeline = common.Timeline(mllog, args, start_step)
    timeline.open(resumed=resume_from is not None, platform=f"{len(mesh.devices)}x{m.name}",
                  eval_size=eval_set.count, accumulation=1, division=eval_set.standing.division)
    make_batch, train_size = open_train(args, mesh.split)
    eval_arrays = data.pad_to_batches(common.read_eval(args, eval_set, m.preset.vocab_size, PROG), args.global_batch)
    if placement.is_chief:
        print(config_block(args, m, mesh, start_step, timeline.last_step, train_size, eval_set, resume_from), flush=True)

    step_fn, evaluate = compile_steps(args, m, mesh, state, eval_arrays)
    feeder = jax_data.Feeder(make_batch, start_step, timeline.last_step)
    try:
        train(args, m, timeline, feeder, state, step_fn, evaluate, is_chief=placement.is_chief,
              initial_eval=resume_from is None and args.init_checkpoint is not None)
    except jax.errors.JaxRuntimeError as exc:  # a collective or the coordination service lost a worker
        peer = jax_placement.peer_named(str(exc))
        who = f"worker {peer}" if peer is not None else "another worker"
        raise TrainingError(f"step {timeline.step + 1}: {who} stopped answering ({str(exc).strip().splitlines()[0]}); "
                            "the run cannot go on without it: resume it (`ernie run --resume RUN_ID`)") from exc
    finally:
        feeder.close()
    timeline.stop()
    mllog.close()
    if placement.is_chief:
        write_outputs(args, m, placement, mesh, timeline, eval_set.standing)
