"""fairseq Transformer translation, one worker of a run: prepare data, train, evaluate, log.

    cd workloads/translation
    python run.py --recipe synthetic --data-dir /tmp/syn --prepare --out /tmp/run1          # CPU demo
    python run.py --recipe iwslt14-de-en --data-dir ~/data/iwslt14 --prepare --out $ERNIE_OUTPUT_DIR
    python run.py --recipe wmt-en-de --data-dir ~/data/wmt --prepare --update-freq 16 --out $ERNIE_OUTPUT_DIR

Every host runs the same command; ERNIE_NUM_WORKERS / ERNIE_WORKER_INDEX / ERNIE_COORDINATOR_ADDRESS
place it (launch.py). Worker 0 writes mlperf.log (`:::MLLOG` lines, also on stdout) and, after testing
the last checkpoint with fairseq-generate + sacrebleu, result.json. Training resumes from
CHECKPOINT_DIR/checkpoint_last.pt when one is there (fairseq's own --restore-file default).
Exit status: 0 trained and evaluated, 1 fairseq failed, 2 bad input or an unsupported setup.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import evaluate
import launch
import prepare
import results
import xla_compat
from fairseq_log import Milestone, Summary, TrainInner, TrainLog, throughput
from mlperf import MLPerfLog, constants, eval_accuracy, mllog_unit
from recipes import RECIPES, Recipe, get_recipe

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2
M2M100 = "m2m100"  # the generation recipe (m2m100.py), not a training Recipe
RECIPE_DEFAULT = "recipe"  # the value of --max-tokens/--max-epoch/--target-bleu meaning "the recipe's"


def _or_recipe(kind: Callable[[str], float]) -> Callable[[str], float | None]:
    """An argparse type: a number, or the word "recipe" (None) for the recipe's own value."""
    def parse(text: str) -> float | None:
        return None if text == RECIPE_DEFAULT else kind(text)
    parse.__name__ = kind.__name__  # argparse names it in "invalid int value"
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="synthetic",
                        help=f"one of {', '.join(RECIPES)}; or {M2M100}, generation only (python m2m100.py --help)")
    parser.add_argument("--data-dir", required=True,
                        help="prepared data (prepare.py), or where to make it; {recipe} and ~ are expanded")
    parser.add_argument("--prepare", action="store_true", help="prepare --data-dir first unless it is ready")
    parser.add_argument("--synthetic-pairs", type=int, default=2000, help="training pairs of the synthetic recipe")
    parser.add_argument("--mirror", help="a directory or URL holding the real corpora's archives by file name")
    parser.add_argument("--out", type=Path, default=os.environ.get("ERNIE_OUTPUT_DIR"),
                        help="output directory (default: $ERNIE_OUTPUT_DIR)")
    parser.add_argument("--checkpoint-dir", default="",
                        help="where checkpoints go and a rerun resumes from (default, or empty: OUT/checkpoints, on "
                             "this host only); {run_id} is ERNIE_RUN_ID. A multi-host run resumes only from a "
                             "directory every host mounts (README: Distributed training)")
    parser.add_argument("--accelerator", choices=("auto", "cpu", "gpu", "tpu"), default="auto",
                        help="auto: gpu when CUDA is available, else tpu when torch_xla is installed, else cpu")
    parser.add_argument("--precision", choices=("auto", *launch.PRECISION_FLAGS), default="auto",
                        help="auto: fp16 on GPUs, bf16 on TPUs, fp32 on CPUs")
    parser.add_argument("--max-tokens", type=_or_recipe(int), help="tokens per device per batch (default/'recipe': the recipe's)")
    parser.add_argument("--update-freq", type=int, default=1, help="batches accumulated per optimizer step")
    parser.add_argument("--max-epoch", type=_or_recipe(int), help="stop after this many epochs (default/'recipe': the recipe's)")
    parser.add_argument("--max-update", type=int, default=0, help="stop after this many updates (0: no limit)")
    parser.add_argument("--target-bleu", type=_or_recipe(float),
                        help="stop once validation BLEU reaches this, in (0, 100] (default/'recipe': the recipe's)")
    parser.add_argument("--log-interval", type=int, default=10, help="updates between fairseq's train_inner lines")
    parser.add_argument("--data-workers", type=int, default=0,
                        help="fairseq --num-workers: data-loading processes (0 loads in the training process)")
    parser.add_argument("--cpu-threads", type=_or_recipe(int),
                        help="OMP threads per fairseq process on CPU hosts; 0: torch's default, one per core "
                             "(default/'recipe': the recipe's)")
    parser.add_argument("--port", type=int, default=launch.DEFAULT_PORT, help="rendezvous port on the coordinator")
    # The workload's one command line carries M2M-100's flags too; a training recipe leaves them unused.
    m2m = parser.add_argument_group(f"--recipe {M2M100} only (m2m100.py)")
    for flag in ("--m2m-model", "--lang-pairs", "--dev-dir"):
        m2m.add_argument(flag, help="unused by the training recipes")
    args = parser.parse_args(argv)

    try:
        args.recipe = get_recipe(args.recipe)
    except ValueError as err:
        parser.error(f"--recipe: {err}")
    args.data_dir = Path(args.data_dir.replace("{recipe}", args.recipe.name)).expanduser()
    if args.out is None:
        parser.error("--out: give an output directory or set ERNIE_OUTPUT_DIR")
    if args.target_bleu is None:
        args.target_bleu = args.recipe.target_bleu
    if not 0 < args.target_bleu <= 100:
        parser.error(f"--target-bleu {args.target_bleu}: BLEU lies in (0, 100]; MLPerf's WMT target is 25.0")
    for name in ("max_tokens", "max_epoch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    if args.cpu_threads is None:
        args.cpu_threads = args.recipe.cpu_threads
    for name, low in (("update_freq", 1), ("max_update", 0), ("log_interval", 1), ("data_workers", 0), ("cpu_threads", 0),
                      ("synthetic_pairs", 20)):
        if getattr(args, name) < low:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least {low}")
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: not a TCP port")
    args.max_tokens = args.max_tokens or args.recipe.max_tokens
    args.max_epoch = args.max_epoch or args.recipe.max_epoch
    return args


def checkpoint_dir(template: str, out: Path, env: dict[str, str] | os._Environ = os.environ) -> Path:
    """--checkpoint-dir with {run_id} filled in from ERNIE_RUN_ID (one directory per run on shared storage),
    or OUT/checkpoints when it is empty."""
    if not template:
        return out / "checkpoints"
    if "{run_id}" in template:
        if not env.get("ERNIE_RUN_ID"):
            raise ValueError(f"--checkpoint-dir {template}: {{run_id}} needs ERNIE_RUN_ID, which ernie sets on every "
                             "worker; outside ernie, write the directory out")
        template = template.replace("{run_id}", env["ERNIE_RUN_ID"])
    return Path(template).expanduser().resolve()


def check_resume(topology: launch.Topology, checkpoints: Path, *, shared: bool) -> None:
    """Refuse a multi-host resume from a directory only this host sees.

    fairseq 0.12 resumes when it finds CHECKPOINT_DIR/checkpoint_last.pt: rank 0 loads it and broadcasts it, and
    every other rank joins that broadcast only if the file exists on its own host too (every rank loads it on
    TPUs). OUT/checkpoints is each host's own, so there worker 0 would wait on workers that started afresh.
    """
    last = checkpoints / "checkpoint_last.pt"
    if topology.num_workers > 1 and not shared and last.is_file():
        raise ValueError(f"{last} exists, but a run on {topology.num_workers} hosts resumes only from a checkpoint "
                         "directory every host mounts: set --checkpoint-dir (workload parameter checkpoint_dir) to "
                         "shared storage, e.g. /mnt/shared/ernie/{run_id}, or delete it to start over")


def detect_accelerator(choice: str) -> tuple[launch.Accelerator, int]:
    """The accelerator and how many devices of it this host trains on."""
    if choice == "auto":
        if torch.cuda.is_available():
            choice = "gpu"
        else:
            import importlib.util
            choice = "tpu" if importlib.util.find_spec("torch_xla") else "cpu"
    if choice == "gpu":
        if not torch.cuda.is_available():
            raise ValueError("--accelerator gpu: this torch sees no CUDA device; use --accelerator cpu")
        return "gpu", torch.cuda.device_count()
    if choice == "tpu":
        # Counted without starting torch_xla's runtime here: a TPU chip admits one process, fairseq's.
        if os.environ.get("PJRT_DEVICE") == "CPU":  # XLA's CPU device, where the TPU path is tested
            return "tpu", int(os.environ.get("CPU_NUM_DEVICES", "1"))
        # v4/v5 TPU VMs: 4 chips per host, one fairseq process per chip (TPU_NUM_DEVICES overrides).
        return "tpu", int(os.environ.get("TPU_NUM_DEVICES", "4"))
    return "cpu", 1


def fairseq_env(cpu_threads: int = 0) -> dict[str, str]:
    """The environment of every fairseq process this worker starts."""
    threads = {"OMP_NUM_THREADS": str(cpu_threads)} if cpu_threads else {}
    # torch >= 2.6 loads checkpoints with weights_only=True by default; fairseq 0.12 pickles its config
    # (argparse.Namespace, omegaconf) into them and cannot read its own checkpoints back. The
    # checkpoints are this run's own, so fairseq gets torch's documented switch back to a full load.
    return {**os.environ, **threads, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONUNBUFFERED": "1"}


def train(command: list[str], env: dict[str, str], out: Path, mllog: MLPerfLog,
          recipe: Recipe, target: float) -> tuple[int, TrainLog, float | None, float | None]:
    """Run fairseq-train, echoing and keeping its output; MLPerf events as its lines arrive.

    Initialisation ends, and the timed run starts, when fairseq says what it trains on: the model and
    optimiser are built, the training data not yet read. Returns fairseq's exit status, its records,
    and the times the run started and the target was reached (None when they never came).
    """
    log = TrainLog()
    run_start: float | None = None
    reached_at: float | None = None
    epoch = 0
    with open(out / "train.log", "w") as keep, subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            keep.write(line)
            record = log.add(line)
            if isinstance(record, Milestone):
                if record.kind == "training_on" and run_start is None:
                    mllog.end(constants.INIT_STOP)
                    mllog.start(constants.RUN_START)
                    run_start = time.time()
                elif record.kind == "epoch_begin" and record.epoch is not None:
                    epoch = record.epoch
                    mllog.start(constants.BLOCK_START, metadata={"first_epoch_num": epoch, "epoch_count": 1})
                elif record.kind == "validation_begin":
                    mllog.start(constants.EVAL_START, metadata={"epoch_num": epoch})
                elif record.kind == "epoch_end":
                    mllog.end(constants.BLOCK_STOP, metadata={"first_epoch_num": record.epoch})
            elif isinstance(record, TrainInner):
                mllog.tracked_stats(record.num_updates, loss=record.stats["loss"], wps=record.stats["wps"],
                                    epoch=record.epoch)
            elif isinstance(record, Summary) and record.kind == "valid" and "bleu" in record.stats:
                bleu = float(record.stats["bleu"])
                mllog.end(constants.EVAL_STOP, metadata={"epoch_num": record.epoch})
                mllog.event(constants.EVAL_ACCURACY, eval_accuracy(recipe, bleu), {"epoch_num": record.epoch})
                if reached_at is None and bleu >= target:
                    reached_at = time.time()
        returncode = proc.wait()
    return returncode, log, run_start, reached_at


@dataclass(frozen=True)
class Trained:
    """What timed_training saw of fairseq-train."""

    returncode: int
    log: TrainLog
    start: float
    """When the timed run started (MLPerf's run_start), or when fairseq was launched if it never got there."""
    reached_at: float | None


def timed_training(command: list[str], env: dict[str, str], out: Path, mllog: MLPerfLog, recipe: Recipe,
                   settings: launch.TrainSettings, *, global_batch: int, platform: str,
                   pairs: dict[str, int]) -> Trained:
    """fairseq-train inside an MLPerf log: the submission keys, init_start, the hyper-parameters, then
    train()'s events, then run_stop.

    Data preparation comes before and is neither timed nor initialisation (which MLPerf caps at 20
    minutes): init starts as fairseq is launched and stops, with run_start, once it has built the model.
    """
    mllog.submission(recipe.benchmark, platform=platform)
    mllog.start(constants.INIT_START)
    mllog.hyperparameters(recipe, global_batch=global_batch, update_freq=settings.update_freq, seed=settings.seed,
                          pairs=pairs)
    launched = time.time()
    returncode, log, run_start, reached_at = train(command, env, out, mllog, recipe, settings.target_bleu)
    # Time to train ends with training (MLPerf: at the epoch that reached the target); a test after it is
    # logged but not counted. No run_stop without a run_start: fairseq failed while initialising.
    if run_start is not None:
        succeeded = reached_at is not None and returncode == 0
        mllog.end(constants.RUN_STOP, metadata={"status": constants.SUCCESS if succeeded else constants.ABORTED})
    return Trained(returncode, log, run_start or launched, reached_at)


def plan_training(args: argparse.Namespace, checkpoints: Path) -> tuple[launch.Topology, launch.TrainSettings, list[str]]:
    """Where this host trains and the fairseq-train command it runs (the XLA test compares a TPU VM's with the
    one it ran on XLA's CPU device)."""
    recipe: Recipe = args.recipe
    accelerator, devices = detect_accelerator(args.accelerator)
    if accelerator not in recipe.accelerators:
        raise ValueError(f"--recipe {recipe.name} runs on {' or '.join(recipe.accelerators)}, not {accelerator}: "
                         f"run it on a host with one, or choose --recipe synthetic to try the workload on a CPU")
    precision = args.precision if args.precision != "auto" else {"gpu": "fp16", "tpu": "bf16", "cpu": "fp32"}[accelerator]
    topology = launch.topology_from_env(accelerator, devices, args.port)
    settings = launch.TrainSettings(
        precision=precision, max_tokens=args.max_tokens, update_freq=args.update_freq, max_epoch=args.max_epoch,
        max_update=args.max_update, target_bleu=args.target_bleu, log_interval=args.log_interval,
        num_workers=args.data_workers,
    )
    return topology, settings, launch.train_command(recipe, args.data_dir.resolve() / "bin", checkpoints, settings,
                                                    topology)


def run_settings(args: argparse.Namespace, topology: launch.Topology, settings: launch.TrainSettings, data_dir: Path,
                 prepared: dict | None) -> dict:
    """result.json's `settings` (results.run_settings); `prepared`: bin/prepared.json once the data is checked."""
    return results.run_settings(
        processes=topology.world_size, cpu_threads=args.cpu_threads if topology.accelerator == "cpu" else 0,
        accelerator=topology.accelerator, micro_batch=settings.max_tokens, micro_batch_unit="tokens",
        update_freq=settings.update_freq, data_name=data_dir.name, synthetic=args.recipe.name == "synthetic",
        train_examples=((prepared or {}).get("pairs") or {}).get("train"),
        data_sha256=results.prepared_digest(data_dir / "bin") if prepared else None)


def ensure_prepared(args: argparse.Namespace, data_dir: Path, env: dict[str, str], commands: dict[str, str]) -> None:
    """--prepare: prepare data_dir unless it already holds data prepared from the same inputs (a directory made
    with another --synthetic-pairs is made again); data of another recipe is refused (prepare.stale)."""
    why = prepare.stale(args.recipe, data_dir, prepare.inputs(args.recipe, args.synthetic_pairs))
    if why is None:
        return
    print(f"translation: preparing {data_dir}: {why}", flush=True)
    record = prepare.prepare(args.recipe, data_dir, synthetic_pairs=args.synthetic_pairs, mirror=args.mirror, env=env)
    commands["preprocess"] = record["preprocess"]


def run(args: argparse.Namespace) -> int:
    recipe: Recipe = args.recipe
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir: Path = args.data_dir.resolve()
    checkpoints = checkpoint_dir(args.checkpoint_dir, out)
    topology, settings, train_cmd = plan_training(args, checkpoints)
    accelerator, devices, precision = topology.accelerator, topology.devices_per_host, settings.precision
    check_resume(topology, checkpoints, shared=bool(args.checkpoint_dir))
    env = fairseq_env(args.cpu_threads if accelerator == "cpu" else 0)
    global_batch = launch.global_batch_tokens(settings, topology)
    worker0 = topology.worker_index == 0
    commands = {"run": shlex.join([sys.executable, *sys.argv]), "train": shlex.join(train_cmd)}
    summary = dict(recipe=recipe.name, benchmark=recipe.benchmark, model={"arch": recipe.arch}, accelerator=accelerator, chips=topology.world_size,
                   hosts=topology.num_workers, global_batch_tokens=global_batch, precision=precision,
                   command=commands["run"], commands=commands,
                   settings=run_settings(args, topology, settings, data_dir, prepared=None))
    print(f"translation: recipe {recipe.name} | {accelerator} x{devices} per host, {topology.num_workers} host(s), "
          f"worker {topology.worker_index} | {precision} | global batch <= {global_batch} tokens "
          f"({settings.max_tokens} x update-freq {settings.update_freq} x {topology.world_size} devices) | "
          f"target BLEU {settings.target_bleu} | max epoch {settings.max_epoch}", flush=True)

    if accelerator == "tpu" and (reason := xla_compat.unsupported_reason()):
        if worker0:
            results.write(out, results.build(**summary, log=TrainLog(), speed=None, eval_block=_eval_block(None, settings, recipe),
                                             time_to_target_s=None, train_time_s=None, error=f"unsupported: {reason}"))
        raise ValueError(f"--accelerator tpu: {reason}")

    if args.prepare:
        ensure_prepared(args, data_dir, env, commands)
    prepared = prepare.check_data_bin(recipe, data_dir)
    summary["settings"] = run_settings(args, topology, settings, data_dir, prepared=prepared)

    mllog = MLPerfLog(out, enabled=worker0)
    trained = timed_training(train_cmd, env, out, mllog, recipe, settings, global_batch=global_batch,
                             platform=f"{accelerator} x{topology.world_size}", pairs=prepared.get("pairs", {}))
    returncode, log, reached_at = trained.returncode, trained.log, trained.reached_at
    train_time = time.time() - trained.start
    time_to_target = reached_at - trained.start if reached_at else None
    if returncode != 0:
        mllog.close()
        if worker0:
            results.write(out, results.build(**summary, log=log, speed=throughput(log.inner),
                                             eval_block=_eval_block(None, settings, recipe), time_to_target_s=None,
                                             train_time_s=train_time, error=f"fairseq-train exited {returncode}"))
        print(f"error: fairseq-train exited {returncode}; its output is in {out / 'train.log'}", file=sys.stderr)
        return EXIT_FAILED
    if not worker0:
        return 0

    checkpoint = checkpoints / "checkpoint_last.pt"
    generate_cmd = evaluate.generate_command(recipe, data_dir / "bin", checkpoint, cpu=accelerator != "gpu",
                                             fp16=precision == "fp16", num_workers=args.data_workers)
    commands["generate"] = shlex.join(generate_cmd)
    last_epoch = log.train[-1].epoch if log.train else 0
    mllog.start(constants.EVAL_START, metadata={"epoch_num": last_epoch, "split": "test"})
    generated = subprocess.run(generate_cmd, capture_output=True, text=True, env=env)
    (out / "generate.log").write_text(generated.stdout + generated.stderr)
    if generated.returncode != 0:
        print(generated.stderr[-3000:], file=sys.stderr)
        mllog.close()
        print(f"error: fairseq-generate exited {generated.returncode}; see {out / 'generate.log'}", file=sys.stderr)
        return EXIT_FAILED
    references = (data_dir / "raw" / f"test.{recipe.target_lang}").read_text(encoding="utf-8").splitlines()
    test = evaluate.score(generated.stdout.splitlines(), references, recipe.bleu_args)
    mllog.end(constants.EVAL_STOP, metadata={"epoch_num": last_epoch, "split": "test"})
    mllog.event(constants.EVAL_ACCURACY, eval_accuracy(recipe, test.bleu), {"epoch_num": last_epoch, "split": "test"})
    mllog.close()

    result = results.build(
        **{**summary, "model": results.model_shape(checkpoint)}, log=log, speed=throughput(log.inner),
        eval_block=_eval_block(test, settings, recipe), time_to_target_s=time_to_target, train_time_s=train_time,
    )
    path = results.write(out, result)
    speed = result["words_per_s"]
    print(f"translation: test BLEU {test.bleu:.2f} ({test.signature}) | "
          f"words/s {speed if speed is None else round(speed, 1)} | "
          f"target {settings.target_bleu} {'reached' if reached_at else 'not reached'} | {path}", flush=True)
    return 0


def _eval_block(test: evaluate.TestScore | None, settings: launch.TrainSettings, recipe: Recipe) -> dict:
    return {
        "metric": "bleu", "value": test.bleu if test else None, "target": settings.target_bleu,
        "reached": test is not None and test.bleu >= settings.target_bleu,
        "split": "test", "signature": test.signature if test else None,
        # value and target are BLEU points; mlperf.log's eval_accuracy is in this unit (MLPerf's is a fraction).
        "mllog_unit": mllog_unit(recipe),
    }


def main(argv: list[str] | None = None) -> int:
    # M2M-100 generates rather than trains: its own flags and flow (m2m100.py), under the same command line.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe")
    if pre.parse_known_args(argv)[0].recipe == M2M100:
        import m2m100
        return m2m100.main(argv)
    args = parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as err:  # DataError is a ValueError; OSError: a download or a file
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
