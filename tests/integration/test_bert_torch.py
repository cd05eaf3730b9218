"""The PyTorch BERT trainer (workloads/bert/train_torch.py), run as users run it: python, torchrun, the
workload's command. Tiny preset, seq 64, a few dozen steps on real text from the prep step."""

from __future__ import annotations

import importlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from testing.cpu_line import cpu_line

BERT_DIR = Path(__file__).resolve().parents[2] / "workloads" / "bert"
PYTHON = sys.executable
# One thread per process: the tests compare runs that must compute identically, on a shared machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
SEQ, PRED = 64, 10


def _siblings(*names: str):
    """Import workload modules as the trainer does (its directory on sys.path), without leaving them in
    sys.modules, where another workload's module of the same name (results, mlperf) may live."""
    stems = {p.stem for p in BERT_DIR.glob("*.py")}
    saved = {n: sys.modules.pop(n) for n in stems if n in sys.modules}
    sys.path.insert(0, str(BERT_DIR))
    try:
        return [importlib.import_module(n) for n in names]
    finally:
        sys.path.remove(str(BERT_DIR))
        for n in stems:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def real_data(tmp_path_factory) -> Path:
    """Real English text prepared by the workload's own prep step (corpus.py + prep_data.py)."""
    root = tmp_path_factory.mktemp("bert-data")
    subprocess.run([PYTHON, "corpus.py", "--out", str(root / "corpus.txt"), "--max-documents", "120"],
                   cwd=BERT_DIR, env=ENV, check=True, capture_output=True)
    subprocess.run([PYTHON, "prep_data.py", "--input", str(root / "corpus.txt"), "--out", str(root / "seq64"),
                    "--seq-len", str(SEQ), "--max-predictions", str(PRED)],
                   cwd=BERT_DIR, env=ENV, check=True, capture_output=True)
    return root / "seq64"


