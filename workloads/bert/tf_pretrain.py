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
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from mlperf_logging.mllog import constants as mlc

import checkpoint_tf1
import data
import formats
import recipe
import tf_shards
import flops
import keras_optim
import results
import tf_data
import tf_strategy
from cluster import cpu_name
from keras_model import build_pretrainer, masked_lm_counts, precision_policy, pretraining_loss
from mlperf import MLPerfLogger
from recipe_args import conformance
from presets import get_preset
from recipe_args import recipe_fingerprint

WORKLOAD = "bert-tf"
CHECKPOINTS = "checkpoints"
FINGERPRINT = "fingerprint.json"
KEEP_CHECKPOINTS = 2
TIMINGS = "step_times.tsv"
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
    base = out / CHECKPOINTS
    return base if plan.is_chief else base / f"worker-{plan.cluster.worker_index}"


def run(args: argparse.Namespace, plan: tf_strategy.Plan) -> None:
    """Train as `args` says under `plan`; the chief writes mlperf.log, result.json and the checkpoints."""
    strategy = tf_strategy.build_strategy(plan)
    replicas = strategy.num_replicas_in_sync
    if args.global_batch % replicas:
        raise SystemExit(f"train_tf.py: error: --global-batch {args.global_batch} is not divisible by the {replicas} replicas")
    checkpoint_dir = checkpoint_directory(args.out, plan)
    resume_from = tf.train.latest_checkpoint(str(checkpoint_dir)) if args.resume else None
    mllog = MLPerfLogger(args.out, rank=plan.cluster.worker_index, append=resume_from is not None)
    preset = get_preset(args.preset)
    if args.dropout is not None:
        preset = dataclasses.replace(preset, dropout=args.dropout)
    policy = resolve_policy(args.precision, plan)
    keras.mixed_precision.set_global_policy(policy)
    name = device_name(plan)
    chips = plan.tpu_vm.chips if plan.tpu_vm else max(1, len(tf.config.list_physical_devices("GPU"))) * plan.cluster.num_workers
    hosts = plan.tpu_vm.hosts if plan.tpu_vm else plan.cluster.num_workers

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
    params = int(sum(np.prod(v.shape) for v in variables))
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_var)
    manager = tf.train.CheckpointManager(checkpoint, str(checkpoint_dir), max_to_keep=KEEP_CHECKPOINTS)
    start_step = 0
    if resume_from is not None:
        written = json.loads((checkpoint_dir / FINGERPRINT).read_text())
        if written != recipe_fingerprint(args):
            raise SystemExit(
                f"train_tf.py: error: --resume: {resume_from} was written with {written}, this run has "
                f"{recipe_fingerprint(args)}; use another --out or the same settings"
            )
        checkpoint.restore(resume_from).assert_existing_objects_matched()
        start_step = int(step_var.numpy())
        if start_step >= args.max_steps:
            raise SystemExit(f"train_tf.py: error: --resume: {resume_from} already holds all {args.max_steps} steps")
    if plan.kind == "multi_worker":  # every worker resumed from its own copy: they must agree on the step
        reported = tf.function(lambda: strategy.run(lambda: tf.constant(float(start_step))))()
        if float(strategy.reduce(SUM, reported, axis=None)) != start_step * replicas:
            raise SystemExit(
                f"train_tf.py: error: --resume: worker {plan.cluster.worker_index} is at step {start_step}, others "
                f"elsewhere; give every worker the checkpoints of the same run, or start afresh in a new --out"
            )
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    (checkpoint_dir / FINGERPRINT).write_text(json.dumps(recipe_fingerprint(args)) + "\n")

    if resume_from is None and args.init_checkpoint is not None:  # initialisation: the reference's phase-1 weights
        try:
            checkpoint_tf1.load_keras(model, args.init_checkpoint, preset)
        except checkpoint_tf1.CheckpointError as exc:
            raise SystemExit(f"train_tf.py: error: --init-checkpoint: {exc}") from None

    # The eval set's size and the run's conformance come from the shards' headers: no example is read before
    # run_start (the rules' clock starts before the data is touched).
    try:
        eval_source = formats.open_source(args.eval_data or args.data_dir, "auto" if args.eval_data else args.data_format,
                                          split="eval", seq_len=args.seq_len, max_predictions=args.max_predictions)
        eval_count = min(args.eval_samples, eval_source.examples)
    except data.DataError as exc:
        raise SystemExit(f"train_tf.py: error: --eval-data: {exc}") from None
    standing = conformance(args, eval_count)
    last_step = args.max_steps
    if args.max_samples_termination is not None:
        last_step = min(last_step, -(-args.max_samples_termination // args.global_batch))
    if resume_from is None:
        mllog.open_run(args, platform=f"{replicas}x{name}", eval_size=eval_count, accumulation=1,
                       division=standing.division)
    else:
        mllog.event(mlc.INIT_CHECKPOINT_STEP, start_step)
    run_start = time.time()

    if args.data_format == "ernie":
        train_arrays = data.load_split(args.data_dir, "train")
        train_size = str(len(train_arrays["input_ids"]))
    else:
        train_source = formats.open_source(args.data_dir, args.data_format, seq_len=args.seq_len)
        train_size = "streamed"
    try:
        eval_arrays = formats.read_examples(eval_source, limit=eval_count)
        formats.check_vocab(eval_arrays, vocab_size=preset.vocab_size, cls_id=data.CLS_ID,
                            where=str(args.eval_data or args.data_dir))
    except data.DataError as exc:
        raise SystemExit(f"train_tf.py: error: --eval-data: {exc}") from None
    if plan.is_chief:
        print(
            f"bert-tf: preset {preset.name} ({params / 1e6:.1f}M params), {replicas} replica(s) on {hosts} host(s) "
            f"under {type(strategy).__name__}, {name}, {policy}\n"
            f"  global batch {args.global_batch} = {replicas} x {args.global_batch // replicas}; seq {args.seq_len}, "
            f"{args.max_predictions} predictions\n"
            f"  {args.optimizer} lr {args.lr} warm-up {args.warmup_steps}, steps {start_step}..{args.max_steps}, "
            f"{train_size} train ({args.data_format}) / {eval_count} eval examples; tensorflow {tf.__version__}, "
            f"keras {keras.__version__}, keras-hub {keras_hub.__version__}\n  MLPerf {standing.division} division"
            + "".join(f"\n    open: {why}" for why in standing.differences)
            + (f"\n  resuming from {resume_from}" if resume_from else ""),
            flush=True,
        )

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

    batches = strategy.distribute_datasets_from_function(
        lambda context: tf_data.train_dataset(
            train_arrays, global_batch=args.global_batch, seed=args.seed, first_step=start_step,
            num_steps=last_step - start_step, context=context,
        ) if args.data_format == "ernie" else tf_shards.train_dataset(
            train_source, global_batch=args.global_batch, seed=args.seed, first_step=start_step,
            num_steps=last_step - start_step, context=context,
        )
    )

    # ---- the training loop
    step_times: list[float] = []
    input_waits: list[float] = []
    accuracy: float | None = None
    time_to_target: float | None = None
    step = start_step
    batch_iterator = iter(batches)
    if resume_from is None and args.init_checkpoint is not None:  # the checkpoint's own accuracy
        mllog.start(mlc.EVAL_START, metadata={"epoch_num": 0})
        accuracy = evaluate()
        mllog.event(mlc.EVAL_ACCURACY, accuracy, metadata={"epoch_num": 0})
        mllog.end(mlc.EVAL_STOP, metadata={"epoch_num": 0})
    mllog.start(mlc.BLOCK_START, metadata={"samples_count": step * args.global_batch})
    while step < last_step:
        t0 = time.perf_counter()
        batch = next(batch_iterator)
        t1 = time.perf_counter()
        losses = train_step(batch)
        loss = float(losses["loss"])  # the host waits here for the device to finish the step
        step += 1
        step_times.append(time.perf_counter() - t0)
        input_waits.append(t1 - t0)
        if not np.isfinite(loss):
            mllog.end(mlc.RUN_STOP, metadata={"status": mlc.ABORTED})
            raise SystemExit(f"train_tf.py: error: step {step}: the loss is {loss}; lower --lr or check the data")

        if step % args.log_every == 0 or step == last_step:
            recent = step_times[-args.log_every :]
            mllog.tracked_stats(
                step,
                loss=round(loss, 6),
                mlm_loss=round(float(losses["mlm_loss"]), 6),
                nsp_loss=round(float(losses["nsp_loss"]), 6),
                lr=float(optimizer.learning_rate),  # the next step's, as torch's get_last_lr after scheduler.step
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
        if reached or step % args.checkpoint_every == 0 or step == last_step:
            step_var.assign(step)
            manager.save(checkpoint_number=step)
        if reached:
            break

    mllog.samples(train=step * args.global_batch)  # the samples to converge (or trained, if it did not)
    mllog.end(mlc.RUN_STOP, metadata={"status": mlc.SUCCESS if time_to_target is not None else mlc.ABORTED})
    mllog.close()
    train_time = time.time() - run_start
    if not plan.is_chief:
        return

    warmup = min(args.timing_warmup, len(step_times) - 1)
    throughput = results.summarize_steps(
        step_times, warmup_steps=warmup, global_batch_size=args.global_batch, seq_len=args.seq_len
    )
    result = results.write_result(
        args.out / "result.json",
        workload=WORKLOAD, framework="tensorflow", framework_version=tf.__version__,
        preset=preset, params=params, accelerator=plan.accelerator, device_name=name, chips=chips, hosts=hosts,
        global_batch_size=args.global_batch, seq_len=args.seq_len, max_predictions=args.max_predictions,
        precision="bf16" if policy == "mixed_bfloat16" else "fp32", steps=step, throughput=throughput,
        settings=results.run_settings(
            processes=plan.cluster.num_workers, intra_op_threads=results.tf_threads()[0],
            inter_op_threads=results.tf_threads()[1], micro_batch=args.global_batch // replicas,
            compile_mode="xla", data_dir=args.data_dir),
        peak_flops_per_device=flops.peak_flops_for(name) if plan.accelerator != "cpu" else None,
        eval_value=accuracy, eval_target=args.target_accuracy, time_to_target_s=time_to_target,
        train_time_s=train_time,
        versions={"tensorflow": tf.__version__, "keras": keras.__version__, "keras_hub": keras_hub.__version__},
        command=shlex.join([Path(sys.executable).name, *sys.argv]),
        mlperf={"division": standing.division, "differences": list(standing.differences), "ruleset": recipe.RULESET},
    )
    # The per-step figures, for the frameworks benchmark's input-wait share: seconds per step, seconds waited.
    (args.out / TIMINGS).write_text("".join(f"{s:.6f}\t{w:.6f}\n" for s, w in zip(step_times, input_waits)))
    wait_share = sum(input_waits[warmup:]) / sum(step_times[warmup:])
    print(
        f"bert-tf: {step} steps in {train_time:.1f}s, {result['samples_per_s']} samples/s "
        f"(p50 {result['step_time_ms_p50']} ms/step), input wait {wait_share:.2%}, eval accuracy {accuracy:.4f}, "
        f"mfu {result['mfu']}",
        flush=True,
    )
