"""fairseq's TPU path executed: run.py --accelerator tpu in .venv-xla (torch 2.9.0 + torch_xla 2.9.0, `make xla-env`;
`make test` builds it) on XLA's CPU device (PJRT_DEVICE=CPU), through xla_compat.py. The synthetic recipe trains a
few steps with the loss falling, and the fairseq-train command it ran is the one run.py composes on a TPU VM."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from test_translation_units import _import_workload

ROOT = Path(__file__).resolve().parents[2]
WORKLOAD = ROOT / "workloads" / "translation"
XLA_PYTHON = ROOT / ".venv-xla" / "bin" / "python"
run, launch = _import_workload("run", "launch")


def _argv(data_dir: Path, out: Path) -> list[str]:
    # The TPU defaults (bf16, the recipe's batch); 100 pairs make two batches an epoch, so four epochs in 8 updates.
    return ["--recipe", "synthetic", "--data-dir", str(data_dir), "--accelerator", "tpu", "--max-update", "8",
            "--max-epoch", "5", "--log-interval", "1", "--target-bleu", "99", "--out", str(out)]


@pytest.fixture(scope="module")
def xla_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    assert XLA_PYTHON.is_file(), f"{XLA_PYTHON} is missing: run `make xla-env` (make test does)"
    base = tmp_path_factory.mktemp("xla")
    data_dir, out = base / "synthetic", base / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ERNIE_", "TPU_", "XLA_"))}
    env.update(PJRT_DEVICE="CPU", CPU_NUM_DEVICES="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([str(XLA_PYTHON), "run.py", *_argv(data_dir, out), "--prepare", "--synthetic-pairs", "100"],
                          cwd=WORKLOAD, capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return data_dir, out, proc


def test_fairseq_trains_on_the_xla_device_with_loss_falling(xla_run: tuple[Path, Path, subprocess.CompletedProcess]) -> None:
    _, out, _ = xla_run
    result = json.loads((out / "result.json").read_text())
    assert result["error"] is None and result["accelerator"] == "tpu" and result["precision"] == "bf16"
    assert result["versions"]["torch_xla"] == "2.9.0" and result["versions"]["torch"].startswith("2.9.0")
    assert result["steps"] == 8
    losses = [e["loss"] for e in result["train_loss_per_epoch"]]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.8, losses
    train_log = (out / "train.log").read_text()
    # fairseq's own lines reached run.py (torch_xla's root log handler taken off), on the XLA device, through the
    # compatibility layer, and validation BLEU was scored every epoch (decoded on the host).
    assert "torch_xla compatibility: " in train_log and "xla_model.xrt_world_size = runtime.world_size" in train_log
    assert "XLA compilation detected on device #0" in train_log
    assert train_log.count(" | valid | epoch ") == 4 and " | bleu " in train_log
    assert (out / "checkpoints" / "checkpoint_last.pt").is_file()


def test_the_command_it_ran_is_a_tpu_vms(xla_run: tuple[Path, Path, subprocess.CompletedProcess],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir, out, _ = xla_run
    ran = shlex.split(json.loads((out / "result.json").read_text())["commands"]["train"])
    assert ran[0] == str(XLA_PYTHON) and "--tpu" in ran and "--bf16" in ran
    # On a TPU VM: no PJRT_DEVICE=CPU; TPU_NUM_DEVICES chips per host (run.detect_accelerator).
    for name in ("PJRT_DEVICE", "CPU_NUM_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    args = run.parse_args(_argv(data_dir, out))
    checkpoints = run.checkpoint_dir(args.checkpoint_dir, out.resolve())
    monkeypatch.setenv("TPU_NUM_DEVICES", "1")  # a one-chip VM (v5litepod-1, v6e-1): the same command
    _, _, one_chip = run.plan_training(args, checkpoints)
    assert one_chip[1:] == ran[1:]
    monkeypatch.delenv("TPU_NUM_DEVICES")  # v4/v5p: four chips, one world of four PJRT processes
    topology, _, four_chips = run.plan_training(args, checkpoints)
    at = ran.index("--bf16") + 1  # launch.train_command: the distributed flags follow the precision's
    assert topology.world_size == 4 and four_chips[1:] == ran[1:at] + ["--distributed-world-size", "4"] + ran[at:]
