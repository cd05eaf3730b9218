"""BERT pretraining on Keras 3 with keras-hub, on the TensorFlow or the JAX backend, like for like with
train_torch.py.

The same presets, prepared data (data.py), optimizers, schedule, heads, MLPerf keys and result.json as
the PyTorch workload; XLA-compiled steps, bf16 where the hardware computes in bf16.

    # this machine (CPU, or the GPUs of one host); --backend tensorflow is the default (bert-tf)
    python train_tf.py --preset tiny --data-dir data/seq128 --global-batch 32 --max-steps 40 --out out
    # JAX (bert-jax), data parallel over 8 virtual CPU devices
    python train_tf.py --backend jax --cpu-devices 8 --preset tiny --data-dir data/seq128 --out out
    # a Cloud TPU VM, single host or pod slice: the same command on every worker (ernie starts it so).
    # JAX: every worker runs the program, joined by jax.distributed (jax_placement.py); TensorFlow:
    # worker 0 drives the whole slice and the others return at once (tf_strategy.py)
    python train_tf.py --backend jax --preset base --data-dir data/seq128 --global-batch 256 \\
        --optimizer lamb --lr 2e-3 --max-steps 10000 --out out
    # several CPU/GPU hosts: the same command on every host, with ERNIE_WORKER_INDEX, ERNIE_NUM_WORKERS
    # and ERNIE_COORDINATOR_ADDRESS set (ernie sets them)
    # continue a run that was stopped, from its last checkpoint in OUT/checkpoints
    python train_tf.py ... --out out --resume

The placement is chosen (tf_strategy.py, jax_placement.py) before the framework is imported, because
both read variables as they load; the training itself lives in tf_pretrain.py and jax_pretrain.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from recipe_args import add_recipe_arguments, bind_data, check_recipe  # imports no framework

# What each backend needs installed, and where its requirements are (TPU VMs and CPU/GPU hosts differ).
BACKENDS = {
    "tensorflow": ("tensorflow", "requirements-tf.txt"),
    "jax": ("jax", "requirements-jax.txt (CPU/GPU hosts) or requirements-jax-tpu.txt (TPU VMs)"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags (train_torch.py's, name for name), validated against each other and the data before anything runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_arguments(
        parser, precisions=("auto", "bf16", "fp32"),
        precision_help="auto: mixed_bfloat16 on TPUs and Ampere+ GPUs, fp32 on CPUs (keras_model.precision_policy)",
        timing_warmup_help="first steps left out of the throughput figures (XLA compilation)")
    parser.add_argument("--backend", choices=tuple(BACKENDS), default="tensorflow",
                        help="Keras's backend: tensorflow (bert-tf) or jax (bert-jax)")
    parser.add_argument("--port", type=int, default=23456,
                        help="several hosts: the coordinator's port on worker 0 (JAX: jax.distributed's "
                             "coordinator; TensorFlow: the rendezvous, each worker's server on port+1+index)")
    parser.add_argument("--coordinator-timeout", type=float, default=300.0,
                        help="several hosts: seconds every worker may take to reach the coordinator")
    parser.add_argument("--cpu-devices", type=int, default=1,
                        help="JAX on a CPU host: virtual devices this process splits its share of the batch "
                             "over, as chips on a TPU host (a pod slice simulated on CPUs)")
    args = parser.parse_args(argv)

    module, requirements = BACKENDS[args.backend]
    if importlib.util.find_spec(module) is None:
        parser.error(f"--backend {args.backend}: {module} is not installed here; install {requirements}")
    if args.backend != "jax" and args.cpu_devices != 1:
        parser.error(f"--cpu-devices {args.cpu_devices} is for --backend jax (TensorFlow uses one CPU device)")
    if args.coordinator_timeout <= 0:
        parser.error(f"--coordinator-timeout must be positive, got {args.coordinator_timeout}")
    bind_data(parser, args, check_recipe(parser, args))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend  # before anything imports Keras
    if args.backend == "jax":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keras-hub loads TensorFlow (tensorflow-text) too
        import jax_placement  # imports no JAX
        from cluster import count_gpus, detect_tpu_vm

        try:
            placement = jax_placement.plan(os.environ, detect_tpu_vm(), count_gpus(), args.cpu_devices, args.port)
            jax_placement.prepare_environment(placement)
            jax_placement.initialize(placement, args.coordinator_timeout)
        except (ValueError, RuntimeError) as exc:  # a malformed ERNIE_* variable, an unreachable coordinator
            sys.exit(f"train_tf.py: error: {exc}")
        import jax_pretrain  # only now: JAX must start after jax_placement has set its environment

        jax_pretrain.run(args, placement)
        return

    import tf_strategy  # imports no TensorFlow

    try:
        plan = tf_strategy.choose(args.port, args.coordinator_timeout)
    except (ValueError, RuntimeError) as exc:  # a malformed ERNIE_* variable, a rendezvous that timed out
        sys.exit(f"train_tf.py: error: {exc}")
    # TensorFlow's C++ start-up chatter buries the config block; on a host without GPUs that includes an
    # ERROR line for the CUDA driver it looks for, so there only fatal messages are kept.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if plan.accelerator == "cpu" else "2")
    import tf_pretrain  # only now: TensorFlow must load after tf_strategy has set its environment

    tf_pretrain.run(args, plan)


if __name__ == "__main__":
    main()
