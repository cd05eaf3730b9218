"""Reading run directories, the derived figures, the results database and the MLPerf rows.

The recorded runs in tests/data/runs (README there) hold the inputs: prices, timelines, MLLOG times, peaks.
Each expected figure below is worked out from those inputs by hand, and the mutation tests prove the code
derives them (change an input, the figure follows) rather than reading a stored number.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from ernie.errors import ErnieError
from ernie.results import ResultsIndex, compare, mlperf_rows, read_run, summarize
from ernie.results.index import SCHEMA_VERSION
from ernie.results.mlperf import accelerator_family, closest, scale_label

RUNS = Path(__file__).parents[1] / "data" / "runs"
BERT_TORCH = "20261128-081500-bert-torch-3fa2"  # aws p4d (8x A100), reaches the target
BERT_TF = "20261128-093000-bert-tf-7c1e"  # gcp TPU v3-8 (4 chips), stops short of it
TRANSLATION = "20261128-105500-translation-b21d"  # local CPU, words/s, no price
INCOMPLETE = "20261128-114000-bert-torch-9d04"  # v4-16: worker 1 missing, no result.json


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A writable copy of the recorded runs."""
    dst = tmp_path / "results"
    shutil.copytree(RUNS, dst, ignore=shutil.ignore_patterns("README.md"))
    return dst


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_bert_torch_figures_follow_from_its_files() -> None:
    s = summarize(read_run(RUNS / BERT_TORCH))
    assert s.status == "complete" and s.problems == []
    assert (s.workload, s.framework, s.benchmark, s.cloud) == ("bert-torch", "pytorch", "bert", "aws")
    assert (s.accelerator, s.chips, s.hosts) == ("A100", 8, 1)
    # MLLOG: run_start at +4.000 s, run_stop 900.02 s later; the third eval (0.7215) passes 0.72 at +900 s.
    assert s.time_to_train_s == pytest.approx(900.02)
    assert s.run_stop_status == "success"
    assert s.target_reached and s.time_to_target_s == pytest.approx(900.0)
    assert s.eval_value == pytest.approx(0.7215)
    # 4000 samples/s x 70 GFLOP / (312 TFLOP/s x 8 chips)
    assert s.mfu == pytest.approx(4000 * 7.0e10 / (3.12e14 * 8))
    # timeline: provision 180 + wait_ssh 60 | push 10 + setup 150 | run 910 | collect 20 | destroy 120
    assert s.wall_s == pytest.approx(
        {"provisioning": 240, "setup": 160, "training": 910, "collection": 20, "teardown": 120})
    assert s.lifetime_s == pytest.approx(1450)
    assert s.cost_usd == pytest.approx(32.77 * 1450 / 3600)
    assert s.usd_to_target == pytest.approx(s.cost_usd)
    assert s.usd_per_million == pytest.approx(32.77 / (4000 * 3600) * 1e6)
    assert s.image and s.image.endswith("pytorch-training:2.9.0-gpu-py312-cu130-ubuntu22.04-ec2")
    assert s.versions["torch"] == "2.9.0" and s.command.startswith("python train_torch.py")
    assert s.config_hash and len(s.config_hash) == 12


def test_bert_tf_run_short_of_its_target_has_no_time_or_cost_to_target() -> None:
    s = summarize(read_run(RUNS / BERT_TF))
    assert s.status == "complete"
    assert not s.target_reached and s.time_to_target_s is None and s.usd_to_target is None
    assert s.eval_value == pytest.approx(0.548) and s.run_stop_status == "aborted"
    assert s.time_to_train_s == pytest.approx(300.02)
    assert s.mfu == pytest.approx(1500 * 7.0e10 / (1.23e14 * 4))
    assert s.cost_usd == pytest.approx(8.0 * 830 / 3600)
    assert s.runtime == "tpu-vm-tf-2.17.0-pjrt"


