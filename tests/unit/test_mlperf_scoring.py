"""Runs scored as MLPerf's rules score them, the MLPerf rows' status, and conformance: a conformant BERT run and a
non-conformant one, each labelled, and never a like-for-like claim that is not one.

Times are made up so that every score can be worked out by hand.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest

from ernie.errors import ErnieError
from ernie.results import compare, mlperf_rows, read_run, summarize
from ernie.results.mlperf import (
    RUNS_REQUIRED, STATUSES, conformance_label, olympic_score, parse_rows, run_conformance,
)
from tests.unit.test_results import BERT_TORCH, RUNS

#: result.json's `mlperf` block as workloads/bert writes it (results.py, recipe.conformance).
CLOSED = {"division": "closed", "differences": [], "ruleset": "5.0.0"}
OPEN = {"division": "open", "ruleset": "5.0.0", "differences": [
    "data: ernie-bert-v1 at seq 128 / 20 predictions, not the reference's Wikipedia 2020-01-01 shards",
    "eval set: ernie's own held-out split, not the reference's 10,000-sample eval set",
    "checkpoint: trained from random weights, not the phase-1 checkpoint model.ckpt-28252",
]}
MIN = 60.0


# ------------------------------------------------------------------------------------------------ olympic mean


def test_ten_runs_drop_the_fastest_and_slowest_and_average_the_rest() -> None:
    times = [m * MIN for m in (14, 10, 11, 12, 13, 12, 11, 13, 12, 30)]  # 10 fastest, 30 slowest: both dropped
    s = olympic_score(times, 10)
    assert s.mean_s == pytest.approx((14 + 11 + 12 + 13 + 12 + 11 + 13 + 12) / 8 * MIN)  # 12.25 min
    assert s.spread_s == (10 * MIN, 30 * MIN) and s.stdev_s is not None and s.complete
    assert s.label.startswith("olympic mean of 10 runs: 12.25 min (10.00 min to 30.00 min, sd ")


def test_one_run_short_of_the_target_is_dropped_as_the_slowest_and_two_void_the_result() -> None:
    one = olympic_score([m * MIN for m in (10, 11, 12, 13, 14, 15, 16, 17, 18)] + [None], 10)
    assert one.mean_s == pytest.approx(sum(range(11, 19)) / 8 * MIN)  # 10 dropped as fastest, the miss as slowest
    assert one.converged == 9
    two = olympic_score([m * MIN for m in range(10, 18)] + [None, None], 10)
    assert two.mean_s is None and "2 runs did not reach the target, the rules allow 1" in two.label


def test_fewer_runs_than_the_rules_need_are_scored_and_labelled() -> None:
    three = olympic_score([10 * MIN, 20 * MIN, 12 * MIN], 10)
    assert three.mean_s == pytest.approx(12 * MIN) and not three.complete
    assert three.label.startswith("3 of 10 runs, olympic mean: 12.00 min")
    one = olympic_score([15 * MIN], 10)
    assert one.label == "1 of 10 runs, mean: 15.00 min"
    assert olympic_score([None], 10).label == "1 of 10 runs, mean: no score (no run reached the target)"


def test_the_rules_count_of_runs_per_benchmark() -> None:
    assert RUNS_REQUIRED == {"bert": 10, "transformer": 10}  # training_rules.adoc, Benchmark Results: NLP, Translation


# ------------------------------------------------------------------------------------------------ MLPerf rows


def test_every_mlperf_row_carries_its_target_status_and_sources() -> None:
    text = resources.files("ernie").joinpath("data/mlperf_results.csv").read_text(encoding="utf-8")
    raw = list(csv.DictReader(text.splitlines()))
    assert raw and all(r["status"] in STATUSES for r in raw)
    assert all(r["source"].strip() and r["status_source"].strip() and float(r["quality_target"]) > 0 for r in raw)
    by = {(r.round, r.system): r for r in mlperf_rows()}
    assert by[("v0.7", "NVIDIA DGX A100 40GB")].status == "available on-premise"
    assert by[("v1.1", "Azure ND96amsr_A100_v4")].status == "available cloud"
    assert by[("v3.0", "Azure ND_H100_v5")].status == "preview"
    assert by[("v0.7", "Google TPU v3-32")].status == "not established"  # no system file found: not guessed
    assert {r.quality_target for r in mlperf_rows() if r.benchmark == "bert"} == {0.712, 0.720}  # v0.7, then 0.720


def test_a_row_with_an_unknown_status_or_no_source_is_refused_by_name() -> None:
    text = resources.files("ernie").joinpath("data/mlperf_results.csv").read_text(encoding="utf-8")
    header, first = text.splitlines()[:2]
    with pytest.raises(ErnieError, match=r"line 2: status 'cloudy' is not one of available cloud, .*not established"):
        parse_rows(header + "\n" + first.replace(",available cloud,", ",cloudy,"))
    cut = first[:first.index(",https://")] + ",," + first.split(",")[-2] + "," + first.split(",")[-1]
    with pytest.raises(ErnieError, match="line 2: source is empty"):
        parse_rows(header + "\n" + cut)


# ------------------------------------------------------------------------------------------------ conformance


def _bert(run_id: str, mlperf: dict | None, minutes: float = 15.0, target: float = 0.72):
    base = summarize(read_run(RUNS / BERT_TORCH))
    block = mlperf or {}
    return replace(base, run_id=run_id, mlperf_division=block.get("division"),
                   mlperf_differences=list(block.get("differences", [])), time_to_target_s=minutes * MIN,
                   eval_target=target, config_hash=f"recipe-{block.get('division')}")


def _against(comparisons, system: str):
    return {c.run.run_id: c for c in comparisons if c.row.system == system}


def test_a_conformant_run_of_ten_is_like_for_like_and_an_open_one_names_what_differs() -> None:
    conformant = [_bert(f"closed-{i}", CLOSED, minutes=20 + i) for i in range(10)]
    other = _bert("open-0", OPEN, minutes=10)
    h100 = _against(compare([*conformant, other]), "NVIDIA DGX H100")  # v3.0: target 0.720
    ok, bad = h100["closed-9"], h100["open-0"]
    assert ok.like_for_like and ok.differences == () and ok.score.runs == 10
    assert ok.score.mean_s == pytest.approx(24.5 * MIN)  # 21..28 after dropping 20 and 29
    assert conformance_label(ok.run) == "conformant (closed division)"
    assert not bad.like_for_like
    assert [d.split(":")[0] for d in bad.differences] == ["data", "eval set", "checkpoint", "runs"]
    assert bad.differences[0].startswith("data: ernie-bert-v1") and "runs: 1 of 10" in bad.differences[-1]
    assert conformance_label(bad.run).startswith("not conformant: data: ")
    # Against a v0.7 row, the conformant run aims at another target: not like for like either, and it says so.
    v07 = _against(compare(conformant), "NVIDIA DGX A100 40GB")["closed-9"]
    assert v07.differences == ("target: 0.72 vs the round's 0.712",)


def test_fewer_conformant_runs_than_the_rules_need_are_not_like_for_like() -> None:
    runs = [_bert(f"closed-{i}", CLOSED, minutes=20 + i) for i in range(3)]
    [c] = _against(compare(runs), "NVIDIA DGX H100").values()
    assert c.differences == ("runs: 3 of 10",) and c.score.label.startswith("3 of 10 runs, olympic mean: 21.00 min")


def test_runs_without_an_mlperf_block_are_not_checked_and_never_scored_with_conformant_ones() -> None:
    unchecked = summarize(read_run(RUNS / BERT_TORCH))
    assert unchecked.mlperf_division is None
    assert run_conformance(unchecked) == ("not checked: result.json has no MLPerf conformance block",)
    closed = replace(unchecked, run_id="closed-0", mlperf_division="closed")  # same configuration otherwise
    h100 = _against(compare([unchecked, closed]), "NVIDIA DGX H100")
    assert h100[BERT_TORCH].score.runs == 1 and h100["closed-0"].score.runs == 1


def _copy_bert(results: Path, run_id: str, mlperf: object) -> None:
    shutil.copytree(RUNS / BERT_TORCH, results / run_id)
    path = results / run_id / "gpu-0" / "result.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "mlperf": mlperf}))


@pytest.mark.parametrize(("block", "division", "differences"), [
    (CLOSED, "closed", []),
    (OPEN, "open", OPEN["differences"]),
    ("closed", None, []),  # not an object: not checked
    ({"division": "CLOSED", "differences": "none"}, None, []),
    ({"division": "open", "differences": [1, "data: x", None]}, "open", ["data: x"]),
])
def test_the_mlperf_block_is_read_from_result_json_and_hostile_values_dropped(
        tmp_path: Path, block: object, division: str | None, differences: list[str]) -> None:
    _copy_bert(tmp_path, "run", block)
    s = summarize(read_run(tmp_path / "run"))
    assert (s.mlperf_division, s.mlperf_differences) == (division, differences)
    assert s.status == "complete"
