"""bert-jax (workloads/bert/train_tf.py --backend jax): Keras on JAX, one program over every device of every worker.

Real training runs of the tiny preset on the data bert-jax's own command prepares (the standard library's
docstrings at seq 64, 10 predictions: the bytes every host makes for itself), shared by the tests:

- one process over 8 virtual CPU devices, killed after its first checkpoint and resumed to the end;
- two processes x 4 devices on this machine (jax.distributed over gloo), which must give the same losses;
- a simulated pod slice: two namespace SSH hosts (testing/sshhosts.py) x 4 devices, a v4-16's shape, started
  by `ernie run bert-jax`; a worker killed mid-run fails the run with that worker named, and
  `ernie run --resume` continues from worker 0's checkpoint to the same losses.

JAX's persistent compilation cache is shared by all of them, so later runs skip most of the compiling.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
from testing.sshhosts import UID, ssh_hosts_up
from test_bert_tf import REQUIRED_KEYS

BERT_DIR = Path(__file__).resolve().parents[2] / "workloads" / "bert"
PYTHON = sys.executable
SEQ_LEN, MAX_PREDICTIONS, GLOBAL_BATCH, STEPS = 64, 10, 16, 16
RUN_TIMEOUT_S = 600
LOSS_TOLERANCE = 1e-4  # the same program over the same global batch; only reduction order may differ
if str(BERT_DIR) not in sys.path:
    sys.path.insert(0, str(BERT_DIR))

import flops  # noqa: E402
import jax_placement  # noqa: E402
from cluster import Cluster, TpuVm  # noqa: E402
from presets import get_preset  # noqa: E402


TINY = get_preset("tiny")


def _mllog(text: str) -> list[dict]:
    return [json.loads(line.split(":::MLLOG ", 1)[1]) for line in text.splitlines() if ":::MLLOG " in line]


def _tracked(records: list[dict]) -> dict[int, dict]:
    """Per step, the last tracked figures logged (a resumed run's redone steps replace the lost ones)."""
    return {r["metadata"]["step"]: r["value"] for r in records if r["key"] == "tracked_stats"}


def _losses(records: list[dict]) -> list[float]:
    tracked = _tracked(records)
    assert sorted(tracked) == list(range(1, STEPS + 1)), f"tracked steps {sorted(tracked)}"
    return [tracked[s]["loss"] for s in range(1, STEPS + 1)]


def _train_jax(out: Path, data_dir: Path, *extra: str, cpu_devices: int = 8) -> list[str]:
    """The trainer's command line in these tests: bert-jax's flags at the tiny preset, every step tracked."""
    return [
        PYTHON, "train_tf.py", "--backend", "jax", "--cpu-devices", str(cpu_devices), "--preset", "tiny",
        "--data-dir", str(data_dir), "--out", str(out), "--global-batch", str(GLOBAL_BATCH), "--lr", "1e-3",
        "--max-steps", str(STEPS), "--log-every", "1", "--timing-warmup", "2",  # warm-up: the default, as bert-jax's
        "--eval-every", str(STEPS), *extra,
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(condition, what: str, timeout: float, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended ({proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def jax_env(tmp_path_factory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("jax-cache")
    cache.chmod(0o777)  # the SSH hosts' user shares it
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """The data bert-jax's command (run_tf.sh, data.sh) prepares on each host for text=stdlib, seq 64, P 10."""
    root = tmp_path_factory.mktemp("bert-jax-data")
    for cmd in (["corpus.py", "--out", str(root / "stdlib.txt")],
                ["prep_data.py", "--input", str(root / "stdlib.txt"), "--out", str(root / "stdlib-s64-p10"),
                 "--seq-len", str(SEQ_LEN), "--max-predictions", str(MAX_PREDICTIONS)]):
        subprocess.run([PYTHON, *cmd], cwd=BERT_DIR, check=True, capture_output=True, timeout=300)
    return root / "stdlib-s64-p10"


@pytest.fixture(scope="module")
def single(prepared, jax_env, tmp_path_factory) -> dict:
    """One process over 8 devices, checkpoints every 4 steps: SIGKILLed once the first exists, then --resume'd."""
    out = tmp_path_factory.mktemp("bert-jax-single")
    cmd = _train_jax(out, prepared, "--checkpoint-every", "4")
    first = subprocess.Popen(cmd, cwd=BERT_DIR, env=jax_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: list((out / "checkpoints").glob("step-*.npz")), "the first checkpoint", RUN_TIMEOUT_S, first)
    finally:
        first.kill()
    first_stdout = first.communicate(timeout=60)[0]
    (checkpoint,) = (out / "checkpoints").glob("step-*.npz")
    second = subprocess.run([*cmd, "--resume"], cwd=BERT_DIR, env=jax_env, capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_S)
    assert second.returncode == 0, f"the resumed run failed:\n{second.stdout[-3000:]}\n{second.stderr[-3000:]}"
    return {"out": out, "first_stdout": first_stdout, "second_stdout": second.stdout,
            "checkpoint_step": int(checkpoint.stem.split("-")[1]),
            "log": _mllog((out / "mlperf.log").read_text()), "result": json.loads((out / "result.json").read_text())}


@pytest.fixture(scope="module")
def two_processes(prepared, jax_env, tmp_path_factory) -> dict:
    """Two processes x 4 devices on this machine, as two workers: jax.distributed, gloo between them."""
    root, port = tmp_path_factory.mktemp("bert-jax-two"), _free_port()
    procs = []
    for worker in range(2):
        env = {**jax_env, "ERNIE_NUM_WORKERS": "2", "ERNIE_WORKER_INDEX": str(worker),
               "ERNIE_COORDINATOR_ADDRESS": "127.0.0.1"}
        cmd = _train_jax(root / f"worker{worker}", prepared, "--checkpoint-every", str(STEPS), "--port", str(port),
                         cpu_devices=4)
        procs.append(subprocess.Popen(cmd, cwd=BERT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    try:
        stdouts = [p.communicate(timeout=RUN_TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for worker, proc in enumerate(procs):
        assert proc.returncode == 0, f"worker {worker} failed:\n{stdouts[worker][-4000:]}"
    out = root / "worker0"
    return {"root": root, "stdouts": stdouts, "log": _mllog((out / "mlperf.log").read_text()),
            "result": json.loads((out / "result.json").read_text())}


# ---------------------------------------------------------------------------------------------- one process


def test_loss_falls_and_the_resumed_run_continues_at_its_checkpoint(single):
    losses = _losses(single["log"])
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.3, f"loss did not fall: {losses}"
    step = single["checkpoint_step"]
    killed_at = max(_tracked(_mllog(single["first_stdout"])))
    assert step == 4 and step <= killed_at < STEPS, f"checkpoint {step}, killed after step {killed_at}"
    second = _mllog(single["second_stdout"])
    assert [r["value"] for r in second if r["key"] == "init_checkpoint_step"] == [step]
    assert min(_tracked(second)) == step + 1 and max(_tracked(second)) == STEPS
    assert _tracked(second)[STEPS]["lr"] == pytest.approx(0.0, abs=1e-9), "the schedule resumed with the optimizer"
    assert f"resuming from {single['out'] / 'checkpoints' / 'step-00000004.npz'}" in single["second_stdout"]
    kept = sorted(p.name for p in (single["out"] / "checkpoints").iterdir())
    assert kept == ["step-00000012.npz", "step-00000016.npz"], "the last two checkpoints, nothing half-written"


def test_a_resumed_run_repeats_the_uninterrupted_losses(single, two_processes):
    """The first attempt's steps after the checkpoint were redone after the restart with the same results:
    the data order, the dropout seeds and the optimizer state all come back from (seed, step) and the file."""
    first = _tracked(_mllog(single["first_stdout"]))
    redone = _tracked(_mllog(single["second_stdout"]))
    for step in sorted(set(first) & set(redone)):
        assert redone[step]["loss"] == pytest.approx(first[step]["loss"], abs=LOSS_TOLERANCE), step
    assert _losses(single["log"]) == pytest.approx(_losses(two_processes["log"]), abs=LOSS_TOLERANCE)


def test_mlperf_log_and_result_json(single):
    log = single["log"]
    missing = REQUIRED_KEYS - {r["key"] for r in log}
    assert not missing, f"mlperf.log lacks {sorted(missing)}"
    assert [r["key"] for r in log].count("run_start") == 1 and log[-1]["key"] == "run_stop"
    check = subprocess.run(
        [PYTHON, "-m", "mlperf_logging.compliance_checker", "--usage", "training", "--ruleset", "4.1.0", "mlperf.log"],
        cwd=single["out"], capture_output=True, text=True, timeout=120,
    )
    assert check.returncode == 0 and "SUCCESS" in check.stdout + check.stderr, check.stdout + check.stderr
    result = single["result"]
    assert (result["workload"], result["framework"]) == ("bert-jax", "jax")
    assert (result["chips"], result["hosts"], result["steps"], result["accelerator"]) == (8, 1, STEPS, "cpu")
    assert result["mfu"] is None and result["precision"] == "fp32" and result["samples_per_s"] > 0
    assert result["versions"]["jax"] and result["versions"]["keras_hub"] and result["eval"]["value"] > 0
    times = np.loadtxt(single["out"] / "step_times.tsv")
    assert times.shape == (STEPS - single["checkpoint_step"], 2) and np.all(times[:, 1] <= times[:, 0])


# ---------------------------------------------------------------------------------------------- two workers


def test_two_workers_of_four_devices_train_as_one_process_of_eight(single, two_processes):
    stdouts = two_processes["stdouts"]
    assert "8 device(s) on 2 host(s) (4 each)" in stdouts[0] and f"= 8 x {GLOBAL_BATCH // 8};" in stdouts[0]
    result = two_processes["result"]
    assert (result["hosts"], result["chips"], result["steps"]) == (2, 8, STEPS)
    assert result["eval"]["value"] == pytest.approx(single["result"]["eval"]["value"], abs=1e-6)
    # Worker 1 trains in lockstep and writes nothing: no log, result or checkpoint of its own.
    assert ":::MLLOG" not in stdouts[1] and not (two_processes["root"] / "worker1").exists()


# ---------------------------------------------------------------------------------------------- parity


@pytest.fixture(scope="module")
def torch_first_loss(prepared, tmp_path_factory) -> float:
    out = tmp_path_factory.mktemp("bert-torch-run")
    proc = subprocess.run([
        PYTHON, "train_torch.py", "--preset", "tiny", "--data-dir", str(prepared), "--out", str(out),
        "--global-batch", str(GLOBAL_BATCH), "--max-steps", "2", "--lr", "1e-3", "--warmup-steps", "1",
        "--log-every", "1", "--eval-every", "2", "--checkpoint-every", "2", "--timing-warmup", "1",
    ], cwd=BERT_DIR, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return _tracked(_mllog(proc.stdout))[1]["loss"]


def test_parity_with_the_pytorch_workload(single, torch_first_loss):
    result = single["result"]
    assert result["model"]["params"] == flops.parameter_count(TINY) == 4_433_468
    assert result["flops_per_sample"] == flops.flops_per_sequence(TINY, SEQ_LEN, MAX_PREDICTIONS)
    expected = math.log(TINY.vocab_size) + math.log(2)  # untrained: ~uniform over the vocabulary and the two labels
    jax_first = _tracked(single["log"])[1]["loss"]
    assert jax_first == pytest.approx(expected, abs=0.4) and torch_first_loss == pytest.approx(expected, abs=0.4)
    assert jax_first == pytest.approx(torch_first_loss, abs=0.3)


SAME_POSITIONS = """
import json, os, sys
os.environ["KERAS_BACKEND"] = "jax"
import numpy as np, torch
import data
from keras_model import build_pretrainer, masked_lm_counts
from presets import get_preset
from torch_model import BertPretraining, bert_config
tiny = get_preset("tiny")
batch = {k: v[:16] for k, v in data.load_split(sys.argv[1], "train").items()}
features = ("input_ids", "segment_ids", "input_mask", "masked_lm_positions")
model = build_pretrainer(tiny, batch["input_ids"].shape[1], batch["masked_lm_ids"].shape[1])
outputs = model({k: batch[k] for k in features})
_, counted = masked_lm_counts(outputs, batch)
reference = BertPretraining(bert_config(tiny)).eval()
logits, _ = reference(*(torch.from_numpy(batch[k]) for k in features))
print(json.dumps({"jax_shape": list(outputs["mlm_logits"].shape), "torch_shape": list(logits.shape),
                  "counted": float(counted), "weights": float(batch["masked_lm_weights"].sum()),
                  "jax_params": model.count_params(), "torch_params": sum(p.numel() for p in reference.parameters())}))
"""


def test_both_models_score_the_same_masked_positions(prepared):
    """On one batch, the JAX model (in its own process: Keras picks its backend once) and the PyTorch one
    score the P masked positions of each sequence, and count the real ones, padding excluded."""
    proc = subprocess.run([PYTHON, "-c", SAME_POSITIONS, str(prepared)], cwd=BERT_DIR, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["jax_shape"] == seen["torch_shape"] == [16, MAX_PREDICTIONS, TINY.vocab_size]
    assert seen["counted"] == seen["weights"] > 16
    assert seen["jax_params"] == seen["torch_params"]


# ---------------------------------------------------------------------------------------------- bad input


def _fails(cmd: list[str], env: dict, timeout: float = 300) -> str:
    proc = subprocess.run(cmd, cwd=BERT_DIR, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return " ".join(proc.stderr.split())


def test_a_device_count_that_does_not_divide_the_global_batch_fails_before_training(prepared, jax_env, tmp_path):
    cmd = [*_train_jax(tmp_path, prepared, cpu_devices=8)]
    cmd[cmd.index("--global-batch") + 1] = "12"
    message = _fails(cmd, jax_env)
    assert "--global-batch 12 is not divisible by the 8 devices (1 worker(s) x 8)" in message
    assert not (tmp_path / "mlperf.log").exists()


def test_an_unreachable_coordinator_is_named_within_the_deadline(prepared, jax_env, tmp_path):
    env = {**jax_env, "ERNIE_NUM_WORKERS": "2", "ERNIE_WORKER_INDEX": "1", "ERNIE_COORDINATOR_ADDRESS": "127.0.0.1"}
    port = _free_port()  # nobody serves it
    started = time.monotonic()
    message = _fails(_train_jax(tmp_path, prepared, "--port", str(port), "--coordinator-timeout", "2", cpu_devices=4), env)
    assert time.monotonic() - started < 60
    assert (f"worker 1 could not reach the JAX coordinator at 127.0.0.1:{port} (ERNIE_COORDINATOR_ADDRESS and --port) "
            "within 2 s (--coordinator-timeout)") in message


def test_bad_flags_fail_before_anything_runs(prepared, tmp_path, capsys, monkeypatch):
    import importlib.util

    import train_tf

    def error(*argv: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            train_tf.parse_args(["--out", str(tmp_path), "--data-dir", str(prepared), *argv])
        assert exit_info.value.code == 2
        return " ".join(capsys.readouterr().err.split())

    assert "--cpu-devices 4 is for --backend jax" in error("--cpu-devices", "4")
    assert "--coordinator-timeout must be positive" in error("--backend", "jax", "--coordinator-timeout", "0")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real_find_spec(name, *a))
    assert ("--backend jax: jax is not installed here; install requirements-jax.txt (CPU/GPU hosts) or "
            "requirements-jax-tpu.txt (TPU VMs)") in error("--backend", "jax")


def test_placement_rules():
    env = {"ERNIE_NUM_WORKERS": "2", "ERNIE_WORKER_INDEX": "1", "ERNIE_COORDINATOR_ADDRESS": "10.0.0.2"}
    placed = jax_placement.plan(env, None, gpus=0, cpu_devices=4, port=8476)
    assert (placed.accelerator, placed.coordinator, placed.is_chief) == ("cpu", "10.0.0.2:8476", False)
    assert jax_placement.plan({**env, "ERNIE_COORDINATOR_ADDRESS": "fd00::2"}, None, 0, 1, 8476).coordinator == "[fd00::2]:8476"
    assert jax_placement.plan({}, None, 0, 1, 8476).coordinator is None
    # A TPU VM: every worker runs the program, and ernie's worker index must be the slice's WORKER_ID.
    pod = {"ERNIE_NUM_WORKERS": "4", "ERNIE_COORDINATOR_ADDRESS": "10.0.0.2"}
    tpu = jax_placement.plan({**pod, "ERNIE_WORKER_INDEX": "3"}, TpuVm("pod", "v4-32", 3, 4), 0, 1, 8476)
    assert tpu.accelerator == "tpu" and tpu.cluster == Cluster(3, 4, "10.0.0.2")
    with pytest.raises(ValueError, match="this TPU VM is worker 2 of a 4-host slice .* but ERNIE_WORKER_INDEX=3"):
        jax_placement.plan({**pod, "ERNIE_WORKER_INDEX": "3"}, TpuVm("pod", "v4-32", 2, 4), 0, 1, 8476)
    with pytest.raises(ValueError, match="--cpu-devices 4: this host has TPUs"):
        jax_placement.plan({}, TpuVm("one", "v5litepod-8", 0, 1), 0, 4, 8476)
    with pytest.raises(ValueError, match="ERNIE_WORKER_INDEX=2 must lie in 0..1"):
        jax_placement.plan({**env, "ERNIE_WORKER_INDEX": "2"}, None, 0, 1, 8476)
    # The virtual device count replaces any earlier one and keeps the user's other XLA flags.
    environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=2"}
    jax_placement.prepare_environment(placed, environ)
    assert environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=4"
    assert environ["JAX_PLATFORMS"] == "cpu"
    assert jax_placement.peer_named("UNAVAILABLE: task /job:jax_worker/replica:0/task:1 stopped heartbeating") == 1
    assert flops.peak_flops_for("TPU v6 lite") == 918e12 and flops.peak_flops_for("TPU v5 lite") == 197e12


# ---------------------------------------------------------------------------------------------- a simulated pod slice

SLICE_SETS = ["preset=tiny", "text=stdlib", f"seq_len={SEQ_LEN}", f"max_predictions={MAX_PREDICTIONS}",
              f"global_batch={GLOBAL_BATCH}", f"max_steps={STEPS}", "log_every=1", f"eval_every={STEPS}",
              "checkpoint_every=4", "cpu_devices=4", "lr=0.001"]


def _slice_hosts(hosts, cache: str, prepared: Path) -> None:
    """What a TPU VM pod slice's hosts have that namespace hosts lack: the framework installed (this venv's
    packages, as an image carries them), and a host name that resolves to the host's own address (gloo
    binds where it resolves; here every namespace shares this machine's name, which /etc/hosts maps to
    127.0.0.1). Each host's sshd restarts to see its own /etc/hosts.

    Each host also gets a copy of the prepared data (ERNIE_BERT_DATA), which data.sh then uses as it is: the
    hosts' venvs run the system's python3, whose standard library (corpus.py's text) may be another patch
    release than this venv's, so data they prepared could differ from the one-process run's."""
    site_packages = sysconfig.get_paths()["purelib"]
    for host in hosts.hosts:
        data_root = host.home / "bert-data"
        shutil.copytree(prepared, data_root / prepared.name)
        for path in (data_root, *data_root.rglob("*")):
            os.chown(path, UID, UID)
        env = host.home / ".ssh" / "environment"
        env.write_text(f"PATH={host.home / 'bin'}:/usr/local/bin:/usr/bin:/bin\nPYTHONPATH={site_packages}\n"
                       f"HF_HUB_OFFLINE=1\nTF_CPP_MIN_LOG_LEVEL=3\nJAX_COMPILATION_CACHE_DIR={cache}\n"
                       f"ERNIE_BERT_DATA={data_root}\n")
        os.chown(env, UID, UID)
        etc = Path("/etc/netns") / host.netns
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{host.address} {socket.gethostname()}\n")
        hosts.kill(host)
        hosts.start_sshd(host)


def _ernie(ernie_cmd: list[str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ernie_cmd, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.mark.timeout(1800)
def test_a_simulated_pod_slice_runs_through_ernie_run_and_resumes_after_a_killed_worker(
        ernie_cmd, single, prepared, jax_env, tmp_path):
    results = tmp_path / "results"
    log = tmp_path / "first-attempt.log"
    with ssh_hosts_up(2) as hosts:
        _slice_hosts(hosts, jax_env["JAX_COMPILATION_CACHE_DIR"], prepared)
        inventory = hosts.inventory()
        for host in inventory["hosts"]:
            host["chips"] = 4  # a v4-16: 2 workers x 4 chips
        inventory_path = hosts.write_inventory(tmp_path / "inventory.json", hosts=inventory["hosts"])
        with log.open("w") as out:
            first = subprocess.Popen(
                [*ernie_cmd, "run", "bert-jax", "--inventory", str(inventory_path), "--results", str(results),
                 *(a for s in SLICE_SETS for a in ("--set", s)), "--lost-after-seconds", "20", "--timeout-minutes", "12"],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
        try:
            run_id = _wait_for(lambda: next((p.parent.name for p in results.glob("*/run.json")), None),
                               "the run's record", 120, first)
            runs = [h.home / "ernie" / "runs" / run_id for h in hosts.hosts]
            checkpoint = runs[0] / "output" / "checkpoints" / "step-00000004.npz"
            _wait_for(checkpoint.is_file, "worker 0's step-4 checkpoint", RUN_TIMEOUT_S, first)
            os.killpg(int((runs[1] / "pid").read_text()), signal.SIGKILL)  # worker 1's process group: it is gone
            first.wait(timeout=300)
        finally:
            first.kill()
        first_out = " ".join(log.read_text().split())
        assert first.returncode == 1, first_out[-4000:]
        manifest = json.loads((results / run_id / "manifest.json").read_text())
        assert manifest["hosts"]["w1"]["state"] == "failed"
        assert manifest["hosts"]["w1"]["reason"] == "the process ended without an exit code (killed)"
        assert "w1 │ 1 │ failed │ - │" in first_out and "(killed)" in first_out, first_out[-3000:]
        assert manifest["hosts"]["w0"]["state"] == "failed", "worker 0 cannot go on without worker 1"
        assert not (runs[0] / "output" / "result.json").exists()
        assert not (runs[1] / "output" / "checkpoints").exists(), "only worker 0 writes checkpoints"

        resumed = _ernie(ernie_cmd, "run", "--resume", run_id, "--results", str(results), "--lost-after-seconds", "60")
        assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
        assert f"resuming run {run_id} from w0's checkpoints/step-0000000" in resumed.stdout

    manifest = json.loads((results / run_id / "manifest.json").read_text())
    assert {h: w["state"] for h, w in manifest["hosts"].items()} == {"w0": "complete", "w1": "complete"}
    log_records = _mllog((results / run_id / "w0" / "mlperf.log").read_text())
    assert len([r for r in log_records if r["key"] == "init_checkpoint_step"]) == 1
    result = json.loads((results / run_id / "w0" / "result.json").read_text())
    assert (result["workload"], result["hosts"], result["chips"], result["steps"]) == ("bert-jax", 2, 8, STEPS)
    # The slice trained the same program on the same data as one process over 8 devices did.
    assert _losses(log_records) == pytest.approx(_losses(single["log"]), abs=LOSS_TOLERANCE)
    assert result["eval"]["value"] == pytest.approx(single["result"]["eval"]["value"], abs=1e-6)


# ---------------------------------------------------------------------------------------------- the TPU VM side


# ernie check's framework/runtime rule is tested with the other stack checks (tests/integration/test_check.py).


def test_the_tpu_requirements_pin_jax_tpu_apart_from_the_cpu_ones():
    """bert-jax's setup installs the host-neutral pins; a TPU VM adds jax[tpu] at the same version (run_tf.sh)."""
    def pins(name: str) -> list[str]:
        lines = (BERT_DIR / name).read_text().splitlines()
        return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]

    cpu, tpu = pins("requirements-jax.txt"), pins("requirements-jax-tpu.txt")
    import importlib.metadata

    jax_pin = next(p for p in cpu if p.startswith("jax=="))
    assert jax_pin == f"jax=={importlib.metadata.version('jax')}", "the CPU pin is the version these tests ran"
    assert tpu == ["-r requirements-jax.txt", jax_pin.replace("jax==", "jax[tpu]==")]
    assert not any("tpu" in p for p in cpu)
    assert 'requirements = "requirements-jax.txt"' in (BERT_DIR / "jax.workload.toml").read_text()
    assert "requirements-jax-tpu.txt" in (BERT_DIR / "run_tf.sh").read_text()
