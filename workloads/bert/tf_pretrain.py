"""The BERT pretraining run on TensorFlow: strategy, model, data, the timed loop, eval, checkpoints, logs.

Imported by train_tf.py once tf_strategy has prepared the environment. A step: every replica runs one
XLA-compiled forward and backward pass (`jit_compile=True`) over its share of the global batch, its
loss normalised by the global batch's counts (keras_model.pretraining_loss); the gradients are summed
across replicas, clipped on their global norm and applied once. A step is timed from the request for
its input batch until its loss is back on the host; the wait for the input is recorded on its own, and
its share of the timed step time is the input-pipeline figure the frameworks benchmark reports.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import keras_hub
import numpy as np
import tensorflow as tf

import checkpoint_tf1
import common
import data
import formats
import flops
import keras_optim
import results
import tf_data
import tf_shards
import tf_strategy
from cluster import cpu_name
from keras_model import build_pretrainer, masked_lm_counts, precision_policy, pretraining_loss
from mlperf import MLPerfLogger
from presets import Preset
from recipe_args import recipe_fingerprint

WORKLOAD = "bert-tf"
PROG = "train_tf.py"
FINGERPRINT = "fingerprint.json"
SUM = tf.distribute.ReduceOp.SUM


def device_name(plan: tf_strategy.Plan) -> str:
    """The accelerator's name as flops.peak_flops_for reads it ("TPU v4-32", "NVIDIA H100 80GB HBM3")."""
    if plan.tpu_vm is not None:
        return f"TPU {plan.tpu_vm.accelerator_type}"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return cpu_name()


def resolve_policy(requested: str, plan: tf_strategy.Plan) -> str:
    """The Keras dtype policy: --precision, or keras_model.precision_policy for the device."""
    if requested != "auto":
        return {"fp32": "float32", "bf16": "mixed_bfloat16"}[requested]
    capability = None
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
    return precision_policy(plan.accelerator, capability)


def checkpoint_directory(out: Path, plan: tf_strategy.Plan) -> Path:
    """Where this worker keeps its checkpoints. Every worker saves (a multi-worker save runs collectives)
    and keeps its own copy of the identical variables, to resume from its own disk; the others' copies
    sit in their own subdirectory, so workers sharing one --out never write the same files."""
    base = out / common.CHECKPOINTS
    return base if plan.is_chief else base / f"worker-{plan.cluster.worker_index}"


@dataclass
class Run:
    """One run's model, optimizer and checkpoint under its strategy, and the facts its logs report."""

    plan: tf_strategy.Plan
    strategy: tf.distribute.Strategy
    preset: Preset
    policy: str  # the Keras dtype policy
    name: str  # the device's, as flops.peak_flops_for reads it
    model: keras.Model
    variables: list  # the model's trainable variables, in the optimizer's order
    optimizer: keras.optimizers.Optimizer
    step_var: tf.Variable
    checkpoint: tf.train.Checkpoint
    manager: tf.train.CheckpointManager
    directory: Path  # this worker's checkpoints (checkpoint_directory)

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    @property
    def params(self) -> int:
        return int(sum(np.prod(v.shape) for v in self.variables))

    @property
    def chips(self) -> int:
        plan = self.plan
        return plan.tpu_vm.chips if plan.tpu_vm else max(1, len(tf.config.list_physical_devices("GPU"))) * plan.cluster.num_workers

    @property
    def hosts(self) -> int:
        return self.plan.tpu_vm.hosts if self.plan.tpu_vm else self.plan.cluster.num_workers


