"""`ernie report` as a user runs it, on the recorded runs: the Markdown, the HTML page, the plots, bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_results import BERT_TF, BERT_TORCH, INCOMPLETE, RUNS, TRANSLATION

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    dst = tmp_path / "results"
    shutil.copytree(RUNS, dst, ignore=shutil.ignore_patterns("README.md"))
    return dst


def _ernie(cmd: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "250", "HOME": "/tmp"})


def test_report_all_writes_markdown_html_and_plots(ernie_cmd: list[str], results: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _ernie(ernie_cmd, "report", "--all", "--results", str(results), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "4 run(s), 3 complete" in proc.stdout
    assert "Against MLPerf Training" in proc.stdout  # the comparison table, printed
    assert (results / "ernie.db").is_file()

    md = (out / "report.md").read_text()
    for run in (BERT_TORCH, BERT_TF, TRANSLATION, INCOMPLETE):
        assert run in md
    # The runs table: complete results with their derived figures, the incomplete run marked as such.
    row = next(line for line in md.splitlines() if line.startswith(f"| {BERT_TORCH} | bert-torch"))
    assert "| complete |" in row and "4,000.0 samples/s" in row and "11.2%" in row and "$13.20" in row
    incomplete = next(line for line in md.splitlines() if line.startswith(f"| {INCOMPLETE} | bert-torch"))
    assert "| incomplete |" in incomplete and "$6.44" in incomplete
    # Each run beside its nearest MLPerf row; every row in the detail section; each with its scale difference;
    # the incomplete run is not compared.
    def section(title: str) -> list[str]:
        return [line for line in md.split(f"## {title}\n")[1].split("\n## ")[0].splitlines() if line.startswith("| 2026")]

    nearest, every = section("Against MLPerf Training"), section("Detail: against every MLPerf row")
    assert len(nearest) == 3 and len(every) == 18
    assert INCOMPLETE not in "".join(nearest + every)
    assert all(re.search(r"\| \d+x .* vs \d+x .*: ", line) for line in nearest + every)
    assert ("| MLPerf v0.7 Google TPU v3-32 (not established) | 56.74 min to masked_lm_accuracy 0.712 | no: the run is "
            "not conformant; target: 0.72 vs the round's 0.712; runs: 1 of 10 | 4x v3-8 vs 16x TPU v3: 4x the chips"
            ) in "".join(nearest)
    assert not any("TPU v3-2048" in line for line in nearest) and any("TPU v3-2048" in line for line in every)
    assert (f"| {BERT_TORCH} | 15.00 min to masked_lm_accuracy 0.72; scored: 1 of 10 runs, mean: 15.00 min | not "
            "conformant: not checked: result.json has no MLPerf conformance block | MLPerf v0.7 Google 8x V100 on GCP "
            "(available cloud) |") in md
    assert f"| {TRANSLATION} | target not reached (bleu 11.560 of 25.0) after 12.0 s; scored: 1 of 10 runs" in md
    # Provenance: image, runtime, command and config hash per run.
    assert "tpu-vm-tf-2.17.0-pjrt" in md and "python train_tf.py --preset base" in md
    assert "Cheapest to its quality target: bert-torch (pytorch) on 8x A100" in md
    assert "Cheapest per million samples: bert-tf (tensorflow) on 4x v3-8 [gcp]" in md and "at $1.48." in md
    # The local run is not billed and predates result.json's host CPU count: not priced, and never "$0".
    assert "Cheapest per million words: not priced (a local run is not billed, and its result.json does not say " \
           "how many CPUs its host had)." in md
    wall = next(line for line in md.splitlines() if line.startswith(f"| {TRANSLATION} | complete"))
    assert wall.endswith("| not priced |")

    for name in ("throughput", "cost", "target", "wall"):
        png = (out / "plots" / f"{name}.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and f"plots/{name}.png" in md

    page = (out / "report.html").read_text()
    assert page.count("<img src='data:image/png;base64,") == 4
    assert not re.search(r"""(src|href)=['"](?!data:)""", page)  # self-contained: nothing fetched
    assert "<td class='incomplete'>incomplete</td>" in page


def test_report_on_a_run_missing_result_json_says_so_and_reports_the_rest(
    ernie_cmd: list[str], results: Path
) -> None:
    proc = _ernie(ernie_cmd, "report", INCOMPLETE, "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    assert "worker 0 (tpu-0): result.json is missing" in proc.stdout
    assert "worker 1 (tpu-1) was not collected" in proc.stdout
    assert "1 run(s), 0 complete" in proc.stdout
    md = (results / "report" / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith(f"| {INCOMPLETE} |"))
    assert "4.00 min" in row and "$6.44" in row  # time-to-train from the log, cost from the timeline
    assert "No complete run reached its quality target." in md


def test_report_indexes_incrementally_and_accumulates(ernie_cmd: list[str], results: Path, tmp_path: Path) -> None:
    first = _ernie(ernie_cmd, "report", BERT_TORCH, "--results", str(results))
    assert first.returncode == 0, first.stderr
    again = _ernie(ernie_cmd, "report", "--all", "--results", str(results))
    assert again.returncode == 0 and "4 run(s), 3 complete" in again.stdout
    shutil.rmtree(results / BERT_TF)  # runs stay in the database once indexed
    kept = _ernie(ernie_cmd, "report", "--all", "--results", str(results))
    assert "4 run(s), 3 complete" in kept.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "name the runs to report (RUN_ID ...) or pass --all"),
        (("--all", BERT_TF), "not both"),
        (("20990101-000000-nope",), "no run 20990101-000000-nope under"),
    ],
)
def test_report_bad_input_is_one_clear_line(
    ernie_cmd: list[str], results: Path, args: tuple[str, ...], message: str
) -> None:
    proc = _ernie(ernie_cmd, "report", *args, "--results", str(results))
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (results / "report").exists()


