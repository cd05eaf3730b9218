"""MLPerf BERT's recipe as the reference and the rules define it: the learning-rate schedule, the evaluation
cadence, the published recipes ernie can run, and whether a run conforms (its division).

Sources (read, not guessed):
- Schedule: mlcommons/training language_model/tensorflow/bert/optimization.py `create_optimizer`: polynomial
  decay from the base rate to 0 over `opt_learning_rate_training_steps`, and, while
  global_step - start_warmup_step < num_warmup_steps, the linear warm-up
  base * (global_step - start_warmup_step) / num_warmup_steps instead. global_step counts the updates
  already applied: the first update uses step 0.
- Evaluation: mlcommons/training_policies training_rules.adoc (BERT, last in v5.0): every
  eval_interval_samples = FLOOR(0.05 * (230.23 * GBS + 3000000), 25000) samples, skipping 0; target 0.720
  masked-LM accuracy on the 10,000-sample eval set; a result is the olympic mean of 10 runs.
- Log checks: mlperf-logging's compliance_checker training_5.0.0 (closed_bert.yaml), the last ruleset with BERT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

TARGET_ACCURACY = 0.720
EVAL_SET_SAMPLES = 10_000
REFERENCE_SEQ_LEN, REFERENCE_MAX_PREDICTIONS, REFERENCE_VOCAB = 512, 76, 30522
REFERENCE_PRESET = "large"
RUNS_PER_RESULT = 10
RULESET = "5.0.0"  # the last mlperf-logging training ruleset that checks BERT


def reference_lr(step: int, *, base_lr: float, total_steps: int, warmup_steps: int = 0,
                 start_warmup_step: int = 0, power: float = 1.0) -> float:
    """The learning rate of the update made at `step` (0-based), as the TF reference computes it."""
    decayed = base_lr * (1.0 - min(step, total_steps) / total_steps) ** power
    if warmup_steps:
        since = step - start_warmup_step
        if since < warmup_steps:
            return base_lr * since / warmup_steps
    return decayed


def eval_interval_samples(global_batch: int) -> int:
    """Samples between evaluations, as the rules fix it for a global batch size."""
    return int(math.floor(0.05 * (230.23 * global_batch + 3_000_000) / 25_000)) * 25_000


def eval_due(samples_before: int, samples_after: int, interval: int) -> bool:
    """Whether the step that took the run from `samples_before` to `samples_after` crossed an evaluation point
    (a positive multiple of `interval`)."""
    return samples_after // interval > samples_before // interval


# ---------------------------------------------------------------------------------------------- published recipes


@dataclass(frozen=True)
class Recipe:
    """The hyper-parameters of one published MLPerf BERT submission, with where they were published."""

    name: str
    system: str
    source: str
    global_batch: int
    lr: float
    max_steps: int  # opt_learning_rate_training_steps
    warmup_steps: int
    start_warmup_step: int
    beta1: float
    beta2: float
    weight_decay: float
    eps: float
    max_samples_termination: int
    optimizer: str = "lamb"
    preset: str = REFERENCE_PRESET
    target_accuracy: float = TARGET_ACCURACY

    def flags(self) -> dict[str, object]:
        """The recipe as recipe_args.py's flags (dest names)."""
        return {"preset": self.preset, "global_batch": self.global_batch, "lr": self.lr,
                "max_steps": self.max_steps, "warmup_steps": self.warmup_steps,
                "start_warmup_step": self.start_warmup_step, "beta1": self.beta1, "beta2": self.beta2,
                "weight_decay": self.weight_decay, "eps": self.eps, "optimizer": self.optimizer,
                "max_samples_termination": self.max_samples_termination, "target_accuracy": self.target_accuracy}


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            name="nvidia-dgxh100-8x8",
            system="8 x NVIDIA DGX H100 (64 H100 GPUs), PyTorch; MLPerf Training v3.1, NVIDIA, available on-premise",
            source="mlcommons/training_results_v3.1 NVIDIA/benchmarks/bert/implementations/v30-pytorch/"
                   "config_DGXH100_8x8x72x1.sh",
            global_batch=4608, lr=0.00258, max_steps=700, warmup_steps=200330, start_warmup_step=-200000,
            beta1=0.6, beta2=0.7, weight_decay=0.1, eps=1e-6, max_samples_termination=4_500_000,
        ),
        Recipe(
            name="google-tpu-v4-128",
            system="Cloud TPU v4-128 (64 chips), TensorFlow; MLPerf Training v1.0, Google",
            source="mlcommons/training_results_v1.0 Google/benchmarks/bert/implementations/tpu-v4-128-TF/"
                   "run_and_time.sh",
            global_batch=3072, lr=0.0015, max_steps=1141, warmup_steps=100, start_warmup_step=0,
            beta1=0.9, beta2=0.999, weight_decay=0.01, eps=1e-6, max_samples_termination=1141 * 3072,
        ),
    )
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}") from None