def test_translation_counts_words_and_has_no_mfu_without_a_peak() -> None:
    s = summarize(read_run(RUNS / TRANSLATION))
    assert s.status == "complete" and s.benchmark == "transformer"
    assert (s.throughput, s.throughput_unit) == (5200.0, "words")
    assert s.mfu is None  # the CPU's peak is unknown: never invented
    assert s.wall_s["provisioning"] == 0 and s.wall_s["teardown"] == 0  # local: nothing provisioned
    assert s.lifetime_s == pytest.approx(30.5)
    # Local: not billed, and its result.json does not say how many CPUs its host had, so no equivalent either.
    assert s.price_basis == "not priced" and s.price_per_hour_usd is None
    assert s.cost_usd is None and s.usd_per_million is None
    assert "does not say how many CPUs" in s.price_source
    assert s.eval_metric == "bleu" and s.eval_value == pytest.approx(11.56)


def _local_with_cpus(runs: Path, cpus: int) -> Path:
    """The local translation run, as if its result.json recorded a host with `cpus` CPUs."""
    _edit_json(runs / TRANSLATION / "local" / "result.json",
               lambda r: r.update(settings={"host_cpus": cpus, "processes": 1}))
    return runs / TRANSLATION


def test_a_local_run_is_priced_at_its_declared_equivalent_never_at_zero(runs: Path) -> None:
    from catalog.pricing import catalog

    s = summarize(read_run(_local_with_cpus(runs, 2)))
    hourly = catalog()[("aws", "c7i.large")].usd_per_hour  # 2 vCPUs, as the host had
    assert s.price_basis == "equivalent" and s.price_per_hour_usd == pytest.approx(hourly)
    assert s.price_source.startswith("equivalent, not a bill: aws c7i.large (2 vCPUs)")
    assert s.cost_usd == pytest.approx(hourly * 30.5 / 3600)  # the local run's 30.5 s lifetime
    assert s.usd_per_million == pytest.approx(hourly / (5200 * 3600) * 1e6)
    s = summarize(read_run(_local_with_cpus(runs, 4)))
    assert s.price_per_hour_usd == pytest.approx(catalog()[("aws", "c7i.xlarge")].usd_per_hour)


def test_a_local_run_without_an_equivalent_is_not_priced(runs: Path) -> None:
    s = summarize(read_run(_local_with_cpus(runs, 3)))
    assert s.price_basis == "not priced" and s.cost_usd is None and s.usd_per_million is None
    assert "no instance with 3 vCPUs" in s.price_source


def test_a_cloud_run_is_priced_at_its_bill() -> None:
    s = summarize(read_run(RUNS / BERT_TORCH))
    assert s.price_basis == "bill" and s.price_per_hour_usd == 32.77


def test_run_settings_are_read_and_hostile_values_dropped(runs: Path) -> None:
    settings = {"processes": 2, "threads": {"intra_op": 1, "inter_op": 1}, "host_cpus": 8, "micro_batch": 16,
                "compile": "xla", "data": {"name": "stdlib-s128-p20", "meta_sha256": "ab" * 32}}
    _edit_json(runs / BERT_TF / "tpu-0" / "result.json", lambda r: r.update(settings=settings))
    s = summarize(read_run(runs / BERT_TF))
    assert (s.processes, s.threads, s.inter_op_threads, s.micro_batch, s.host_cpus) == (2, 1, 1, 16, 8)
    assert (s.compile, s.data, s.data_digest) == ("xla", "stdlib-s128-p20", "ab" * 32)
    hostile = {"processes": "2", "threads": [1], "micro_batch": True, "compile": {"x": 1}, "data": "d"}
    _edit_json(runs / BERT_TF / "tpu-0" / "result.json", lambda r: r.update(settings=hostile))
    s = summarize(read_run(runs / BERT_TF))
    assert (s.processes, s.threads, s.micro_batch, s.compile, s.data) == (None, None, None, None, None)
    assert s.status == "complete"  # settings are facts to show, not conditions of a result


