"""ernie's BERT trainer vs Hugging Face `Trainer` on this machine's CPU: steady-state samples/s.

Same model (vocab 30522, hidden 256, 4 layers, 4 heads, intermediate 1024: the `mini` preset), same
sequences (seq 128, real text prepared by the workload's prep step), same global batch (32).

- Baseline: `transformers.Trainer` + `BertForPreTraining` + `DataCollatorForLanguageModeling`, Trainer's
  defaults on a CPU (fp32, eager), fed the same token sequences (unmasked: the collator masks 15% itself).
- ernie: `workloads/bert/train_torch.py`'s own training step (`build_training` + `train_step`, configured
  by its command-line flags, `--compile` by default): the MLM head only at the masked positions, bf16
  where the CPU has it natively (bf16 weights and activations, fp32 master weights; `--precision fp32`
  forces fp32), fused AdamW, cheap dropout masks (cpu_dropout.py), batches gathered from in-memory tensors.

Both run in one process, interleaved: after each Trainer step a callback runs ernie's steps, so load from
other jobs on a shared machine falls on both alike. A Trainer step is timed from the end of the ernie
steps before it to its own end (its data loading and collation included); ernie's steps are timed as
train_torch.py times them. Warm-up steps (ernie's compilation among them) are left out of both.

`--isa avx2` holds torch, oneDNN and MKL to AVX2 for both sides (benchmarks/machine.py), standing in for a
CPU without AVX-512 or native bf16: ernie's `auto` precision then resolves to fp32, as it would there.

The last two lines: the machine (CPU, features, precision), then
`speedup_vs_hf_trainer=<ratio> flop_ratio=<Trainer's model FLOPs per sample / ernie's> efficiency=<the rest>`:
flop_ratio is the part of the lead the gathered MLM head earns by computing less (flops.py), efficiency
= speedup / flop_ratio is what ernie gets out of each FLOP against the Trainer.

    python benchmarks/bert_torch_cpu.py [--precision auto|bf16|fp32] [--isa native|avx2] [--hf-steps 14]
        [--ernie-per-hf 2] [--ernie-flags "--compile"]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine

BERT_DIR = Path(__file__).resolve().parents[1] / "workloads" / "bert"
SEQ_LEN, MAX_PREDICTIONS, GLOBAL_BATCH, PRESET = 128, 20, 32, "mini"
HF_WARMUP, ERNIE_WARMUP = 3, 5


def prepare_data(root: Path) -> Path:
    """Real text through the workload's own prep: both sides read these sequences."""
    corpus, data_dir = root / "corpus.txt", root / "seq128"
    subprocess.run([sys.executable, "corpus.py", "--out", str(corpus)], cwd=BERT_DIR, check=True, capture_output=True)
    subprocess.run([sys.executable, "prep_data.py", "--input", str(corpus), "--out", str(data_dir),
                    "--seq-len", str(SEQ_LEN), "--max-predictions", str(MAX_PREDICTIONS)],
                   cwd=BERT_DIR, check=True, capture_output=True)
    return data_dir


# ---------------------------------------------------------------------------------------------- the two sides


def hf_trainer(data_dir: Path, out: Path, steps: int, callback):
    """Hugging Face's Trainer on the same sequences, `callback` (a TrainerCallback) attached."""
    import numpy as np
    import torch
    from transformers import (BertForPreTraining, BertTokenizerFast, DataCollatorForLanguageModeling, Trainer,
                              TrainingArguments)

    import data
    from presets import get_preset
    from torch_model import bert_config

    arrays = data.load_split(data_dir, "train")
    tokens = arrays["input_ids"].copy()  # put the original tokens back: the collator does its own masking
    rows, cols = np.nonzero(arrays["masked_lm_weights"])
    tokens[rows, arrays["masked_lm_positions"][rows, cols]] = arrays["masked_lm_ids"][rows, cols]

    class Sequences(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(tokens)

        def __getitem__(self, i: int) -> dict:
            return {"input_ids": tokens[i].tolist(), "token_type_ids": arrays["segment_ids"][i].tolist(),
                    "attention_mask": arrays["input_mask"][i].tolist(),
                    "next_sentence_label": int(arrays["next_sentence_labels"][i])}

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast(vocab_file=str(data.default_vocab_file()), do_lower_case=True)
    trainer = Trainer(
        model=BertForPreTraining(bert_config(get_preset(PRESET))),
        args=TrainingArguments(output_dir=str(out), per_device_train_batch_size=GLOBAL_BATCH, max_steps=steps,
                               learning_rate=1e-4, warmup_steps=1, save_strategy="no", logging_strategy="no",
                               report_to="none", disable_tqdm=True, use_cpu=True, dataloader_num_workers=0),
        train_dataset=Sequences(),
        data_collator=DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=0.15),
        callbacks=[callback],
    )
    return trainer