def test_report_all_on_an_empty_results_dir(ernie_cmd: list[str], tmp_path: Path) -> None:
    proc = _ernie(ernie_cmd, "report", "--all", "--results", str(tmp_path / "none"))
    assert proc.returncode == 2 and "no results directory" in proc.stderr
    assert not (tmp_path / "none").exists()
    (tmp_path / "empty").mkdir()
    proc = _ernie(ernie_cmd, "report", "--all", "--results", str(tmp_path / "empty"))
    assert proc.returncode == 2 and "no runs under" in proc.stderr


def test_report_md_shows_html_and_links_from_result_json_as_text(ernie_cmd: list[str], results: Path) -> None:
    """result.json is what a host wrote: in report.md its HTML is escaped (as in report.html), a link or an
    image in it stays text (a viewer would load the image), and a newline cannot start a heading."""
    path = results / BERT_TORCH / "gpu-0" / "result.json"
    result = json.loads(path.read_text())
    result["command"] = "<script>alert(1)</script> ![p](https://tracker.example/p.png) [go](javascript:x)"
    result["framework"] = "pytorch<img src=x onerror=alert(2)>\n# injected heading"
    path.write_text(json.dumps(result))
    proc = _ernie(ernie_cmd, "report", BERT_TORCH, "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    md = (results / "report" / "report.md").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md and "pytorch&lt;img src=x onerror=alert(2)&gt;" in md
    assert "<script" not in md and "<img" not in md
    assert "](https://tracker" not in md and "](javascript:" not in md
    assert "![p]\\(https://tracker.example/p.png)" in md  # shown as written: CommonMark drops the backslash
    assert not [line for line in md.splitlines() if line.startswith("# injected")]
    page = (results / "report" / "report.html").read_text()
    assert "<script" not in page and "&lt;script&gt;" in page


LOCAL_RUNS = Path(__file__).parents[1] / "data" / "local_runs"  # `ernie demo`'s own runs on this machine
LOCAL_TORCH, LOCAL_TF = "20261128-082700-bert-torch-db1a", "20261128-083016-bert-tf-a5fb"
LIKE_FOR_LIKE = {"processes": 1, "threads": {"intra_op": 1, "inter_op": 1}, "host_cpus": 2, "micro_batch": 32,
                 "data": {"name": "stdlib-s128-p20", "meta_sha256": "7e5d" * 16}}


@pytest.fixture
def local_results(tmp_path: Path) -> Path:
    dst = tmp_path / "local"
    for run in (LOCAL_TORCH, LOCAL_TF):
        shutil.copytree(LOCAL_RUNS / run, dst / run)
    return dst


def _set_result(results: Path, run: str, **fields) -> None:
    path = results / run / "local" / "result.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def _section(md: str, title: str) -> list[str]:
    return [line for line in md.split(f"## {title}\n")[1].split("\n## ")[0].splitlines() if line.startswith("| 2026")]


def test_the_framework_comparison_says_what_differed(ernie_cmd: list[str], local_results: Path) -> None:
    """The demo's recorded runs: PyTorch took bf16 (`auto` on an AVX512-BF16 CPU), TensorFlow fp32, and neither
    recorded its threads: the report gives the ratio and says it is not like for like."""
    proc = _ernie(ernie_cmd, "report", "--all", "--results", str(local_results))
    assert proc.returncode == 0, proc.stderr
    md = (local_results / "report" / "report.md").read_text()
    [row] = _section(md, "Frameworks compared")
    assert f"| {LOCAL_TORCH} | {LOCAL_TF} | tensorflow / pytorch | 2.28x |" in row  # 11.678 / 5.13
    assert "precision (fp32 vs bf16)" in row and "threads (not recorded)" in row
    assert "same global batch 32, seq 128" in md  # the answer says what did match
    assert "tensorflow / pytorch = 2.28x samples/s" in proc.stdout


def test_settings_recorded_alike_read_as_like_for_like(ernie_cmd: list[str], local_results: Path) -> None:
    _set_result(local_results, LOCAL_TORCH, precision="fp32", settings={**LIKE_FOR_LIKE, "compile": "eager"})
    _set_result(local_results, LOCAL_TF, settings={**LIKE_FOR_LIKE, "compile": "xla"})
    proc = _ernie(ernie_cmd, "report", "--all", "--results", str(local_results))
    assert proc.returncode == 0, proc.stderr
    md = (local_results / "report" / "report.md").read_text()
    [row] = _section(md, "Frameworks compared")
    assert ("| precision fp32, threads 1, processes 1, micro-batch 32, global batch 32, seq 128, data "
            "stdlib-s128-p20 [7e5d7e5d] | compile (xla vs eager) |") in row
    settings = {line.split(" | ")[0][2:]: line for line in _section(md, "Settings")}
    assert "| pytorch | fp32 | 1 / 1 | 1 | 32 / 32 | eager | stdlib-s128-p20 [7e5d7e5d] | 2 |" in settings[LOCAL_TORCH]
    assert "| tensorflow | fp32 | 1 / 1 | 1 | 32 / 32 | xla |" in settings[LOCAL_TF]


def test_local_runs_are_priced_as_an_equivalent_and_never_plotted_at_zero(
    ernie_cmd: list[str], local_results: Path
) -> None:
    # Recorded before result.json named the host's CPUs: not priced, so no cost plot; no target reached, so no
    # target plot. The report says why each is missing.
    proc = _ernie(ernie_cmd, "report", "--all", "--results", str(local_results))
    assert proc.returncode == 0, proc.stderr
    md = (local_results / "report" / "report.md").read_text()
    assert sorted(p.stem for p in (local_results / "report" / "plots").glob("*.png")) == ["throughput", "wall"]
    assert "plots/cost.png" not in md and "plots/target.png" not in md
    assert "Cost per million samples (or words): not drawn, no complete run is priced" in md
    assert "Time and cost to the quality target: not drawn, no complete run reached its quality target." in md
    assert "$0" not in md
    page = (local_results / "report" / "report.html").read_text()
    assert page.count("<img src='data:image/png;base64,") == 2

    from catalog.pricing import catalog

    hourly = catalog()[("aws", "c7i.large")].usd_per_hour
    for run in (LOCAL_TORCH, LOCAL_TF):
        _set_result(local_results, run, settings={"host_cpus": 2})
    proc = _ernie(ernie_cmd, "report", "--all", "--results", str(local_results))
    md = (local_results / "report" / "report.md").read_text()
    assert "(priced as an equivalent, not a bill: aws c7i.large (2 vCPUs) on demand in us-east-1" in md
    wall = next(line for line in md.splitlines() if line.startswith(f"| {LOCAL_TF} | complete"))
    assert wall.endswith(f"| ${hourly:,.2f}/h (equivalent) |")
    per_million = hourly / (11.678 * 3600) * 1e6  # the TF run's price per hour over its samples per hour
    row = next(line for line in md.splitlines() if line.startswith(f"| {LOCAL_TF} | bert-tf"))
    assert f"${per_million:,.2f}" in row
    assert (local_results / "report" / "plots" / "cost.png").read_bytes().startswith(PNG_MAGIC)
    from ernie.report.plots import cost_axis
    from ernie.results import read_run, summarize

    runs = [summarize(read_run(local_results / run)) for run in (LOCAL_TORCH, LOCAL_TF)]
    assert cost_axis(runs).endswith("(local runs: an equivalent instance's price, not a bill)")
    from dataclasses import replace

    assert cost_axis([replace(r, price_basis="bill") for r in runs]) == "$ per million {unit}"  # a cloud bill


def test_no_plot_is_drawn_whose_every_value_is_zero(local_results: Path) -> None:
    """A timeline of zeros (a run whose phases were not timed) draws no wall-time plot, as a cost of $0 draws no
    cost plot: the report says why instead of drawing empty bars."""
    from dataclasses import replace

    from ernie.report.plots import render_plots
    from ernie.results import read_run, summarize

    runs = [summarize(read_run(local_results / run)) for run in (LOCAL_TORCH, LOCAL_TF)]
    assert [p.name for p in render_plots(runs)[0]] == ["throughput", "wall"]
    zeros = [replace(r, wall_s={k: 0.0 for k in r.wall_s}, usd_per_million=0.0) for r in runs]
    plots, not_drawn = render_plots(zeros)
    assert [p.name for p in plots] == ["throughput"]
    assert "Where the wall time went: not drawn, no complete run has a timed phase in its timeline." in not_drawn
    assert any(line.startswith("Cost per million samples (or words): not drawn") for line in not_drawn)


CONFORMANT, OPEN_RUN = "20261201-100000-bert-torch-c105", "20261201-110000-bert-torch-0be1"


def conformance_results(tmp_path: Path) -> Path:
    """Two BERT runs of different recipes on 8x H100 (nearest: MLPerf v3.0 rows, target 0.720): one conformant
    (closed, nothing differs), one on ernie's own data."""
    from tests.unit.test_mlperf_scoring import CLOSED, OPEN

    results = tmp_path / "conformance"
    for run_id, block, recipe in ((CONFORMANT, CLOSED, "nvidia-dgxh100-8x8"), (OPEN_RUN, OPEN, "own data")):
        shutil.copytree(RUNS / BERT_TORCH, results / run_id)
        for name, edit in (("gpu-0/result.json", lambda r, b=block: r.update(mlperf=b, accelerator="H100")),
                           ("manifest.json", lambda m, i=run_id, rc=recipe: _h100_manifest(m, i, rc))):
            path = results / run_id / name
            data = json.loads(path.read_text())
            edit(data)
            path.write_text(json.dumps(data))
    return results


def _h100_manifest(manifest: dict, run_id: str, recipe: str) -> None:
    manifest.update(run_id=run_id)
    manifest["params"].update(recipe=recipe)
    manifest["inventory"]["hosts"][0].update(accelerator="H100")


def test_report_shows_a_conformant_and_a_non_conformant_run_side_by_side(ernie_cmd: list[str], tmp_path: Path) -> None:
    results = conformance_results(tmp_path)
    proc = _ernie(ernie_cmd, "report", "--all", "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    md = (results / "report" / "report.md").read_text()
    nearest = {line.split(" | ")[0][2:]: line for line in _section(md, "Against MLPerf Training")}
    assert set(nearest) == {CONFORMANT, OPEN_RUN}  # two configurations, each with its own row
    assert "| conformant (closed division) | MLPerf v3.0 NVIDIA DGX H100 (available on-premise) |" in nearest[CONFORMANT]
    assert "| no: runs: 1 of 10 |" in nearest[CONFORMANT]  # conformant, yet one run is not the rules' ten
    assert ("| not conformant: data: ernie-bert-v1 at seq 128 / 20 predictions, not the reference's Wikipedia "
            "2020-01-01 shards; eval set: ") in nearest[OPEN_RUN]
    assert "checkpoint: trained from random weights" in nearest[OPEN_RUN]
    assert "| no: the run is not conformant; runs: 1 of 10 |" in nearest[OPEN_RUN]
    assert "| yes |" not in md  # nothing here is like for like, and nothing claims to be
    page = (results / "report" / "report.html").read_text()
    assert "<td>conformant (closed division)</td>" in page
    assert "<td>not conformant: data: ernie-bert-v1 at seq 128 / 20 predictions" in page