def _run_launcher(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run for a launcher (torchrun, run_torch.sh): on a timeout, SIGTERM it first so it ends
    its workers (torchrun starts them in sessions of their own), then kill what is left of its group; a hung
    run then fails this test without leaving training processes behind."""
    with subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.communicate(timeout=30)
            finally:
                os.killpg(proc.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _train(out: Path, data_dir: Path, *flags: str, nproc: int = 0, check: bool = True) -> subprocess.CompletedProcess:
    """train_torch.py under python (nproc 0) or torchrun with `nproc` processes."""
    launcher = [PYTHON, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc else [PYTHON]
    cmd = [*launcher, "train_torch.py", "--preset", "tiny", "--data-dir", str(data_dir), "--out", str(out), *flags]
    proc = _run_launcher(cmd, timeout=600, cwd=BERT_DIR, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _mllog(text: str) -> list[dict]:
    return [json.loads(line.split(":::MLLOG ", 1)[1]) for line in text.splitlines() if ":::MLLOG " in line]


def _losses(records: list[dict]) -> dict[int, float]:
    return {r["metadata"]["step"]: r["value"]["loss"] for r in records if r["key"] == "tracked_stats"}


# ---------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny_run(real_data, tmp_path_factory):
    """One plain run, shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("tiny-run")
    start = time.time()
    proc = _train(out, real_data, "--max-steps", "30", "--global-batch", "16", "--lr", "2e-3", "--warmup-steps", "2",
                  "--log-every", "1", "--eval-every", "15", "--eval-samples", "32", "--timing-warmup", "3")
    return out, proc, time.time() - start


def test_tiny_preset_loss_falls_on_real_text(tiny_run):
    out, proc, _ = tiny_run
    losses = _losses(_mllog(proc.stdout))
    assert sorted(losses) == list(range(1, 31))
    first, last = np.mean([losses[s] for s in (1, 2, 3)]), np.mean([losses[s] for s in (28, 29, 30)])
    assert first > 10.0, "an untrained model is near ln(30522) + ln(2)"
    result = json.loads((out / "result.json").read_text())
    # --precision auto: bf16 where the CPU has avx512_bf16 or amx, fp32 elsewhere; the bound holds for both.
    assert last < first - 2.0, f"loss fell only from {first:.2f} to {last:.2f} ({result['precision']} on {cpu_line()})"
    assert result["precision"] in ("bf16", "fp32"), result["precision"]
    flops = _siblings("flops")[0]
    presets = _siblings("presets")[0]
    assert result["model"]["params"] == flops.parameter_count(presets.get_preset("tiny")), "tied decoder counted once"
    assert (result["workload"], result["framework"], result["steps"], result["timed_steps"]) == ("bert-torch", "pytorch", 30, 27)
    assert (result["global_batch_size"], result["seq_len"], result["max_predictions"]) == (16, SEQ, PRED)
    assert result["samples_per_s"] > 0 and result["tokens_per_s"] == pytest.approx(result["samples_per_s"] * SEQ, rel=1e-3)
    assert result["mfu"] is None and result["peak_flops_per_device"] is None, "no known peak for a CPU: never invented"
    assert 0.0 <= result["eval"]["value"] < 0.72 and result["eval"]["reached"] is False
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["step-00000030.pt"]


def test_mlperf_log_parses_and_has_the_required_keys(tiny_run):
    out, proc, _ = tiny_run
    from mlperf_logging.compliance_checker.mlp_parser import parse_file

    parsed, errors = parse_file(str(out / "mlperf.log"), ruleset="4.1.0")
    assert not errors and parsed
    keys = [p.key for p in parsed]
    for key in ("submission_benchmark", "submission_division", "submission_org", "submission_platform",
                "cache_clear", "init_start", "init_stop", "run_start", "run_stop", "block_start", "block_stop",
                "eval_start", "eval_stop", "eval_accuracy", "global_batch_size", "gradient_accumulation_steps",
                "train_samples", "eval_samples", "opt_base_learning_rate", "opt_learning_rate_warmup_steps",
                "opt_learning_rate_training_steps", "opt_adamw_beta_1", "opt_adamw_weight_decay", "max_sequence_length"):
        assert key in keys, key
    evals = [p.value for p in parsed if p.key == "eval_accuracy"]
    assert [e["metadata"]["epoch_num"] for e in evals] == [15 * 16, 30 * 16]
    stop = [p.value for p in parsed if p.key == "run_stop"][0]
    assert stop["metadata"]["status"] == "aborted", "the target was not reached"
    # mlperf-logging's own compliance checker accepts the log (open division rules).
    check = subprocess.run([PYTHON, "-m", "mlperf_logging.compliance_checker", "--usage", "training", "--ruleset",
                            "4.1.0", str(out / "mlperf.log")], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0 and "SUCCESS" in check.stdout + check.stderr, check.stdout + check.stderr
    # The log on disk is what rank 0 printed: ernie streams progress from stdout.
    assert _mllog((out / "mlperf.log").read_text()) == _mllog(proc.stdout)


def test_time_to_train_from_the_log_matches_the_wall_clock(tiny_run):
    out, _, wall = tiny_run
    records = _mllog((out / "mlperf.log").read_text())
    times = {r["key"]: r["time_ms"] for r in records if r["key"] in ("init_start", "run_start", "run_stop")}
    time_to_train = (times["run_stop"] - times["run_start"]) / 1000
    result = json.loads((out / "result.json").read_text())
    assert time_to_train == pytest.approx(result["train_time_s"], abs=0.05)
    assert time_to_train <= wall
    assert wall - time_to_train < 60, "only start-up (imports, data loading) lies outside the run interval"
    step_time = sum(1 for r in records if r["key"] == "tracked_stats") * result["step_time_ms_p50"] / 1000
    assert time_to_train >= 0.5 * step_time, "the run interval holds the steps"


def test_two_gloo_processes_match_one_with_accumulation(real_data, tmp_path):
    """Same global batch of 8: 2 processes x micro-batch 4 (DDP over gloo) vs 1 process x 4 x 2 accumulation."""
    flags = ("--max-steps", "6", "--global-batch", "8", "--micro-batch", "4", "--lr", "2e-3", "--warmup-steps", "1",
             "--log-every", "1", "--eval-every", "6", "--eval-samples", "16", "--dropout", "0", "--precision", "fp32")
    two = _train(tmp_path / "two", real_data, *flags, nproc=2)
    one = _train(tmp_path / "one", real_data, *flags)
    two_losses, one_losses = _losses(_mllog(two.stdout)), _losses(_mllog(one.stdout))
    assert sorted(two_losses) == sorted(one_losses) == list(range(1, 7))
    # fp32 with a different reduction order (gloo all-reduce vs local accumulation): equal to ~1e-6;
    # 1e-4 relative is far below the step-to-step change of the loss (about 1e-1 here).
    for step in one_losses:
        assert two_losses[step] == pytest.approx(one_losses[step], rel=1e-4), step
    assert abs(one_losses[6] - one_losses[1]) > 0.1, "the comparison must span real training"
    two_result = json.loads((tmp_path / "two" / "result.json").read_text())
    one_records = _mllog((tmp_path / "one" / "mlperf.log").read_text())
    assert two_result["chips"] == 2 and not (tmp_path / "two" / "result.json.tmp").exists()
    assert [r["value"] for r in one_records if r["key"] == "gradient_accumulation_steps"] == [2]


def test_killed_run_resumes_at_the_right_step_with_the_same_data(real_data, tmp_path):
    """A run killed after its step-4 checkpoint continues, with --resume, exactly where an uninterrupted run goes."""
    flags = ["--max-steps", "10", "--global-batch", "8", "--optimizer", "lamb", "--lr", "5e-3", "--warmup-steps", "2",
             "--log-every", "1", "--eval-every", "10", "--eval-samples", "16", "--checkpoint-every", "4"]
    reference = _losses(_mllog(_train(tmp_path / "reference", real_data, *flags).stdout))

    out = tmp_path / "preempted"
    cmd = [PYTHON, "train_torch.py", "--preset", "tiny", "--data-dir", str(real_data), "--out", str(out), *flags]
    victim = subprocess.Popen(cmd, cwd=BERT_DIR, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, start_new_session=True)
    seen: dict[int, float] = {}
    try:
        for line in victim.stdout:
            seen.update(_losses(_mllog(line)))
            if max(seen, default=0) >= 6:  # the step-4 checkpoint is on disk, step 8's is not
                os.killpg(victim.pid, signal.SIGKILL)
                break
    finally:
        victim.kill()
        victim.wait(timeout=60)
    assert max(seen) == 6 and not (out / "result.json").exists()
    assert [p.name for p in sorted((out / "checkpoints").glob("*.pt"))] == ["step-00000004.pt"]

    resumed = _train(out, real_data, *flags, "--resume")
    assert "resuming from" in resumed.stdout
    records = _mllog(resumed.stdout)
    assert [r["value"] for r in records if r["key"] == "init_checkpoint_step"] == [4]
    losses = _losses(records)
    assert sorted(losses) == list(range(5, 11)), "continues at step 5, runs to --max-steps"
    for step in losses:  # the same weights, optimizer state, data and dropout as the uninterrupted run
        assert losses[step] == pytest.approx(reference[step], rel=1e-5), step
    for step in (5, 6):
        assert seen[step] == pytest.approx(reference[step], rel=1e-5)
    log = _mllog((out / "mlperf.log").read_text())
    assert [r["key"] for r in log].count("run_start") == 1 and log[-1]["key"] == "run_stop", "one run, appended"
    assert json.loads((out / "result.json").read_text())["steps"] == 10
    # Resuming a finished run is refused before any work, rather than timing no step and failing in the summary.
    again = _train(out, real_data, *flags, "--resume", check=False)
    assert again.returncode != 0 and "train_torch.py: error: --resume: " in again.stderr
    assert "step-00000010.pt already holds all 10 steps" in again.stderr


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        (["--preset", "huge"], {}, "--preset: unknown preset 'huge': choose one of tiny, mini, base, large"),
        (["--seq-len", "600"], {}, "--seq-len 600 exceeds preset tiny's 512 position embeddings"),
        (["--seq-len", "128"], {}, "--seq-len 128 differs from the data's 64"),
        (["--global-batch", "10", "--micro-batch", "4"], {},
         "--global-batch 10 is not divisible by processes x --micro-batch (1 x 4)"),
        (["--global-batch", "12", "--micro-batch", "4"], {"WORLD_SIZE": "2"},
         "--global-batch 12 is not divisible by processes x --micro-batch (2 x 4)"),
        (["--global-batch", "9"], {"WORLD_SIZE": "2"}, "--global-batch 9 is not divisible by the 2 processes"),
        (["--max-steps", "0"], {}, "--max-steps must be at least 1"),
        (["--warmup-steps", "50", "--max-steps", "10"], {}, "--warmup-steps must be in 0..9"),
    ],
)
def test_bad_arguments_are_named(real_data, flags, env, message, monkeypatch, capsys):
    (train_torch,) = _siblings("train_torch")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as exit_info:
        train_torch.parse_args(["--data-dir", str(real_data), "--out", "unused", *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_arguments_fail_before_any_training(real_data, tmp_path):
    missing = _train(tmp_path / "out", tmp_path / "no-such-data", "--max-steps", "5", check=False)
    assert missing.returncode == 2
    assert "--data-dir: data dir" in missing.stderr and "prep_data.py" in missing.stderr
    bad_batch = _train(tmp_path / "out", real_data, "--global-batch", "8", "--micro-batch", "3", check=False)
    assert bad_batch.returncode == 2
    assert "--global-batch 8 is not divisible by processes x --micro-batch (1 x 3)" in bad_batch.stderr
    assert not (tmp_path / "out").exists(), "nothing was written: no log, no checkpoint"
    assert "Traceback" not in missing.stderr


# ---------------------------------------------------------------------------------------------- parts


def test_lamb_step_matches_its_formula():
    import torch

    (lamb,) = _siblings("lamb")
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3))
    opt = lamb.Lamb([p], lr=0.1, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.01)
    w, m, v = p.detach().clone().double(), torch.zeros(4, 3).double(), torch.zeros(4, 3).double()
    for t in (1, 2, 3):
        g = torch.randn(4, 3)
        p.grad = g.clone()
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        u = (m / (1 - 0.9**t)) / ((v / (1 - 0.99**t)).sqrt() + 1e-6) + 0.01 * w
        w = w - 0.1 * (w.norm() / u.norm()) * u
        torch.testing.assert_close(p.detach().double(), w, rtol=1e-5, atol=1e-6)


