"""`ernie compare` before anything exists: the plan file, its refusals, the planner's estimates and `--budget`.

Pure and fast but for the cells' `ernie check` under mocks (a few seconds each); nothing here provisions.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from ernie.compare.estimate import (BUCKETS, DEFAULT_MINUTES, STARTUP, Estimate, Figure, Hardware, History,
                                    PlanEstimate, _bert, budget_problems, estimate_cell)
from ernie.compare.plan import STACK_OVERRIDES, load_plan
from ernie.errors import ErnieError
from ernie.results import RunSummary

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "compare.example.toml"
ECHO = REPO / "tests" / "workloads" / "echo"

GOOD = """
name = "t"
{extra_top}
[base]
gcp = "gcp"
aws = "aws"
[workload]
name = "bert-torch"
[workload.params]
preset = "base"
global_batch = 256
max_steps = 1000
[[cells]]
name = "v4"
cloud = "gcp"
workload = "bert-tf"
stack = {{ "ernie:tpuType" = "v4-8", "ernie:runtimeVersion" = "tpu-ubuntu2204-base" }}
[[cells]]
name = "g5"
cloud = "aws"
{extra_cell}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "compare.toml"
    path.write_text(text)
    return path


def good(tmp_path: Path, extra_top: str = "", extra_cell: str = "") -> Path:
    return write(tmp_path, GOOD.format(extra_top=extra_top, extra_cell=extra_cell))


def test_the_example_plan_loads_with_like_for_like_settings_shared() -> None:
    plan = load_plan(EXAMPLE)
    assert [c.name for c in plan.cells] == ["v4-8", "v5e-8", "p4d"]
    assert all(c.params["global_batch"] == plan.shared["global_batch"] for c in plan.cells)
    assert plan.cells[0].stack(plan.name) == "bert-base-v4-8" and plan.cells[0].workload == "bert-tf"
    assert plan.cells[2].workload == "bert-torch"  # the plan's workload where the cell names none
    config = plan.cells[0].stack_config()["config"]
    assert config["ernie:tpuType"] == "v4-8" and config["ernie:sshAllowedCidrs"] == ["203.0.113.7/32"]


@pytest.mark.parametrize("text, says", [
    (GOOD.format(extra_top="colour = 1", extra_cell=""), "colour: unknown key"),
    (GOOD.format(extra_top="", extra_cell='colour = "red"'), "cell g5: colour: unknown key"),
    (GOOD.format(extra_top="", extra_cell='stack = { "ernie:sshAllowedCidrs" = "0.0.0.0/0" }'),
     "cell g5: stack.ernie:sshAllowedCidrs: not a key a cell may change"),
    (GOOD.format(extra_top="", extra_cell="").replace('name = "g5"', 'name = "v4"'),
     "cells[1].name: 'v4' names two cells"),
    (GOOD.format(extra_top="", extra_cell="").replace('aws = "aws"', 'aws = "nosuchstack"'),
     "base.aws: no base stack 'nosuchstack'"),
    (GOOD.format(extra_top="", extra_cell="").replace('aws = "aws"\n', ''),
     "cell g5: cloud: aws has no base stack"),
    (GOOD.format(extra_top="", extra_cell="").replace('aws = "aws"', 'aws = "gcp"'),
     "base.aws: " + str(REPO / "Pulumi.gcp.yaml") + " is a stack of ernie:cloud 'gcp', not aws"),
    (GOOD.format(extra_top="", extra_cell="params = { global_batch = 64 }"),
     "cell g5: params.global_batch: 64 breaks the like-for-like setting 256; add differs = [\"global_batch\"]"),
    (GOOD.format(extra_top="mfu = 1.5", extra_cell=""), "mfu: 1.5"),
    (GOOD.format(extra_top="", extra_cell='inventory = "hosts.json"'), "cell g5: give exactly one of cloud"),
])
def test_a_bad_plan_is_one_clear_line(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ErnieError) as refused:
        load_plan(write(tmp_path, text))
    message = str(refused.value)
    assert says in message and "\n" not in message, message
    assert message.startswith(str(tmp_path / "compare.toml"))