def test_incomplete_run_says_what_is_missing_and_keeps_the_rest() -> None:
    s = summarize(read_run(RUNS / INCOMPLETE))
    assert s.status == "incomplete" and not s.succeeded
    assert any("result.json is missing" in p and "worker 0" in p for p in s.problems)
    assert any("worker 1 (tpu-1) was not collected" in p for p in s.problems)
    # What the files still hold is reported: MLPerf timing from worker 0's log, wall time and cost.
    assert s.time_to_train_s == pytest.approx(240.02)
    assert s.chips == 8 and s.accelerator == "v4-16"  # from the inventory when result.json is gone
    assert s.cost_usd == pytest.approx(25.76 * 900 / 3600)
    assert s.throughput is None and s.mfu is None and s.usd_per_million is None


def test_cost_and_mfu_are_computed_from_inputs(runs: Path) -> None:
    run = runs / BERT_TORCH
    _edit_json(run / "manifest.json", lambda m: m["inventory"].update(price_per_hour_usd=10.0))
    _edit_json(run / "gpu-0" / "result.json", lambda r: r.update(peak_flops_per_device=1.0e15, mfu=0.99))
    _edit_json(run / "timeline.json", lambda t: t["steps"][-1].update(end=t["steps"][-1]["end"] + 550))
    s = summarize(read_run(run))
    assert s.lifetime_s == pytest.approx(2000)
    assert s.cost_usd == pytest.approx(10.0 * 2000 / 3600)
    assert s.usd_per_million == pytest.approx(10.0 / (4000 * 3600) * 1e6)
    assert s.mfu == pytest.approx(4000 * 7.0e10 / (1.0e15 * 8))  # not the 0.99 the workload wrote


def test_time_to_target_comes_from_the_mlperf_log(runs: Path) -> None:
    log = runs / BERT_TORCH / "gpu-0" / "mlperf.log"
    lines = log.read_text().splitlines()
    kept = [ln for ln in lines if not ('"eval_accuracy"' in ln and "0.7215" in ln)]
    assert len(kept) == len(lines) - 1
    log.write_text("\n".join(kept) + "\n")
    s = summarize(read_run(runs / BERT_TORCH))
    assert not s.target_reached and s.time_to_target_s is None and s.usd_to_target is None
    assert s.eval_value == pytest.approx(0.614)


def test_mllog_lines_are_read_from_stdout_when_mlperf_log_is_gone(runs: Path) -> None:
    (runs / BERT_TF / "tpu-0" / "mlperf.log").unlink()
    _edit_json(runs / BERT_TF / "manifest.json", lambda m: m["hosts"]["tpu-0"]["files"].pop("mlperf.log"))
    s = summarize(read_run(runs / BERT_TF))
    assert s.time_to_train_s == pytest.approx(300.02) and s.status == "complete"


def test_a_failed_worker_makes_a_failed_run(runs: Path) -> None:
    _edit_json(runs / BERT_TF / "manifest.json",
               lambda m: m["hosts"]["tpu-0"].update(state="failed", exit_code=1))
    s = summarize(read_run(runs / BERT_TF))
    assert s.status == "failed" and not s.succeeded
    assert any("failed with exit code 1" in p for p in s.problems)


def test_missing_timeline_and_lost_files_are_problems_not_successes(runs: Path) -> None:
    (runs / BERT_TORCH / "timeline.json").unlink()
    (runs / BERT_TORCH / "gpu-0" / "stderr.log").unlink()
    s = summarize(read_run(runs / BERT_TORCH))
    assert s.status == "incomplete"
    assert "timeline.json is missing" in s.problems
    assert any("stderr.log is listed in manifest.json" in p for p in s.problems)
    assert s.cost_usd is None and s.wall_s == {}
    assert s.throughput == 4000.0  # the rest still reads


def test_a_run_without_manifest_reads_its_host_directories(runs: Path) -> None:
    (runs / TRANSLATION / "manifest.json").unlink()
    s = summarize(read_run(runs / TRANSLATION))
    assert s.status == "incomplete"
    assert "manifest.json is missing" in s.problems
    assert s.throughput == 5200.0 and s.time_to_train_s == pytest.approx(12.02)
    assert s.cost_usd is None  # no inventory, no price