def build_run(args: argparse.Namespace, plan: tf_strategy.Plan, strategy: tf.distribute.Strategy, directory: Path) -> Run:
    """The model and optimizer, built under the strategy with the same initial weights on every worker."""
    preset = common.recipe_preset(args)
    policy = resolve_policy(args.precision, plan)
    keras.mixed_precision.set_global_policy(policy)
    name = device_name(plan)
    keras.utils.set_random_seed(args.seed)  # the same initial weights on every worker
    with strategy.scope():
        model = build_pretrainer(preset, args.seq_len, args.max_predictions)
        variables = model.trainable_variables
        optimizer = keras_optim.make_optimizer(
            args.optimizer, variables, lr=args.lr, warmup_steps=args.warmup_steps, total_steps=args.max_steps,
            weight_decay=args.weight_decay, beta_1=args.beta1, beta_2=args.beta2, epsilon=args.eps,
            start_warmup_step=args.start_warmup_step, power=args.poly_power,
        )
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_var)
    manager = tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=common.KEEP_CHECKPOINTS)
    return Run(plan=plan, strategy=strategy, preset=preset, policy=policy, name=name, model=model, variables=variables,
               optimizer=optimizer, step_var=step_var, checkpoint=checkpoint, manager=manager, directory=directory)


def restore(args: argparse.Namespace, run: Run, resume_from: str | None) -> int:
    """The step to start at: a resumed run's, checked against this run's settings and the other workers'
    steps; else 0, from --init-checkpoint's weights when given. Records this run's fingerprint."""
    start_step = 0
    if resume_from is not None:
        written = json.loads((run.directory / FINGERPRINT).read_text())
        if written != recipe_fingerprint(args):
            common.fail(PROG, f"--resume: {resume_from} was written with {written}, this run has "
                              f"{recipe_fingerprint(args)}; use another --out or the same settings")
        run.checkpoint.restore(resume_from).assert_existing_objects_matched()
        start_step = int(run.step_var.numpy())
        if problem := common.resume_problem(args, resume_from, start_step):
            common.fail(PROG, problem)
    if run.plan.kind == "multi_worker":  # every worker resumed from its own copy: they must agree on the step
        strategy = run.strategy
        reported = tf.function(lambda: strategy.run(lambda: tf.constant(float(start_step))))()
        if float(strategy.reduce(SUM, reported, axis=None)) != start_step * run.replicas:
            common.fail(PROG, f"--resume: worker {run.plan.cluster.worker_index} is at step {start_step}, others "
                              f"elsewhere; give every worker the checkpoints of the same run, or start afresh in a new --out")
    run.directory.mkdir(parents=True, exist_ok=True)
    (run.directory / FINGERPRINT).write_text(json.dumps(recipe_fingerprint(args)) + "\n")

    if resume_from is None and args.init_checkpoint is not None:  # initialisation: the reference's phase-1 weights
        try:
            checkpoint_tf1.load_keras(run.model, args.init_checkpoint, run.preset)
        except checkpoint_tf1.CheckpointError as exc:
            common.fail(PROG, f"--init-checkpoint: {exc}")
    return start_step


def open_train(args: argparse.Namespace) -> tuple[dict[str, np.ndarray] | formats.Source, str]:
    """The training data (ernie's own format in memory, the reference's shards streamed) and its size for the log."""
    if args.data_format == "ernie":
        arrays = data.load_split(args.data_dir, "train")
        return arrays, str(len(arrays["input_ids"]))
    return formats.open_source(args.data_dir, args.data_format, seq_len=args.seq_len), "streamed"


def train_batches(args: argparse.Namespace, strategy: tf.distribute.Strategy, train_data, start_step: int,
                  last_step: int) -> tf.distribute.DistributedDataset:
    """Global batches start_step..last_step, each replica reading its own share."""
    dataset = tf_data.train_dataset if args.data_format == "ernie" else tf_shards.train_dataset
    return strategy.distribute_datasets_from_function(
        lambda context: dataset(train_data, global_batch=args.global_batch, seed=args.seed, first_step=start_step,
                                num_steps=last_step - start_step, context=context)
    )


