"""`ernie compare PLAN` end to end: the stand-in Pulumi CLI of tests/integration/test_bench.py, a namespace SSH host per cell.

A wrapper in front of the stand-in answers `stack ls` / `stack init` (remembering the stacks made) and gives each
stack its own inventory: the cell's one namespace host, described as the cloud's stack would describe it. The
third cell runs on an inventory file (hosts made elsewhere: no stack). The workload is tests/workloads/trainer, a
stand-in trainer whose throughput the plan sets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from testing.sshhosts import SshHosts
from test_bench import calls, pulumi_env

from ernie.results import read_run, summarize

TRAINER = Path(__file__).parents[1] / "workloads" / "trainer"

WRAPPER = """#!{python}
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
made = Path(os.environ["FAKE_PULUMI_STACKS"])
known = json.loads(made.read_text()) if made.exists() else []
if args[:2] == ["stack", "ls"]:
    print(json.dumps([{{"name": n}} for n in known]), flush=True)
if args[:2] == ["stack", "init"]:
    made.write_text(json.dumps(known + [args[2]]))
if "-s" in args:
    inventory = Path(os.environ["FAKE_PULUMI_INVENTORIES"]) / (args[args.index("-s") + 1] + ".json")
    os.environ["FAKE_PULUMI_INVENTORY"] = str(inventory)
os.execv({standin!r}, [{standin!r}, *args])
"""

PLAN = """
name = "t"
[base]
gcp = "gcp"
aws = "aws"
[workload]
name = "{trainer}"
flops_per_sample = 5e8
[workload.params]
global_batch = 8
max_steps = {steps}
[[cells]]
name = "tpu"
cloud = "gcp"
stack = {{ "ernie:tpuType" = "v4-8", "ernie:runtimeVersion" = "tpu-ubuntu2204-base" }}
peak_tflops = 0.05
params = {{ samples_per_s = {tpu_rate} }}
[[cells]]
name = "gpu"
cloud = "aws"
peak_tflops = 0.05
params = {{ samples_per_s = {gpu_rate}, fail = {gpu_fails} }}
[[cells]]
name = "here"
inventory = "here.json"
peak_tflops = 0.05
params = {{ samples_per_s = {here_rate} }}
"""
STACKS = {"t-tpu": ("gcp", "v4-8", 4, 12.88, 0), "t-gpu": ("aws", "g5.xlarge", 1, 1.03, 1)}


def one_host(hosts: SshHosts, index: int, cloud: str, accelerator: str, chips: int, price: float, stack: str) -> dict:
    inv = hosts.inventory(cloud=cloud, stack=stack, price_per_hour_usd=price, ttl_minutes=60,
                          price_source="as the stack would say")
    inv["hosts"] = [{**inv["hosts"][index], "worker": 0, "accelerator": accelerator, "chips": chips}]
    return inv


@pytest.fixture
def setup(tmp_path: Path, ssh_hosts: SshHosts) -> dict:
    """The stand-in Pulumi CLI with a stack inventory per cell, the third host's inventory file, the plan."""
    inventories = tmp_path / "inventories"
    inventories.mkdir()
    for stack, (cloud, accelerator, chips, price, index) in STACKS.items():
        (inventories / f"{stack}.json").write_text(json.dumps(one_host(ssh_hosts, index, cloud, accelerator, chips,
                                                                       price, stack)))
    (tmp_path / "here.json").write_text(json.dumps(one_host(ssh_hosts, 2, "local", "cpu", 1, 0.6, "here")))
    env = pulumi_env(tmp_path, inventories / "t-tpu.json")
    wrapper = tmp_path / "pulumi-compare"
    wrapper.write_text(WRAPPER.format(python=sys.executable, standin=env["ERNIE_PULUMI"]))
    wrapper.chmod(0o755)
    env.update(ERNIE_PULUMI=str(wrapper), FAKE_PULUMI_STACKS=str(tmp_path / "stacks.json"),
               FAKE_PULUMI_INVENTORIES=str(inventories))
    return {"env": env, "results": Path(env["FAKE_PULUMI_RESULTS"]), "plan": tmp_path / "compare.toml"}