def test_index_reads_only_changed_runs_and_keeps_deleted_ones(runs: Path) -> None:
    index = ResultsIndex(runs)
    dirs = index.run_dirs()
    assert [d.name for d in dirs] == sorted([BERT_TORCH, BERT_TF, TRANSLATION, INCOMPLETE])
    assert index.refresh(dirs) == 4
    assert index.refresh(dirs) == 0
    assert (runs / "ernie.db").is_file()

    result = runs / BERT_TF / "tpu-0" / "result.json"
    _edit_json(result, lambda r: r.update(samples_per_s=3000.0))
    st = result.stat()
    os.utime(result, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert index.refresh(dirs) == 1
    assert index.summaries([BERT_TF])[0].throughput == 3000.0

    shutil.rmtree(runs / TRANSLATION)
    index.refresh(index.run_dirs())
    by_id = {s.run_id: s for s in index.summaries()}
    assert set(by_id) == {BERT_TORCH, BERT_TF, TRANSLATION, INCOMPLETE}
    assert by_id[INCOMPLETE].status == "incomplete"
    assert by_id[TRANSLATION].throughput == 5200.0


def test_index_rebuilds_when_the_derivation_changes(runs: Path) -> None:
    index = ResultsIndex(runs)
    index.refresh(index.run_dirs())
    with sqlite3.connect(runs / "ernie.db") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 100}")
    assert index.refresh(index.run_dirs()) == 4


def test_index_names_an_unknown_run(runs: Path) -> None:
    index = ResultsIndex(runs)
    index.refresh(index.run_dirs())
    with pytest.raises(ErnieError, match="no run 20990101-nope"):
        index.summaries([BERT_TF, "20990101-nope"])


def test_mlperf_rows_ship_with_sources() -> None:
    rows = mlperf_rows()
    assert len(rows) == 11
    assert all(r.source.startswith("https://github.com/mlcommons/training_results_v") for r in rows)
    assert all(r.status_source.startswith(f"training_results_{r.round} ") for r in rows)  # status read per round
    tpu = next(r for r in rows if r.system == "Google TPU v3-32" and r.benchmark == "bert")
    assert (tpu.chips, tpu.minutes, tpu.quality_target) == (16, 56.74, 0.712)
    assert {r.benchmark for r in rows} == {"bert", "transformer"}


def test_comparisons_label_the_scale_and_skip_incomplete_runs() -> None:
    summaries = [summarize(read_run(RUNS / r)) for r in (BERT_TORCH, BERT_TF, TRANSLATION, INCOMPLETE)]
    comparisons = compare(summaries)
    assert INCOMPLETE not in {c.run.run_id for c in comparisons}
    assert all(c.row.benchmark == c.run.benchmark for c in comparisons)
    assert len(comparisons) == 7 + 7 + 4  # bert rows for both BERT runs, transformer rows for translation

    tf = summaries[1]
    v3_32 = next(r for r in mlperf_rows() if r.system == "Google TPU v3-32" and r.benchmark == "bert")
    label = scale_label(tf, v3_32)
    assert label.startswith("4x v3-8 vs 16x TPU v3: 4x the chips")
    assert "other accelerator" not in label  # both TPU v3
    assert "target" not in label and "BERT-large, seq 512" in label  # the target is a difference, not scale
    [c] = [c for c in comparisons if c.run is tf and c.row is v3_32]
    assert "target: 0.72 vs the round's 0.712" in c.differences and not c.like_for_like

    cpu = summaries[2]
    pod = next(r for r in mlperf_rows() if r.system == "Google TPU v3-2048")
    assert scale_label(cpu, pod).startswith("1x cpu vs 1024x TPU v3: 1,024x the chips; other accelerator")
    near = {c.run.run_id: c.row.system for c in closest(comparisons)}
    # Same family first (A100 with A100, TPU v3 with TPU v3), then the nearest chip count.
    assert near == {BERT_TORCH: "NVIDIA DGX A100 40GB", BERT_TF: "Google TPU v3-32", TRANSLATION: "NVIDIA DGX-1 (8x V100)"}