def config_block(args: argparse.Namespace, run: Run, start_step: int, train_size: str, eval_set: common.EvalSet,
                 resume_from: str | None) -> str:
    """The resolved configuration, printed once by the chief before the first step."""
    replicas = run.replicas
    return (
        f"bert-tf: preset {run.preset.name} ({run.params / 1e6:.1f}M params), {replicas} replica(s) on {run.hosts} "
        f"host(s) under {type(run.strategy).__name__}, {run.name}, {run.policy}\n"
        f"  global batch {args.global_batch} = {replicas} x {args.global_batch // replicas}; seq {args.seq_len}, "
        f"{args.max_predictions} predictions\n"
        f"  {args.optimizer} lr {args.lr} warm-up {args.warmup_steps}, steps {start_step}..{args.max_steps}, "
        f"{train_size} train ({args.data_format}) / {eval_set.count} eval examples; tensorflow {tf.__version__}, "
        f"keras {keras.__version__}, keras-hub {keras_hub.__version__}"
        + common.standing_lines(eval_set.standing, resume_from)
    )


def compile_steps(args: argparse.Namespace, run: Run, eval_arrays: dict[str, np.ndarray]):
    """(train_step, evaluate): one optimizer step on a distributed batch, returning its summed losses; the
    masked-LM accuracy over the eval examples."""
    model, variables, optimizer, strategy = run.model, run.variables, run.optimizer, run.strategy

    @tf.function(jit_compile=True)
    def forward_backward(batch, mlm_denominator, nsp_denominator):
        with tf.GradientTape() as tape:
            outputs = model({k: batch[k] for k in tf_data.FEATURES}, training=True)
            losses = pretraining_loss(outputs, batch, mlm_denominator, nsp_denominator)
        return tape.gradient(losses["loss"], variables), losses

    def replica_step(batch):
        context = tf.distribute.get_replica_context()
        local = tf.stack([tf.reduce_sum(batch["masked_lm_weights"]), tf.cast(tf.shape(batch["input_ids"])[0], tf.float32)])
        mlm_denominator, nsp_denominator = tf.unstack(context.all_reduce(SUM, local))
        grads, losses = forward_backward(batch, mlm_denominator, nsp_denominator)
        grads = context.all_reduce(SUM, grads)
        if args.clip_grad_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, args.clip_grad_norm)
        optimizer.apply_gradients(zip(grads, variables))
        return losses

    @tf.function
    def train_step(batch):
        losses = strategy.run(replica_step, args=(batch,))
        return {k: strategy.reduce(SUM, v, axis=None) for k, v in losses.items()}

    @tf.function(jit_compile=True)
    def eval_counts(batch):
        return masked_lm_counts(model({k: batch[k] for k in tf_data.FEATURES}, training=False), batch)

    @tf.function
    def eval_step(batch):
        correct, real = strategy.run(eval_counts, args=(batch,))
        return strategy.reduce(SUM, correct, axis=None), strategy.reduce(SUM, real, axis=None)

    def evaluate() -> float:
        batches = strategy.distribute_datasets_from_function(
            lambda context: tf_data.eval_dataset(eval_arrays, global_batch=args.global_batch, context=context)
        )
        counts = np.zeros(2)
        for batch in batches:
            counts += [float(c) for c in eval_step(batch)]
        return float(counts[0] / counts[1])

    return train_step, evaluate