def write_plan(s: dict, steps: int = 10, gpu_fails: bool = False,
               rates: tuple[float, float, float] = (40, 80, 20)) -> Path:
    s["plan"].write_text(PLAN.format(trainer=TRAINER, steps=steps, gpu_fails=str(gpu_fails).lower(),
                                     tpu_rate=rates[0], gpu_rate=rates[1], here_rate=rates[2]))
    return s["plan"]


def compare(ernie_cmd: list[str], s: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ernie_cmd, "compare", str(s["plan"]), "--results", str(s["results"]), "--parallel", "3",
                           *args], capture_output=True, text=True, env=s["env"], timeout=300)


def by_stack(env: dict) -> dict[str, list[str]]:
    """The stand-in's calls per stack: up, stack (output), destroy; init from `stack init NAME`."""
    out: dict[str, list[str]] = {}
    for c in calls(env):
        args = c["args"]
        if args[:2] == ["stack", "init"]:
            out.setdefault(args[2], []).append("init")
        elif "-s" in args:
            out.setdefault(args[args.index("-s") + 1], []).append(args[0])
    return out


def report(s: dict) -> dict:
    return json.loads((s["results"] / "compare" / "t" / "compare.json").read_text())


def steps_of(results: Path, run_id: str) -> list[tuple[str, bool]]:
    return [(st["name"], st["ok"]) for st in json.loads((results / run_id / "timeline.json").read_text())["steps"]]