def test_a_declared_difference_is_accepted_and_kept(tmp_path: Path) -> None:
    plan = load_plan(good(tmp_path, extra_cell='params = { global_batch = 64 }\ndiffers = ["global_batch"]'))
    g5 = plan.cells[1]
    assert g5.params["global_batch"] == 64 and g5.differs == ("global_batch",)
    assert plan.cells[0].params["global_batch"] == 256


def console() -> Console:
    return Console(width=200, record=True)


def test_a_cell_with_a_bad_override_is_refused_by_the_stacks_own_check(tmp_path: Path) -> None:
    from ernie.compare.command import plan_and_check

    path = good(tmp_path).with_name("bad.toml")
    path.write_text(good(tmp_path).read_text().replace('"v4-8"', '"v4-7"'))
    with pytest.raises(ErnieError) as refused:
        plan_and_check(path, None, 2, tmp_path / "results", console())
    lines = str(refused.value).splitlines()
    assert lines[0].startswith("cell v4: ernie:tpuType: ") and "v4-7" in lines[0], lines
    assert lines[-1].endswith("nothing was created: fix the cell(s) above") and len(lines) == 2


def test_a_cell_over_its_cost_ceiling_is_refused_by_the_guardrail(tmp_path: Path) -> None:
    from ernie.compare.command import plan_and_check

    path = good(tmp_path, extra_cell='stack = { "ernie:instanceType" = "p4d.24xlarge" }')
    with pytest.raises(ErnieError, match=r"cell g5: guardrail cost-ceiling"):
        plan_and_check(path, None, 2, tmp_path / "results", console())


def test_the_plan_estimates_every_cell_from_flops_peak_and_price(tmp_path: Path) -> None:
    from ernie.compare.command import plan_and_check

    plan, planned = plan_and_check(EXAMPLE, None, 3, tmp_path / "results", rec := console())
    by_cell = {e.cell: e for e in planned.estimates}
    v4 = by_cell["v4-8"]
    assert (v4.hardware.accelerator, v4.hardware.chips, v4.hardware.cloud) == ("v4-8", 4, "gcp")
    assert v4.hardware.usd_per_hour == pytest.approx(4 * 3.22) and "prices.csv" in v4.hardware.price_source
    flops = _bert("flops").flops_per_sequence(_bert("presets").get_preset("base"), 128, 20)
    samples = 256 * 2000
    compute_min = samples * flops / (_bert("flops").peak_flops_for("TPU v4") * 4 * plan.mfu) / 60
    assert v4.minutes["training"].value == pytest.approx(compute_min + DEFAULT_MINUTES["gcp"][STARTUP])
    assert v4.total_minutes == pytest.approx(sum(v4.minutes[b].value for b in BUCKETS))
    assert v4.usd == pytest.approx(v4.total_minutes / 60 * v4.hardware.usd_per_hour)
    assert v4.worst_usd == pytest.approx(120 / 60 * v4.hardware.usd_per_hour)  # its ernie:ttlMinutes
    assert by_cell["p4d"].hardware.chips == 8 and "A100 peak" in by_cell["p4d"].minutes["training"].source
    assert planned.usd == pytest.approx(sum(e.usd for e in planned.estimates))
    out = rec.export_text()
    assert "stack bert-base-v4-8" in out and "stated in the plan (mfu)" in out
    assert f"{planned.usd:.2f} USD in all" in out


def hw(**kw) -> Hardware:
    return Hardware(**{"cloud": "gcp", "accelerator": "v4-8", "chips": 4, "hosts": 1, "usd_per_hour": 12.0,
                       "price_source": "test", "ttl_minutes": 60, **kw})


def estimate(minutes: dict[str, float | None], **kw) -> Estimate:
    return Estimate(cell=kw.pop("cell", "c"), stack=None, hardware=hw(**kw),
                    minutes={b: Figure(minutes.get(b, 1.0), "t") for b in BUCKETS})


def test_budget_refuses_the_expected_total_and_the_worst_case() -> None:
    planned = PlanEstimate([estimate({"training": 6.0}), estimate({"training": 16.0}, cell="d")], [])
    assert planned.usd == pytest.approx((10 + 20) / 60 * 12.0)
    assert budget_problems(planned, 100.0) == []
    over_worst = budget_problems(planned, 20.0)  # expected 6 USD fits; two hosts to their 60 min TTL (24) do not
    assert len(over_worst) == 1 and "worst case 24.00 USD" in over_worst[0]
    assert "expected total 6.00 USD" in budget_problems(planned, 5.0)[0]
    unbounded = PlanEstimate([estimate({}, ttl_minutes=None)], [])
    assert "unbounded" in budget_problems(unbounded, 1000.0)[0]


