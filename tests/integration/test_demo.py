"""`ernie demo`'s suite logic on small workloads of its own, through the real local run pipeline: a workload
that completes is reported, one that fails is reported as failed and the suite goes on, one that does not
exist is reported as unavailable, and the report of the suite's runs is written either way."""

from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path

from rich.console import Console

from ernie.demo import DEMO_BLEU_TARGET, DEMO_TRANSLATION_PAIRS, SUITE, DemoWorkload, run_demo
from ernie.errors import ErnieError
from ernie.workload import find_workload, resolve

# A workload in the docs/workloads.md contract, small enough to finish in a second: an MLPerf log written by
# mlperf-logging and a result.json on worker 0.
TRAIN = textwrap.dedent('''
    import json, os, sys, time
    from mlperf_logging import mllog
    out = os.environ["ERNIE_OUTPUT_DIR"]
    mllog.config(filename=os.path.join(out, "mlperf.log"))
    log = mllog.get_mllogger()
    log.event(key="submission_benchmark", value="bert")
    log.start(key="run_start")
    for step in range(1, 4):
        time.sleep(0.05)
        log.event(key="tracked_stats", value={"loss": 1.0 / step}, metadata={"step": step})
    log.event(key="eval_accuracy", value=0.5, metadata={"epoch_num": 1})
    log.end(key="run_stop", metadata={"status": "aborted"})
    result = {"workload": "demo-ok", "framework": "pytorch", "model": {"preset": "tiny", "hidden": 8, "layers": 1},
              "accelerator": "cpu", "chips": 1, "hosts": 1, "global_batch_size": 4, "seq_len": 16,
              "precision": "fp32", "steps": 3, "samples_per_s": 80.0, "flops_per_sample": 1.0e6,
              "peak_flops_per_device": None, "mfu": None,
              "eval": {"metric": "masked_lm_accuracy", "value": 0.5, "target": 0.72, "reached": False},
              "time_to_target_s": None, "versions": {"python": sys.version.split()[0]}, "command": "python train.py"}
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f)
''')


def _workload(root: Path, name: str, command: str, script: str | None = None) -> Path:
    d = root / name
    d.mkdir()
    (d / "workload.toml").write_text(
        f'name = "{name}"\ncommand = "{command}"\n[params]\nsteps = 3\n[progress]\ntotal = "{{steps}}"\n')
    if script:
        (d / "train.py").write_text(script)
    return d


def test_demo_reports_each_piece_and_goes_on_after_a_failure(tmp_path: Path) -> None:
    ok = _workload(tmp_path, "demo-ok", "python train.py", TRAIN)
    broken = _workload(tmp_path, "demo-broken", "echo about to fail >&2; exit 3")
    results = tmp_path / "results"
    buf = io.StringIO()
    served = []

    def serving(console: Console) -> str:
        served.append(True)
        return "3 requests answered"

    suite = (DemoWorkload(str(broken)), DemoWorkload(str(tmp_path / "no-such-workload")), DemoWorkload(str(ok)))
    code = run_demo(results, None, Console(file=buf, width=200), suite=suite, serving=serving)
    text = buf.getvalue()

    assert code == 1  # not every piece completed
    assert served == [True]  # the suite went on past the failure and the missing workload
    outcomes = text.split("ernie demo")[-1].split("Runs (")[0]
    rows = {line.split()[0]: line.split()[1:] for line in outcomes.splitlines() if len(line.split()) >= 4}
    assert rows["demo-broken"][0] == "failed" and rows["demo-broken"][3].startswith("demo-broken-")
    assert rows[str(tmp_path / "no-such-workload")][0] == "unavailable"
    assert "no-such-workload: not available" in text
    assert rows["demo-ok"][0] == "complete" and rows["serving"][0] == "complete"
    assert "serving: 3 requests answered" in outcomes  # the notes follow the table, one paragraph each
    assert "demo-broken: worker 0 (local) failed with exit code 3" in outcomes

    md = (results / "report" / "report.md").read_text()
    run_rows = [line for line in md.splitlines() if "| demo-" in line and line.startswith("| 2")]
    assert any("| demo-ok |" in r and "| complete |" in r and "80.0 samples/s" in r for r in run_rows)
    assert any("| demo-broken |" in r and "| failed |" in r for r in run_rows)
    assert "failed with exit code 3" in md
    assert "Against MLPerf Training" in text  # the comparison table, printed at the end