# ---------------------------------------------------------------------------------------------- conformance


@dataclass(frozen=True)
class RunFacts:
    """What a run used, as far as conformance goes."""

    data_format: str
    seq_len: int
    max_predictions: int
    eval_format: str | None  # None: the eval split of ernie's own data
    eval_samples: int
    init_checkpoint: bool
    preset: str
    vocab_size: int
    optimizer: str
    target_accuracy: float
    eval_interval_samples: int
    global_batch: int


@dataclass(frozen=True)
class Conformance:
    differences: tuple[str, ...] = field(default=())

    @property
    def division(self) -> str:
        """"closed" only when nothing differs from the reference; "open" otherwise."""
        return "closed" if not self.differences else "open"


def conformance(f: RunFacts) -> Conformance:
    """What differs between the run and MLPerf's closed BERT (data, checkpoint, eval set, model, recipe).

    The data are judged by what can be seen from inside the run: the reference's formats and shapes, and an
    eval set of exactly 10,000 samples; the shards' contents are not checksummed."""
    out = []
    if f.data_format not in ("hdf5", "tfrecord") or (f.seq_len, f.max_predictions) != (
            REFERENCE_SEQ_LEN, REFERENCE_MAX_PREDICTIONS):
        out.append(f"data: {f.data_format} at seq {f.seq_len} / {f.max_predictions} predictions, not the reference's "
                   f"Wikipedia 2020-01-01 shards (hdf5 or TFRecord, {REFERENCE_SEQ_LEN} / {REFERENCE_MAX_PREDICTIONS})")
    if f.eval_format is None or f.eval_samples != EVAL_SET_SAMPLES:
        what = "ernie's own held-out split" if f.eval_format is None else f"{f.eval_samples} samples"
        out.append(f"eval set: {what}, not the reference's {EVAL_SET_SAMPLES:,}-sample eval set")
    if not f.init_checkpoint:
        out.append("checkpoint: trained from random weights, not the phase-1 checkpoint model.ckpt-28252")
    if f.preset != REFERENCE_PRESET or f.vocab_size != REFERENCE_VOCAB:
        out.append(f"model: preset {f.preset} (vocab {f.vocab_size}), not BERT-large (vocab {REFERENCE_VOCAB})")
    if f.optimizer != "lamb":
        out.append(f"optimizer: {f.optimizer}, not LAMB")
    if f.target_accuracy != TARGET_ACCURACY:
        out.append(f"target: {f.target_accuracy} masked-LM accuracy, not {TARGET_ACCURACY}")
    if f.eval_interval_samples != eval_interval_samples(f.global_batch):
        out.append(f"eval cadence: every {f.eval_interval_samples} samples, not the rules' "
                   f"{eval_interval_samples(f.global_batch)} for a global batch of {f.global_batch}")
    return Conformance(tuple(out))


# ---------------------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Score:
    """Repeated runs of one configuration scored as the rules score them."""

    runs: int
    converged: int
    olympic_mean_s: float | None  # None: not a valid result (too few runs, or more than one failed)
    spread_s: tuple[float, float] | None  # fastest and slowest converged run
    why_invalid: str | None


def olympic_score(times_to_train_s: list[float | None], required_runs: int = RUNS_PER_RESULT) -> Score:
    """Drop the fastest and the slowest run and average the rest; a run that did not converge (None) counts
    as the slowest, and more than one such run makes the result invalid (training_rules.adoc, Scoring)."""
    converged = sorted(t for t in times_to_train_s if t is not None)
    failed = len(times_to_train_s) - len(converged)
    spread = (converged[0], converged[-1]) if converged else None
    why = None
    if len(times_to_train_s) < required_runs:
        why = f"{len(times_to_train_s)} run(s), the rules need {required_runs}"
    elif failed > 1:
        why = f"{failed} runs did not converge, the rules allow 1"
    if why:
        return Score(len(times_to_train_s), len(converged), None, spread, why)
    kept = (converged + [math.inf] * failed)[1:-1]
    return Score(len(times_to_train_s), len(converged), sum(kept) / len(kept), spread, None)