def test_mlm_head_sees_only_the_masked_positions():
    """The MLM logits depend on the encoder output at masked_lm_positions and nowhere else."""
    import torch

    presets, torch_model = _siblings("presets", "torch_model")
    torch.manual_seed(0)
    model = torch_model.BertPretraining(torch_model.bert_config(presets.get_preset("tiny"), dropout=0.0)).eval()
    assert model.bert.config._attn_implementation == "sdpa"
    assert model.bert.embeddings.word_embeddings.weight.data_ptr() == next(
        p for n, p in model.named_parameters() if n == "bert.embeddings.word_embeddings.weight").data_ptr()
    ids = torch.randint(1000, 30000, (2, 16))
    seg, mask = torch.zeros_like(ids), torch.ones_like(ids)
    positions = torch.tensor([[1, 5, 0], [2, 3, 0]])
    mlm, nsp = model(ids, seg, mask, positions)
    assert mlm.shape == (2, 3, 30522) and nsp.shape == (2, 2)
    hidden = model.bert(input_ids=ids, token_type_ids=seg, attention_mask=mask).last_hidden_state
    expected = model.mlm_transform(hidden[0, 5]) @ model.bert.embeddings.word_embeddings.weight.T + model.mlm_bias
    torch.testing.assert_close(mlm[0, 1], expected)


