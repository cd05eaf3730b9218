"""Preemption drill: a two-worker BERT run (bert-torch, DDP over gloo between two namespace SSH hosts) loses
a worker mid-run; `ernie run --resume RUN_ID` restarts every worker from the last checkpoint and finishes;
timeline.json and the report count the time the preemption cost.

The hosts are real SSH hosts (testing/sshhosts.py) with no network beyond their bridge: their python3 sees this
checkout's venv through PYTHONPATH (as a TPU VM's image carries its framework), so the workload's requirements
are already satisfied when the tpu-vm runner installs them into the run's venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
import time
from pathlib import Path

import pytest
from testing.sshhosts import UID, SshHosts, ssh_hosts_up

from ernie.results.index import ResultsIndex
from ernie.resume import Checkpoint, lost_since

SETS = ["preset=tiny", "text=stdlib", "seq_len=64", "max_predictions=10", "global_batch=16", "max_steps=24",
        "log_every=1", "eval_every=24", "checkpoint_every=8"]
CHECKPOINT = "step-00000008.pt"


def give_hosts_the_stack(hosts: SshHosts) -> None:
    """Every SSH session on the hosts (and so every worker) gets this venv's packages, gloo on the host's
    own interface, one thread per process (two processes share this machine's cores), and no hub access."""
    site_packages = sysconfig.get_paths()["purelib"]
    for host in hosts.hosts:
        env = host.home / ".ssh" / "environment"
        env.write_text(f"PATH={host.home / 'bin'}:/usr/local/bin:/usr/bin:/bin\nPYTHONPATH={site_packages}\n"
                       "GLOO_SOCKET_IFNAME=eth0\nOMP_NUM_THREADS=1\nHF_HUB_OFFLINE=1\n")
        os.chown(env, UID, UID)


def ernie(ernie_cmd: list[str], *args: str, timeout: float = 420) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ernie_cmd, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


def wait_for(condition, what: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    output = log.read_text()[-4000:] if log is not None and log.is_file() else ""
    ended = f"ernie run ended ({proc.returncode})" if proc is not None and proc.poll() is not None else "timed out"
    raise AssertionError(f"{ended} waiting for {what}:\n{output}")


def progress(stdout: Path) -> int:
    """The last step worker 0 has logged, reading whole lines only (the log is being written)."""
    text = stdout.read_text() if stdout.is_file() else ""
    whole = text[: text.rfind("\n") + 1]
    return max(tracked_steps(mllog_lines(whole)), default=0)


def mllog_lines(text: str) -> list[dict]:
    return [json.loads(line.split(":::MLLOG ", 1)[1]) for line in text.splitlines() if ":::MLLOG " in line]


def mllog(path: Path) -> list[dict]:
    return mllog_lines(path.read_text())


def tracked_steps(records: list[dict]) -> list[int]:
    return [r["metadata"]["step"] for r in records if r["key"] == "tracked_stats"]


@pytest.mark.timeout(1500)  # about 2 minutes alone; the machine is shared, and two trainings start twice
def test_a_preempted_worker_is_resumed_from_the_checkpoint_and_the_lost_time_is_reported(
        ernie_cmd: list[str], tmp_path: Path) -> None:
    results = tmp_path / "results"
    first_log = tmp_path / "first-attempt.log"
    with ssh_hosts_up(2) as hosts, first_log.open("w") as log:
        give_hosts_the_stack(hosts)
        inventory = str(hosts.inventory_path)
        first = subprocess.Popen(
            [*ernie_cmd, "run", "bert-torch", "--inventory", inventory, "--results", str(results),
             *(a for s in SETS for a in ("--set", s)), "--lost-after-seconds", "10", "--timeout-minutes", "8"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
        try:
            run_id = wait_for(lambda: next((p.parent.name for p in results.glob("*/run.json")), None),
                              "the run's record", 120, first, first_log)
            output = [h.home / "ernie" / "runs" / run_id / "output" for h in hosts.hosts]
            checkpoint = output[0] / "checkpoints" / CHECKPOINT
            # Preempt worker 1 after worker 0 saved step 8 and went on: steps 9.. are lost with it.
            wait_for(lambda: checkpoint.is_file() and progress(output[0] / "stdout.log") >= 10,
                     "the step-8 checkpoint and two more steps", 600, first, first_log)
            saved_at = checkpoint.stat().st_mtime
            hosts.kill(hosts[1])  # the VM is reclaimed: its sshd and every process on it die at once
            preempted_at = time.time()
            try:
                first.wait(timeout=300)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"the run did not end after its worker was preempted:\n"
                                     f"{first_log.read_text()[-4000:]}") from None
        finally:
            first.kill()
        first_out = first_log.read_text()
        assert first.returncode == 1, first_out
        manifest = json.loads((results / run_id / "manifest.json").read_text())
        assert manifest["hosts"]["w1"]["state"] == "missing", first_out
        assert manifest["hosts"]["w0"]["state"] != "complete" and not (output[0] / "result.json").exists()
        assert not (output[1] / "checkpoints").exists(), "only rank 0 writes checkpoints"
        assert sorted(p.name for p in (output[0] / "checkpoints").glob("*.pt")) == [CHECKPOINT]
        lost_steps = max(tracked_steps(mllog(results / run_id / "worker0.stream.log")))
        assert lost_steps >= 10

        hosts.start_sshd(hosts[1])  # the host is back, with its disk (`pulumi up` recreates a TPU VM the same way)
        resumed = ernie(ernie_cmd, "run", "--resume", run_id, "--results", str(results), "--lost-after-seconds", "30")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert f"resuming run {run_id} from w0's checkpoints/{CHECKPOINT}" in resumed.stdout

    manifest = json.loads((results / run_id / "manifest.json").read_text())
    assert {h: w["state"] for h, w in manifest["hosts"].items()} == {"w0": "complete", "w1": "complete"}
    # Worker 0's MLPerf log is one run: the first attempt's steps, then from the checkpoint to the end.
    log = mllog(results / run_id / "w0" / "mlperf.log")
    assert [r["key"] for r in log].count("run_start") == 1 and log[-1]["key"] == "run_stop"
    assert [r["value"] for r in log if r["key"] == "init_checkpoint_step"] == [8]
    steps = tracked_steps(log)
    restart = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
    assert steps[:restart] == list(range(1, restart + 1)) and restart >= 10
    assert steps[restart:] == list(range(9, 25)), "every worker continued at step 9 and ran to max_steps"
    assert json.loads((results / run_id / "w0" / "result.json").read_text())["steps"] == 24

    # The preemption in the timeline: from the checkpoint to the restart, recorded as the workers start again.
    timeline = json.loads((results / run_id / "timeline.json").read_text())["steps"]
    names = [st["name"] for st in timeline]
    assert names == ["wait_ssh", "push", "setup", "run", "collect",
                     "wait_ssh", "push", "setup", "preempted", "run", "collect"], names
    lost, second_run = timeline[8], timeline[9]
    assert lost["checkpoint"] == f"w0:checkpoints/{CHECKPOINT}"
    assert lost["start"] == pytest.approx(saved_at, abs=0.01)
    assert second_run["start"] <= lost["end"] <= second_run["end"]
    assert lost["duration_s"] == pytest.approx(lost["end"] - lost["start"], abs=0.01)
    assert lost["duration_s"] > preempted_at - saved_at  # the redone steps and the downtime
    assert all(st["ok"] for st in timeline)

    # The report shows it, and counts the run complete.
    report = ernie(ernie_cmd, "report", run_id, "--results", str(results), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stdout + report.stderr
    (summary,) = ResultsIndex(results).summaries([run_id])
    assert summary.status == "complete", summary.problems
    assert summary.lost_s == pytest.approx(lost["duration_s"], abs=0.01)
    md = (tmp_path / "report" / "report.md").read_text()
    header = next(line for line in md.splitlines() if "lost to preemption" in line)
    row = next(line for line in md.splitlines() if line.startswith(f"| {run_id}") and "min" in line
               and line.count("|") == header.count("|"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    column = [c.strip() for c in header.strip("|").split("|")].index("lost to preemption")
    seconds = summary.lost_s
    assert cells[column] == (f"{seconds / 60:.2f} min" if seconds >= 60 else f"{seconds:.1f} s")


ECHO = Path(__file__).parents[1] / "workloads" / "echo"


def test_a_run_that_finished_or_still_runs_everywhere_is_not_resumed(ernie_cmd: list[str], tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = ernie(ernie_cmd, "run", str(ECHO), "--local", "--results", str(results), "--set", "steps=2")
    assert done.returncode == 0, done.stdout + done.stderr
    (run_id,) = [p.name for p in results.iterdir()]
    timeline = (results / run_id / "timeline.json").read_text()
    refused = ernie(ernie_cmd, "run", "--resume", run_id, "--results", str(results))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"run {run_id} finished on every worker: nothing to resume" in " ".join(refused.stderr.split())
    assert (results / run_id / "timeline.json").read_text() == timeline, "nothing recorded, nothing restarted"

    busy_results = tmp_path / "busy"
    busy = subprocess.Popen([*ernie_cmd, "run", str(ECHO), "--local", "--results", str(busy_results),
                             "--set", "steps=200", "--set", "sleep=0.2"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        busy_id = wait_for(lambda: next((p.parent.name for p in busy_results.glob("*/run.json")), None),
                           "the run's record", 60)
        wait_for(lambda: any(st["name"] == "setup" for st in json.loads(
            (busy_results / busy_id / "timeline.json").read_text())["steps"])
                 if (busy_results / busy_id / "timeline.json").is_file() else False, "the workers to start", 60)
        time.sleep(1.0)
        refused = ernie(ernie_cmd, "run", "--resume", busy_id, "--results", str(busy_results))
        assert refused.returncode == 2
        assert "is still running on every worker: nothing to resume" in " ".join(refused.stderr.split())
    finally:
        ernie(ernie_cmd, "stop", "--results", str(busy_results))
        busy.wait(timeout=60)


@pytest.mark.parametrize(("args", "message"), [
    (["--resume", "20261128-000000-x-0000", "--set", "max_steps=80"],
     "--set max_steps=80: a resumed run keeps the parameters its checkpoints were made with"),
    (["bert-torch", "--resume", "20261128-000000-x-0000"], "restarts a recorded run with its own workload: drop "
                                                           "'bert-torch'"),
    (["--resume", "20261128-000000-x-0000"], "run 20261128-000000-x-0000: no"),
    ([], "name a WORKLOAD to run, or --resume RUN_ID"),
])
def test_resume_bad_input_is_one_clear_line(ernie_cmd: list[str], tmp_path: Path, args: list[str],
                                            message: str) -> None:
    result = ernie(ernie_cmd, "run", *args, "--results", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in " ".join(result.stderr.split())


def test_the_lost_time_starts_at_the_newest_checkpoint_of_the_interrupted_attempt() -> None:
    first = [{"name": "setup", "start": 90.0, "end": 99.0}, {"name": "run", "start": 100.0, "end": 140.0},
             {"name": "collect", "start": 140.0, "end": 145.0}]
    second = [*first, {"name": "setup", "start": 190.0, "end": 198.0},
              {"name": "preempted", "start": 120.0, "end": 200.0}, {"name": "run", "start": 199.5, "end": 260.0}]
    assert lost_since(first, Checkpoint("w0", "checkpoints/step-1.pt", 120.0)) == 120.0
    assert lost_since(first, None) == 100.0, "no checkpoint: the whole attempt is redone"
    # The second attempt made no checkpoint of its own: all of it is redone, from its restart.
    assert lost_since(second, Checkpoint("w0", "checkpoints/step-1.pt", 120.0)) == 200.0
    assert lost_since(second, Checkpoint("w0", "checkpoints/step-2.pt", 230.0)) == 230.0
    # ernie itself was stopped mid-run (the `run` step is recorded when it ends): from the restart.
    assert lost_since(second[:-1], None) == 200.0
    assert lost_since(first[:1], None) == 99.0