def train(args: argparse.Namespace, run: Run, timeline: common.Timeline, batches, train_step, evaluate,
          initial_eval: bool) -> None:
    """The training loop, to the last step or the target accuracy; `initial_eval`: evaluate the starting
    checkpoint first (--init-checkpoint)."""
    batch_iterator = iter(batches)
    if initial_eval:  # the checkpoint's own accuracy
        timeline.evaluate(0, evaluate)
    timeline.begin_block()
    while timeline.running:
        t0 = time.perf_counter()
        batch = next(batch_iterator)
        t1 = time.perf_counter()
        losses = train_step(batch)
        loss = float(losses["loss"])  # the host waits here for the device to finish the step
        timeline.record(t0, t1)
        timeline.check_loss(loss, PROG)
        if timeline.log_due():
            timeline.tracked_stats(
                loss=round(loss, 6),
                mlm_loss=round(float(losses["mlm_loss"]), 6),
                nsp_loss=round(float(losses["nsp_loss"]), 6),
                lr=float(run.optimizer.learning_rate),  # the next step's, as torch's get_last_lr after scheduler.step
            )
        step = timeline.step
        reached = timeline.end_of_step(evaluate)
        if reached or step % args.checkpoint_every == 0 or step == timeline.last_step:
            run.step_var.assign(step)
            run.manager.save(checkpoint_number=step)
        if reached:
            break
    timeline.stop()


def write_outputs(args: argparse.Namespace, run: Run, timeline: common.Timeline, standing) -> None:
    """The chief's result.json and step_times.tsv, and the run's summary line."""
    plan = run.plan
    intra_op, inter_op = results.tf_threads()
    result = common.write_result(
        args, standing, timeline,
        workload=WORKLOAD, framework="tensorflow", framework_version=tf.__version__,
        preset=run.preset, params=run.params, accelerator=plan.accelerator, device_name=run.name, chips=run.chips,
        hosts=run.hosts, precision="bf16" if run.policy == "mixed_bfloat16" else "fp32",
        settings=results.run_settings(
            processes=plan.cluster.num_workers, intra_op_threads=intra_op, inter_op_threads=inter_op,
            micro_batch=args.global_batch // run.replicas, compile_mode="xla", data_dir=args.data_dir),
        peak_flops_per_device=flops.peak_flops_for(run.name) if plan.accelerator != "cpu" else None,
        versions={"tensorflow": tf.__version__, "keras": keras.__version__, "keras_hub": keras_hub.__version__},
    )
    wait_share = common.write_timings(args.out, timeline)
    print(common.summary("bert-tf", timeline, result, wait_share), flush=True)


def run(args: argparse.Namespace, plan: tf_strategy.Plan) -> None:
    """Train as `args` says under `plan`; the chief writes mlperf.log, result.json and the checkpoints."""
    strategy = tf_strategy.build_strategy(plan)
    replicas = strategy.num_replicas_in_sync
    if args.global_batch % replicas:
        common.fail(PROG, f"--global-batch {args.global_batch} is not divisible by the {replicas} replicas")
    checkpoint_dir = checkpoint_directory(args.out, plan)
    resume_from = tf.train.latest_checkpoint(str(checkpoint_dir)) if args.resume else None
    mllog = MLPerfLogger(args.out, rank=plan.cluster.worker_index, append=resume_from is not None)
    training = build_run(args, plan, strategy, checkpoint_dir)
    start_step = restore(args, training, resume_from)

    # The eval set's size and the run's conformance come from the shards' headers: no example is read before
    # run_start (the rules' clock starts before the data is touched).
    eval_set = common.open_eval(args, PROG)
    timeline = common.Timeline(mllog, args, start_step)
    timeline.open(resumed=resume_from is not None, platform=f"{replicas}x{training.name}", eval_size=eval_set.count,
                  accumulation=1, division=eval_set.standing.division)
    train_data, train_size = open_train(args)
    eval_arrays = common.read_eval(args, eval_set, training.preset.vocab_size, PROG)
    if plan.is_chief:
        print(config_block(args, training, start_step, train_size, eval_set, resume_from), flush=True)

    train_step, evaluate = compile_steps(args, training, eval_arrays)
    batches = train_batches(args, strategy, train_data, start_step, timeline.last_step)
    train(args, training, timeline, batches, train_step, evaluate,
          initial_eval=resume_from is None and args.init_checkpoint is not None)
    mllog.close()
    if plan.is_chief:
        write_outputs(args, training, timeline, eval_set.standing)
