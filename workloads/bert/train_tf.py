"""BERT pretraining on Keras 3 (TensorFlow backend) with keras-hub, like for like with train_torch.py.

The same presets, prepared data (data.py), optimizers, schedule, heads, MLPerf keys and result.json as
the PyTorch workload; XLA-compiled steps (`jit_compile=True`), `mixed_bfloat16` where the hardware
computes in bf16, a prefetching tf.data pipeline.

    # this machine (CPU, or the GPUs of one host)
    python train_tf.py --preset tiny --data-dir data/seq128 --global-batch 32 --max-steps 40 --out out
    # a Cloud TPU VM, single host or pod slice: the same command on every worker (ernie starts it so);
    # on a pod slice worker 0 drives the whole slice and the others return at once (tf_strategy.py)
    python train_tf.py --preset base --data-dir data/seq128 --global-batch 256 --optimizer lamb --lr 2e-3 \\
        --max-steps 10000 --out out
    # several CPU/GPU hosts: the same command on every host, with ERNIE_WORKER_INDEX, ERNIE_NUM_WORKERS
    # and ERNIE_COORDINATOR_ADDRESS set (ernie sets them): MultiWorkerMirroredStrategy
    # continue a run that was stopped, from its last checkpoint in OUT/checkpoints
    python train_tf.py ... --out out --resume

The strategy is chosen (tf_strategy.py) before TensorFlow is imported, because a TPU launch sets
variables TensorFlow reads as it loads; the training itself lives in tf_pretrain.py.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tf_strategy  # noqa: E402  (these import no TensorFlow)
from recipe_args import add_recipe_arguments, bind_data, check_recipe  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags (train_torch.py's, name for name), validated against each other and the data before anything runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_arguments(
        parser, precisions=("auto", "bf16", "fp32"),
        precision_help="auto: mixed_bfloat16 on TPUs and Ampere+ GPUs, fp32 on CPUs (tf_strategy.py)",
        timing_warmup_help="first steps left out of the throughput figures (XLA compilation)")
    parser.add_argument("--port", type=int, default=23456,
                        help="several hosts: the coordinator's rendezvous port; workers serve on port+1+index")
    args = parser.parse_args(argv)

    bind_data(parser, args, check_recipe(parser, args))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        plan = tf_strategy.choose(args.port)
    except (ValueError, RuntimeError) as exc:  # a malformed ERNIE_* variable, a rendezvous that timed out
        sys.exit(f"train_tf.py: error: {exc}")
    # TensorFlow's C++ start-up chatter buries the config block; on a host without GPUs that includes an
    # ERROR line for the CUDA driver it looks for, so there only fatal messages are kept.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if plan.accelerator == "cpu" else "2")
    import tf_pretrain  # only now: TensorFlow must load after tf_strategy has set its environment

    tf_pretrain.run(args, plan)


if __name__ == "__main__":
    main()