# ---------------------------------------------------------------------------------------------- the workload


def test_workload_command_prepares_data_and_trains(tmp_path):
    """torch.workload.toml's command, rendered as ernie renders it (shell-quoted params), in ernie's environment."""
    spec = tomllib.loads((BERT_DIR / "torch.workload.toml").read_text())
    assert spec["name"] == "bert-torch" and spec["progress"]["total"] == "{max_steps}"
    params = {**spec["params"], "max_steps": 4, "seq_len": SEQ, "max_predictions": PRED, "global_batch": 8,
              "eval_every": 4, "log_every": 2, "checkpoint_every": 4}
    command = spec["command"].format(**{k: shlex.quote(str(v)) for k, v in params.items()})
    out = tmp_path / "out"
    out.mkdir()
    env = {**ENV, "ERNIE_OUTPUT_DIR": str(out), "ERNIE_WORKER_INDEX": "0", "ERNIE_NUM_WORKERS": "1",
           "ERNIE_COORDINATOR_ADDRESS": "127.0.0.1", "ERNIE_RUN_ID": "test", "ERNIE_BERT_DATA": str(tmp_path / "data"),
           "PYTHON": PYTHON}
    proc = _run_launcher(["bash", "-c", command], timeout=600, cwd=BERT_DIR, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "data" / f"stdlib-s{SEQ}-p{PRED}" / "meta.json").is_file(), "the data was prepared on the host"
    assert sorted(_losses(_mllog(proc.stdout))) == [2, 4], "progress streams as tracked_stats on stdout"
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 4 and "train_torch.py" in result["command"]