def test_demo_reports_a_failing_serving_check_and_still_reports(tmp_path: Path) -> None:
    ok = _workload(tmp_path, "demo-ok", "python train.py", TRAIN)
    buf = io.StringIO()

    def serving(console: Console) -> str:
        raise ErnieError("the tabular layers could not be built: pip said no")

    code = run_demo(tmp_path / "results", tmp_path / "out", Console(file=buf, width=200),
                    suite=(DemoWorkload(str(ok)),), serving=serving)
    assert code == 1
    assert "the tabular layers could not be built" in buf.getvalue()
    assert (tmp_path / "out" / "report.html").is_file()


def test_the_suite_names_built_in_workloads_with_valid_parameters() -> None:
    """The demo's --set overrides must stay valid as the workloads evolve: resolve each as `ernie run` would."""
    by_name = {item.workload: item for item in SUITE}
    for name in ("bert-torch", "bert-tf"):
        resolved = resolve(find_workload(name), list(by_name[name].sets))
        assert resolved.params["preset"] == "tiny" and resolved.params["text"] == "stdlib"
        assert resolved.progress_total == resolved.params["max_steps"]
    translation = resolve(find_workload("translation"), list(by_name["translation"].sets))
    assert translation.params["recipe"] == "synthetic"
    assert float(translation.params["target_bleu"]) == DEMO_BLEU_TARGET  # a target the demo reaches
    # ... on its own corpus: a directory prepared with another pair count (the shared default) is reused as it is.
    assert int(translation.params["synthetic_pairs"]) == DEMO_TRANSLATION_PAIRS
    assert translation.params["data_dir"].endswith(f"-{DEMO_TRANSLATION_PAIRS}-pairs")
    assert translation.params["data_dir"] != resolve(find_workload("translation"), []).params["data_dir"]


def test_the_two_bert_frameworks_run_with_the_same_settings() -> None:
    """Like for like: what moves throughput (precision, threads, batch, preset, data) is the same for both."""
    by_name = {item.workload: item for item in SUITE}
    params = [resolve(find_workload(n), list(by_name[n].sets)).params for n in ("bert-torch", "bert-tf")]
    for key in ("preset", "text", "seq_len", "max_predictions", "global_batch", "max_steps", "eval_every"):
        assert params[0][key] == params[1][key], key
    assert params[0]["precision"] == params[1]["precision"] == "fp32"  # not `auto`: it differs by framework
    assert params[0]["threads"] == params[1]["threads"] == 1


def test_the_demos_translation_reaches_its_target_and_the_report_shows_the_time(tmp_path: Path) -> None:
    """Slow (a minute or two of CPU): the demo's translation piece as `ernie demo` runs it reaches the demo's BLEU
    target within its epochs, and the report says how long it took and draws the time-to-target plot."""
    [translation] = [item for item in SUITE if item.workload == "translation"]
    buf = io.StringIO()
    code = run_demo(tmp_path / "results", None, Console(file=buf, width=100), suite=(translation,),
                    serving=lambda console: "skipped")
    assert code == 0, buf.getvalue()[-3000:]
    report = tmp_path / "results" / "report"
    md = (report / "report.md").read_text()
    # Priced at the declared equivalent of this machine's CPUs (result.json's settings.host_cpus), like BERT's.
    from ernie.results.pricing import CPU_EQUIVALENTS
    if len(os.sched_getaffinity(0)) in CPU_EQUIVALENTS:
        assert "Cheapest to its quality target: " in md and "(priced as an equivalent, not a bill: " in md
    else:
        assert f"to bleu {DEMO_BLEU_TARGET} (not priced)." in md  # "Fastest to its quality target: ..., N min to ..."
    assert "No complete run reached its quality target." not in md
    assert (report / "plots" / "target.png").is_file()
    assert f" / {DEMO_BLEU_TARGET} reached" in buf.getvalue()  # the 80-column summary's eval column