def test_cells_are_scheduled_on_parallel_slots() -> None:
    planned = PlanEstimate([estimate({"training": 26.0}), estimate({"training": 6.0}), estimate({"training": 6.0})], [])
    assert planned.wall_minutes(1) == pytest.approx(30 + 10 + 10)
    assert planned.wall_minutes(2) == pytest.approx(30)
    assert PlanEstimate([estimate({"training": None})], []).wall_minutes(2) is None


def run_summary(**kw) -> RunSummary:
    return RunSummary(**{"run_id": "r", "status": "complete", "cloud": "gcp", "accelerator": "v4-8",
                         "workload": "bert-tf", "mfu": 0.5, "time_to_train_s": 100.0,
                         "wall_s": {"provisioning": 120.0, "setup": 60.0, "training": 160.0, "collection": 6.0,
                                    "teardown": 30.0}, **kw})


def test_estimates_learn_mfu_and_overheads_from_earlier_runs(tmp_path: Path) -> None:
    plan = load_plan(EXAMPLE)
    cell = plan.cells[0]
    resolved = cell.resolved()
    fresh = estimate_cell(cell, plan, hw(), resolved, History([]))
    learned = estimate_cell(cell, plan, hw(), resolved,
                            History([run_summary(), run_summary(mfu=0.3, wall_s={"provisioning": 240.0})]))
    assert fresh.mfu.value == plan.mfu and "stated" in fresh.mfu.source
    assert learned.mfu.value == pytest.approx(0.4)
    assert "median of 2 earlier run(s) of bert-tf on v4-8" in learned.mfu.source
    assert learned.minutes["provisioning"].value == pytest.approx(3.0)  # median of 2 and 4 minutes
    assert learned.minutes["setup"].value == pytest.approx(1.0)  # only one run recorded setup
    # start-up = the training bucket less the time to train (60 s), added to the compute time at the learned MFU
    assert learned.minutes["training"].value == pytest.approx(fresh_compute(fresh, plan.mfu) * plan.mfu / 0.4 + 1.0)
    bigger = estimate_cell(cell, plan, hw(), resolved, History([run_summary(accelerator="v4-32", mfu=0.45)]))
    assert bigger.mfu.value == pytest.approx(0.45) and "v4 in other sizes" in bigger.mfu.source
    elsewhere = estimate_cell(cell, plan, hw(), resolved, History([run_summary(accelerator="v5litepod-8")]))
    assert elsewhere.mfu.value == plan.mfu
    other_cloud = estimate_cell(cell, plan, hw(cloud="aws"), resolved, History([run_summary()]))
    assert other_cloud.minutes["provisioning"].value == DEFAULT_MINUTES["aws"]["provisioning"]


def fresh_compute(e: Estimate, mfu: float) -> float:
    return e.minutes["training"].value - DEFAULT_MINUTES["gcp"][STARTUP]


def test_a_workload_without_flops_or_history_has_an_unknown_training_time(tmp_path: Path) -> None:
    (tmp_path / "inv.json").write_text(json.dumps({
        "cloud": "local", "runner": "local", "price_per_hour_usd": 2.0,
        "hosts": [{"name": "h", "address": "127.0.0.1", "worker": 0}]}))
    plan = load_plan(write(tmp_path, f"""
name = "t"
[workload]
name = "{ECHO}"
[[cells]]
name = "here"
inventory = "inv.json"
"""))
    cell = plan.cells[0]
    assert cell.inventory == tmp_path / "inv.json" and cell.stack(plan.name) is None
    e = estimate_cell(cell, plan, hw(cloud="local", ttl_minutes=None, usd_per_hour=2.0), cell.resolved(), History([]))
    assert e.minutes["training"].value is None and "no global_batch" in e.minutes["training"].source
    assert e.usd is None and e.worst_usd is None