def test_three_cells_on_two_clouds_run_to_one_report(ernie_cmd: list[str], setup: dict) -> None:
    write_plan(setup)
    results = setup["results"]
    proc = subprocess.run([*ernie_cmd, "compare", "compare.toml", "--results", results.name, "--parallel", "3"],
                          capture_output=True, text=True, env=setup["env"], timeout=300, cwd=results.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert by_stack(setup["env"]) == {"t-tpu": ["init", "refresh", "stack", "up", "stack", "destroy"],
                                      "t-gpu": ["init", "refresh", "stack", "up", "stack", "destroy"]}
    up = next(c["args"] for c in calls(setup["env"]) if c["args"][0] == "up" and "t-tpu" in c["args"])
    config = Path(up[up.index("--config-file") + 1])
    assert config.parent == setup["results"] / "compare" / "t" and "ernie:tpuType: v4-8" in config.read_text()
    data = report(setup)
    cells = {c["cell"]: c for c in data["cells"]}
    assert {c: cells[c]["status"] for c in cells} == {"tpu": "complete", "gpu": "complete", "here": "complete"}
    for c in cells.values():  # collected, then destroyed (the inventory cell has nothing to destroy)
        names = [n for n, _ in steps_of(setup["results"], c["run_id"])]
        assert names[-2:] == (["collect", "destroy"] if c["cell"] != "here" else ["run", "collect"])
    # the gpu cell simulates the highest rate on one chip: fastest; the inventory host bills the least per hour
    assert cells["gpu"]["throughput"] > cells["tpu"]["throughput"] > cells["here"]["throughput"]
    assert cells["tpu"]["mfu"] == pytest.approx(cells["tpu"]["throughput"] * 5e8 / (0.05e12 * 4))
    fastest = min(cells.values(), key=lambda c: c["time_to_target_min"])["cell"]
    # (how a local run is priced is ernie/results' business: a cell it does not price has no dollars to target)
    cheapest = min((c for c in cells.values() if c["usd_to_target"] is not None),
                   key=lambda c: c["usd_to_target"])["cell"]
    assert data["answers"][0].startswith(f"fastest to target: {fastest} (") and f"cheapest to target: {cheapest} (" \
        in data["answers"][0]
    md = (setup["results"] / "compare" / "t" / "compare.md").read_text()
    assert "like for like: global\\_batch=8, max\\_steps=10" in md or "like for like: global_batch=8" in md
    assert (setup["results"] / "compare" / "t" / "compare-plot.png").read_bytes()[:4] == b"\x89PNG"
    # The local cell's estimate against its actual: the report's error is what the run's own files say.
    here = cells["here"]
    timeline = json.loads((setup["results"] / here["run_id"] / "timeline.json").read_text())["steps"]
    lifetime_min = (max(st["end"] for st in timeline) - min(st["start"] for st in timeline)) / 60
    state = json.loads((setup["results"] / "compare" / "t" / "state.json").read_text())
    estimate = state["cells"]["here"]["estimate"]["total_minutes"]
    assert here["actual_min"] == pytest.approx(lifetime_min) and here["estimate_min"] == pytest.approx(estimate)
    assert abs(here["estimate_min"] - here["actual_min"]) == pytest.approx(abs(here["min_error"]) * here["actual_min"])
    summary = summarize(read_run(setup["results"] / here["run_id"]))
    assert here["actual_usd"] == summary.cost_usd and cells["tpu"]["actual_usd"] == pytest.approx(
        12.88 * cells["tpu"]["actual_min"] / 60)


def test_a_second_plan_estimates_closer_than_the_first(ernie_cmd: list[str], setup: dict) -> None:
    write_plan(setup)
    first = compare(ernie_cmd, setup)
    assert first.returncode == 0, first.stdout + first.stderr
    before = {c["cell"]: c for c in report(setup)["cells"]}
    second = compare(ernie_cmd, setup)
    assert second.returncode == 0, second.stdout + second.stderr
    after = {c["cell"]: c for c in report(setup)["cells"]}
    assert "median of 1 earlier run(s) on v4-8 on gcp" in second.stdout
    for cell in ("tpu", "gpu", "here"):
        assert after[cell]["run_id"] != before[cell]["run_id"]
        assert abs(after[cell]["min_error"]) < abs(before[cell]["min_error"]), (cell, before[cell], after[cell])
        # the MFU the second plan assumed is the one the first run measured
        assert after[cell]["estimate_mfu"] == pytest.approx(before[cell]["mfu"])
    # the report says how close: this plan's median error beside the previous report's
    closeness = report(setup)["answers"][1]
    median_now = sorted(abs(after[c]["min_error"]) for c in after)[1]
    median_then = sorted(abs(before[c]["min_error"]) for c in before)[1]
    assert closeness == (f"the plan's time estimates were off by a median {median_now:.0%} (3 cell(s)); for the "
                         f"runs of the previous report of this plan: {median_then:.0%}")


def test_a_failing_cell_leaves_the_others_complete_and_resume_runs_only_it(ernie_cmd: list[str],
                                                                          setup: dict) -> None:
    write_plan(setup, gpu_fails=True)
    proc = compare(ernie_cmd, setup)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert by_stack(setup["env"]) == {"t-tpu": ["init", "refresh", "stack", "up", "stack", "destroy"],
                                      "t-gpu": ["init", "refresh", "stack", "up", "stack", "destroy"]}
    cells = {c["cell"]: c for c in report(setup)["cells"]}
    assert {c: cells[c]["status"] for c in cells} == {"tpu": "complete", "gpu": "failed", "here": "complete"}
    assert "cell gpu: failed" in proc.stdout.replace("\n", " ")
    logged = len(calls(setup["env"]))

    write_plan(setup)  # the gpu cell fixed: --resume reruns it alone
    # The budget counts only the cell still to run: the tpu cell alone may cost 38.64 USD (12.88 USD/h to its TTL).
    resumed = compare(ernie_cmd, setup, "--resume", "--budget", "5")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    later = calls(setup["env"])[logged:]
    assert [c["args"][0] for c in later if c["args"][0] != "stack" or c["args"][1] == "output"] == \
        ["refresh", "up", "stack", "destroy"]
    assert all("t-gpu" in c["args"] for c in later if c["args"][0] in ("up", "destroy"))
    again = {c["cell"]: c for c in report(setup)["cells"]}
    assert {c: again[c]["status"] for c in again} == {"tpu": "complete", "gpu": "complete", "here": "complete"}
    assert again["tpu"]["run_id"] == cells["tpu"]["run_id"] and again["gpu"]["run_id"] != cells["gpu"]["run_id"]
    assert "cell tpu: complete in run" in resumed.stdout and "skipped (--resume)" in resumed.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_mid_run_collects_and_destroys_every_live_stack(ernie_cmd: list[str], setup: dict,
                                                                sig: signal.Signals) -> None:
    write_plan(setup, steps=400, rates=(4, 4, 4))  # two seconds a step: still running when the signal comes
    results = setup["results"]
    proc = subprocess.Popen([*ernie_cmd, "compare", str(setup["plan"]), "--results", str(results), "--parallel", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=setup["env"],
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(results.glob("*/worker0.stream.log"))) < 3:
            time.sleep(0.3)
        assert len(list(results.glob("*/worker0.stream.log"))) == 3, "the cells never all started"
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # as the terminal's Ctrl-C: to the whole foreground group
        else:
            proc.send_signal(sig)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig, out
    assert by_stack(setup["env"]) == {"t-tpu": ["init", "refresh", "stack", "up", "stack", "destroy"],
                                      "t-gpu": ["init", "refresh", "stack", "up", "stack", "destroy"]}, out
    state = json.loads((results / "compare" / "t" / "state.json").read_text())["cells"]
    for name, cell in state.items():
        steps = steps_of(results, cell["run_id"])
        expected = [("collect", True), ("destroy", True)] if name != "here" else [("run", False), ("collect", True)]
        assert steps[-2:] == expected, (name, steps)
        manifest = json.loads((results / cell["run_id"] / "manifest.json").read_text())
        assert {h["exit_code"] for h in manifest["hosts"].values()} == {143}  # stopped, then collected
    assert "Traceback" not in out and "`ernie compare PLAN --resume` runs the rest" in out, out


def cell_pid(spec: Path) -> int | None:
    """The process running the cell whose spec file is `spec` (`python -m ernie.compare.cell SPEC`)."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ernie.compare.cell" in argv and str(spec).encode() in argv:
            return int(proc.name)
    return None


def cell_streaming(spec: Path, results: Path) -> bool:
    """Whether the cell of `spec` has its own run streaming (its worker 0's stream copy exists)."""
    try:
        run_id = json.loads(spec.read_text())["run_id"]
    except (OSError, ValueError, KeyError):
        return False  # not written yet, or half written
    return (results / run_id / "worker0.stream.log").exists()


def test_a_cell_process_killed_mid_run_still_has_its_stack_destroyed(ernie_cmd: list[str], setup: dict) -> None:
    write_plan(setup, steps=400, rates=(4, 800, 800))  # the tpu cell runs long; the others end on their own
    results = setup["results"]
    proc = subprocess.Popen([*ernie_cmd, "compare", str(setup["plan"]), "--results", str(results), "--parallel", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=setup["env"],
                            start_new_session=True)
    try:
        spec = results / "compare" / "t" / "tpu.cell.json"
        deadline = time.monotonic() + 120
        # The tpu cell's own run under way (not another cell's): its stack is up and its inventory read.
        while time.monotonic() < deadline and not cell_streaming(spec, results):
            time.sleep(0.3)
        pid = cell_pid(spec)
        assert pid is not None, "the tpu cell never started"
        os.kill(pid, signal.SIGKILL)  # no handler runs: its bench never destroys
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, out
    assert "cell tpu: its process ended without destroying stack t-tpu; destroying it now" in out.replace("\n", " ")
    assert by_stack(setup["env"])["t-tpu"] == ["init", "refresh", "stack", "up", "stack", "destroy"]
    destroy = next(c["args"] for c in calls(setup["env"]) if c["args"][0] == "destroy" and "t-tpu" in c["args"])
    assert destroy[destroy.index("--config-file") + 1].endswith("compare/t/Pulumi.t-tpu.yaml")
    cells = {c["cell"]: c for c in report(setup)["cells"]}
    assert cells["gpu"]["status"] == "complete" and cells["here"]["status"] == "complete"
    assert cells["tpu"]["status"] != "complete"