def ernie_trainer(data_dir: Path, out: Path, steps: int, extra_flags: list[str]):
    """train_torch.py's training state and step, configured by its own flags, and its example stream."""
    import data
    import train_torch

    args = train_torch.parse_args(["--preset", PRESET, "--data-dir", str(data_dir), "--out", str(out),
                                   "--global-batch", str(GLOBAL_BATCH), "--max-steps", str(steps), *extra_flags])
    launch = train_torch.init_launch()
    precision = train_torch.resolve_precision(args.precision, launch.device)
    training = train_torch.build_training(args, launch, precision)
    stream = train_torch.ExampleStream(data.load_split(data_dir, "train"), args.global_batch, args.seed, pin=False)
    return training, stream, precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf-steps", type=int, default=14, help=f"Trainer steps (the first {HF_WARMUP} are warm-up)")
    parser.add_argument("--ernie-per-hf", type=int, default=2, help="ernie steps run after each Trainer step")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                        help="ernie's (train_torch.py --precision); auto: bf16 where the CPU has it natively")
    parser.add_argument("--isa", default="native", choices=("native", "avx2"),
                        help="avx2: hold both sides to AVX2, standing in for a CPU without AVX-512 and native bf16")
    parser.add_argument("--ernie-flags", default="--compile", help="more train_torch.py flags ('' for eager)")
    args = parser.parse_args()
    if args.hf_steps < HF_WARMUP + 3:
        parser.error(f"--hf-steps must be at least {HF_WARMUP + 3}: {HF_WARMUP} warm-up steps, then a timed region")
    if args.ernie_per_hf < 1:
        parser.error("--ernie-per-hf must be at least 1")

    machine.cap_isa(None if args.isa == "native" else args.isa)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(BERT_DIR))  # workloads/bert ships alone, not a package: its modules import by bare name
    import torch
    from transformers import TrainerCallback

    import train_torch
    from flops import flops_per_sequence, full_head_flops_per_sequence
    from presets import get_preset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data_dir = prepare_data(root)
        ernie_steps = args.hf_steps * args.ernie_per_hf
        ernie_flags = ["--precision", args.precision, *shlex.split(args.ernie_flags)]
        training, stream, precision = ernie_trainer(data_dir, root / "ernie", ernie_steps, ernie_flags)
        hf_times: list[float] = []  # wall seconds per step
        ernie_times: list[float] = []
        hf_cpu: list[float] = []  # CPU seconds per step, all threads
        ernie_cpu: list[float] = []

        class Interleave(TrainerCallback):
            """At each Trainer step's end: time it, then run and time ernie's next steps."""

            def __init__(self) -> None:
                self.resumed_at: tuple[float, float] | None = None

            def on_step_end(self, args_, state, control, **kwargs):
                now = time.perf_counter(), time.process_time()
                if self.resumed_at is not None:
                    hf_times.append(now[0] - self.resumed_at[0])
                    hf_cpu.append(now[1] - self.resumed_at[1])
                for _ in range(args.ernie_per_hf):
                    t0, c0 = time.perf_counter(), time.process_time()
                    train_torch.train_step(training, stream, len(ernie_times))
                    ernie_times.append(time.perf_counter() - t0)
                    ernie_cpu.append(time.process_time() - c0)
                self.resumed_at = time.perf_counter(), time.process_time()

        hf_trainer(data_dir, root / "hf", args.hf_steps, Interleave()).train()

    # hf_times[0] is the Trainer's second step: its first has no start mark.
    hf_timed, ernie_timed = hf_times[HF_WARMUP - 1 :], ernie_times[ERNIE_WARMUP:]
    hf_rate = GLOBAL_BATCH * len(hf_timed) / sum(hf_timed)
    ernie_rate = GLOBAL_BATCH * len(ernie_timed) / sum(ernie_timed)
    preset = get_preset(PRESET)
    flop_ratio = full_head_flops_per_sequence(preset, SEQ_LEN) / flops_per_sequence(preset, SEQ_LEN, MAX_PREDICTIONS)
    speedup = ernie_rate / hf_rate
    print(f"hf_trainer: {hf_rate:.2f} samples/s over {len(hf_timed)} steps "
          f"(median {statistics.median(hf_timed) * 1e3:.0f} ms/step, fp32: Trainer's CPU default)")
    print(f"ernie: {ernie_rate:.2f} samples/s over {len(ernie_timed)} steps "
          f"(median {statistics.median(ernie_timed) * 1e3:.0f} ms/step, {precision}, flags {shlex.join(ernie_flags)}; "
          f"its {ERNIE_WARMUP} warm-up steps took {sum(ernie_times[:ERNIE_WARMUP]):.0f} s)")
    # With one thread a step's CPU time is its work, whatever else holds the cores; with more, it also
    # counts OpenMP threads spinning at barriers.
    cpu_ratio = statistics.median(hf_cpu[HF_WARMUP - 1 :]) / statistics.median(ernie_cpu[ERNIE_WARMUP:])
    print(f"cpu time: Trainer {statistics.median(hf_cpu[HF_WARMUP - 1 :]) * 1e3:.0f} ms/step, ernie "
          f"{statistics.median(ernie_cpu[ERNIE_WARMUP:]) * 1e3:.0f} ms/step (medians), ratio {cpu_ratio:.2f}")
    print(f"model {PRESET} (hidden 256, 4 layers, 4 heads, vocab 30522), seq {SEQ_LEN}, global batch {GLOBAL_BATCH}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(machine.describe(f"ernie {precision}, baseline fp32"))
    print(f"speedup_vs_hf_trainer={speedup:.2f} flop_ratio={flop_ratio:.2f} efficiency={speedup / flop_ratio:.2f}")


if __name__ == "__main__":
    main()