def test_over_budget_refuses_before_any_pulumi_call(ernie_cmd: list[str], tmp_path: Path) -> None:
    from test_bench import calls, pulumi_env

    env = pulumi_env(tmp_path, tmp_path / "unused.json")
    proc = subprocess.run([*ernie_cmd, "compare", str(EXAMPLE), "--budget", "5", "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "exceeds --budget 5 USD" in proc.stderr and "nothing was created" in proc.stderr
    assert calls(env) == []  # not even `pulumi stack ls`


def test_every_stack_override_is_a_key_the_stack_config_reads() -> None:
    from infra.config import KEYS

    ernie_keys = {k.split(":", 1)[1] for k in STACK_OVERRIDES if k.startswith("ernie:")}
    assert ernie_keys <= KEYS["gcp"] | KEYS["aws"]


def test_the_cell_stack_file_keeps_the_stacks_own_settings_never_the_bases(tmp_path: Path) -> None:
    plan = load_plan(EXAMPLE)
    cell = plan.cells[0]
    own = tmp_path / "Pulumi.bert-base-v4-8.yaml"  # as `pulumi stack init` writes it with a passphrase provider
    own.write_text("encryptionsalt: v1:abc\nconfig:\n  ernie:tpuType: v2-8\n")
    written = yaml.safe_load(cell.write_stack_file(tmp_path / "out" / own.name, settings_from=own).read_text())
    assert written["encryptionsalt"] == "v1:abc"
    assert written["config"] == {**yaml.safe_load((REPO / "Pulumi.gcp.yaml").read_text())["config"], **cell.overrides}
    plain = yaml.safe_load(cell.write_stack_file(tmp_path / "plain.yaml").read_text())
    assert set(plain) == {"config"}


def test_the_report_shows_like_for_like_settings_and_each_declared_difference(tmp_path: Path) -> None:
    from ernie.compare.report import like_for_like

    plan = load_plan(good(tmp_path, extra_cell='params = { global_batch = 64 }\ndiffers = ["global_batch"]'))
    assert like_for_like(plan) == ["like for like: preset=base, global_batch=256, max_steps=1000",
                                   "cell g5 differs on purpose: global_batch=64 (not 256)"]


def row(cell: str, **kw):
    from ernie.compare.report import Row

    fields = dict(cell=cell, hardware="h", workload="w", status="complete", run_id=cell, throughput=None,
                  throughput_unit="samples", mfu=None, time_to_target_min=None, usd_per_million=None,
                  usd_to_target=None, actual_min=None, actual_usd=None, estimate_min=None, estimate_usd=None,
                  estimate_mfu=None)
    return Row(**{**fields, **kw})


def test_the_summary_names_the_fastest_and_cheapest_cell_for_the_target() -> None:
    from ernie.compare.report import answers

    table = [row("a", time_to_target_min=10.0, usd_to_target=9.0), row("b", time_to_target_min=30.0,
                                                                       usd_to_target=3.0),
             row("c", time_to_target_min=1.0, usd_to_target=0.1, status="failed")]
    assert answers(table) == ["fastest to target: a (10 min); cheapest to target: b (3 USD)"]
    unreached = [row("a", throughput=100.0, usd_per_million=5.0), row("b", throughput=50.0, usd_per_million=2.0)]
    assert answers(unreached) == ["no cell reached its target; highest throughput: a (100 samples/s); cheapest per "
                                  "million samples: b (2 USD)"]
    assert row("a", estimate_min=15.0, actual_min=10.0).min_error == pytest.approx(0.5)


def test_a_bad_cell_on_the_command_line_is_one_line_and_nothing_is_created(ernie_cmd: list[str],
                                                                          tmp_path: Path) -> None:
    from test_bench import calls, pulumi_env

    env = pulumi_env(tmp_path, tmp_path / "unused.json")
    plan = good(tmp_path)
    plan.write_text(plan.read_text().replace('"v4-8"', '"v4-7"'))
    proc = subprocess.run([*ernie_cmd, "compare", str(plan), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: cell v4: ernie:tpuType: ") and lines[1:] == [
        "nothing was created: fix the cell(s) above"], proc.stderr
    assert "refused cell v4" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    assert calls(env) == [] and not (tmp_path / "r" / "compare").exists()