@pytest.mark.parametrize(
    ("name", "family"),
    [("v3-8", "tpu v3"), ("TPU v3", "tpu v3"), ("v5litepod-16", "tpu v5e"), ("v5p-8", "tpu v5p"), ("v4-16", "tpu v4"),
     ("NVIDIA A100-SXM4-40GB", "a100"), ("A100", "a100"), ("H100", "h100"), ("cpu", "cpu")],
)
def test_accelerator_family(name: str, family: str) -> None:
    assert accelerator_family(name) == family


LOCAL_RUNS = Path(__file__).parents[1] / "data" / "local_runs"  # real `ernie run --local` output (README there)


@pytest.mark.parametrize(
    ("run_id", "framework", "unit", "preset"),
    [("20261128-082700-bert-torch-db1a", "pytorch", "samples", "tiny"),
     ("20261128-083016-bert-tf-a5fb", "tensorflow", "samples", "tiny"),
     ("20261128-083857-translation-355f", "fairseq", "words", "synthetic")],
)
def test_real_local_runs_read_as_complete_results(run_id: str, framework: str, unit: str, preset: str) -> None:
    run = read_run(LOCAL_RUNS / run_id)
    s = summarize(run)
    assert s.status == "complete" and s.problems == []
    assert (s.framework, s.cloud, s.accelerator, s.chips, s.preset) == (framework, "local", "cpu", 1, preset)
    assert s.throughput == run.result[f"{unit}_per_s"] and s.throughput_unit == unit
    starts = [e.time_ms for e in run.events if e.key == "run_start"]
    stops = [e.time_ms for e in run.events if e.key == "run_stop"]
    assert s.time_to_train_s == pytest.approx((stops[-1] - starts[0]) / 1000)
    assert 0 < s.time_to_train_s < s.wall_s["training"]  # MLPerf's span lies inside the run step
    assert s.wall_s["provisioning"] < 1 and s.wall_s["teardown"] == 0  # nothing provisioned
    assert s.cost_usd is None and s.price_basis == "not priced"  # recorded before result.json named its CPUs
    assert s.mfu is None  # no peak is known for a CPU
    assert not s.target_reached and s.eval_value == pytest.approx(run.result["eval"]["value"])


def test_config_hash_names_the_configuration_not_the_run(tmp_path: Path) -> None:
    src = LOCAL_RUNS / "20261128-083016-bert-tf-a5fb"
    again = tmp_path / "20261128-090000-bert-tf-0000"
    shutil.copytree(src, again)
    _edit_json(again / "local" / "result.json", lambda r: r.update(command=r["command"].replace("a5fb", "0000")))
    assert summarize(read_run(again)).config_hash == summarize(read_run(src)).config_hash
    _edit_json(again / "manifest.json", lambda m: m["params"].update(max_steps=40))
    assert summarize(read_run(again)).config_hash != summarize(read_run(src)).config_hash


def test_a_malformed_manifest_host_is_a_problem_not_a_crash(runs: Path) -> None:
    _edit_json(runs / INCOMPLETE / "manifest.json", lambda m: m["hosts"].update({"tpu-1": "gone"}))
    s = summarize(read_run(runs / INCOMPLETE))
    assert s.status == "incomplete"
    assert "manifest.json: host 'tpu-1' has no integer 'worker'; it is not read" in s.problems
    assert s.time_to_train_s == pytest.approx(240.02)  # worker 0 still reads


def test_result_fields_of_the_wrong_type_read_as_missing(runs: Path) -> None:
    _edit_json(runs / BERT_TF / "tpu-0" / "result.json", lambda r: r.update(eval="0.5", model=[1], versions=None))
    _edit_json(runs / BERT_TF / "timeline.json", lambda t: t["steps"][0].pop("name"))
    s = summarize(read_run(runs / BERT_TF))
    assert s.model == {} and s.versions == {} and s.eval_target is None
    assert s.throughput == 1500.0 and s.lifetime_s == pytest.approx(830)
