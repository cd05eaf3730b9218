"""What `ernie report` and `ernie demo` print, read as a user's terminal shows it: run under a pseudo-terminal
80 columns wide (rich sizes itself from the terminal, as for a user), every line must fit and no table cell
may wrap: each row's cells stay on one line, whole."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import pytest
from rich.cells import cell_len

from tests.integration.test_demo import TRAIN
from tests.unit.test_results import BERT_TF, BERT_TORCH, INCOMPLETE, RUNS, TRANSLATION

COLUMNS = 80
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def run_in_terminal(argv: list[str], cwd: Path, columns: int = COLUMNS, timeout: float = 180) -> list[str]:
    """Run `argv` with a pseudo-terminal `columns` wide as its stdin, stdout and stderr; its lines as shown."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 60, columns, 0, 0))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
           "TERM": "xterm-256color", "HF_HUB_OFFLINE": "1"}  # no COLUMNS: the width comes from the terminal
    proc = subprocess.Popen(argv, cwd=cwd, stdin=follower, stdout=follower, stderr=follower, env=env,
                            start_new_session=True)
    os.close(follower)
    out = bytearray()
    try:
        while True:
            try:
                chunk = os.read(leader, 1 << 16)
            except OSError:  # EIO: every process holding the terminal has closed it
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=timeout) == 0, out.decode(errors="replace")[-3000:]
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    text = _ANSI.sub("", out.decode("utf-8", errors="replace")).replace("\r\n", "\n").replace("\r", "\n")
    return text.splitlines()


def _assert_fits(lines: list[str]) -> None:
    wide = [line for line in lines if cell_len(line.rstrip()) > COLUMNS]
    assert not wide, "lines wider than the terminal:\n" + "\n".join(wide)


def _section(lines: list[str], title: str) -> list[str]:
    """The lines under the title that starts a line, up to the next line that starts at column 0 (a title)."""
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start + 1, len(lines)) if lines[i][:1].strip()), len(lines))
    return lines[start + 1:end]


def _row(lines: list[str], first_cell: str) -> str:
    [row] = [line for line in lines if line.split()[:1] == [first_cell]]
    return row


@pytest.fixture
def results(tmp_path: Path) -> Path:
    dst = tmp_path / "results"
    shutil.copytree(RUNS, dst, ignore=shutil.ignore_patterns("README.md"))
    return dst


def test_report_summary_fits_80_columns_without_wrapped_cells(ernie_cmd: list[str], results: Path) -> None:
    lines = run_in_terminal([*ernie_cmd, "report", "--all", "--results", str(results)], cwd=results.parent)
    _assert_fits(lines)
    # The runs, by short id, each on one line with its throughput, eval and status whole.
    runs = _section(lines, "Runs ")
    assert _row(runs, "bert-torch-3fa2").split() == "bert-torch-3fa2 4,000 samples/s 0.722 / 0.72 reached complete".split()
    assert _row(runs, "translation-b21d").split()[1:] == ["5,200", "words/s", "11.560", "/", "25.0", "complete"]
    assert _row(runs, "bert-torch-9d04").split()[-1] == "incomplete"
    assert not any(r in line for line in lines for r in (BERT_TORCH, BERT_TF, TRANSLATION, INCOMPLETE))
    # The MLPerf comparison: the nearest row only (3 of the report's 18), its two lines whole.
    text = "\n".join(lines)
    mlperf = _section(lines, "Against MLPerf Training")
    assert [line.split()[0] for line in mlperf if line.split()[:1] and "-" in line.split()[0]] == [
        "bert-torch-3fa2", "bert-tf-7c1e", "translation-b21d"]
    assert sum("MLPerf v" in line for line in mlperf) == 3
    assert "each run's nearest row (all 18 in the report)" in text
    assert any(line.strip() == "MLPerf v0.7 Google TPU v3-32: 56.74 min" for line in lines)
    assert any(line.strip() == "MLPerf v0.6 NVIDIA DGX-1 (8x V100): 20.34 min" for line in lines)
    assert "TPU v3-2048" not in text and "scale difference" not in text
    assert "15.00 min to masked_lm_accuracy 0.72" in text
    assert "4 run(s), 3 complete." in text


def test_report_wide_prints_every_table(ernie_cmd: list[str], results: Path) -> None:
    lines = run_in_terminal([*ernie_cmd, "report", "--all", "--wide", "--results", str(results)],
                            cwd=results.parent, columns=250)
    text = "\n".join(lines)
    for title in ("Runs", "Settings", "Against MLPerf Training", "Wall time", "Provenance",
                  "Detail: against every MLPerf row"):
        assert re.search(rf"^\s*{re.escape(title)}\s*$", text, re.MULTILINE), title
    assert BERT_TORCH in text and "TPU v3-2048" in text


def test_demo_output_fits_80_columns(tmp_path: Path, repo: Path) -> None:
    """`ernie demo`'s own printing (the suite's outcomes, their notes, the summary) on a small suite of its own."""
    ok = tmp_path / "demo-ok"
    ok.mkdir()
    (ok / "workload.toml").write_text('name = "demo-ok"\ncommand = "python train.py"\n[params]\nsteps = 3\n'
                                      '[progress]\ntotal = "{steps}"\n')
    (ok / "train.py").write_text(TRAIN)
    broken = tmp_path / "demo-broken"
    broken.mkdir()
    (broken / "workload.toml").write_text(
        'name = "demo-broken"\ncommand = "echo a long reason for failing that goes on and on >&2; exit 3"\n')
    driver = textwrap.dedent(f"""
        from pathlib import Path
        from ernie.demo import DemoWorkload, run_demo
        from ernie.terminal import SafeConsole
        suite = (DemoWorkload({str(broken)!r}), DemoWorkload({str(ok)!r}))
        run_demo(Path({str(tmp_path / 'results')!r}), None, SafeConsole(), suite=suite,
                 serving=lambda console: "3 requests answered from the built layers")
    """)
    lines = run_in_terminal([sys.executable, "-c", driver], cwd=repo)
    _assert_fits(lines)
    suite = _section(lines, "ernie demo")  # the outcome table (progress lines also start with the workload's name)
    outcome = _row(suite, "demo-broken").split()
    assert outcome[1] == "failed" and outcome[-1].startswith("demo-broken-")  # piece, outcome, time, short run id
    assert _row(suite, "demo-ok").split()[1] == "complete"
    assert any(line.strip() == "serving: 3 requests answered from the built layers" for line in lines)
    assert any(line.startswith("  demo-broken: worker 0 (local) failed with exit code 3") for line in lines)


def test_the_summary_labels_a_conformant_and_a_non_conformant_run_in_80_columns(
        ernie_cmd: list[str], tmp_path: Path) -> None:
    from tests.integration.test_report import CONFORMANT, OPEN_RUN, conformance_results

    results = conformance_results(tmp_path)
    lines = run_in_terminal([*ernie_cmd, "report", "--all", "--results", str(results)], cwd=results.parent)
    _assert_fits(lines)
    mlperf = [line.strip() for line in _section(lines, "Against MLPerf Training")]
    ours, other = mlperf.index(_row(mlperf, CONFORMANT[16:])), mlperf.index(_row(mlperf, OPEN_RUN[16:]))
    assert mlperf[ours + 4:ours + 6] == ["conformant (closed division)", "not like for like: runs"]
    assert mlperf[other + 4:other + 6] == ["not conformant: data, eval set, checkpoint",
                                           "not like for like: conformance, runs"]
    assert "scored: 1 of 10 runs, mean: 15.00 min" in mlperf[ours + 1]
