"""workloads/bert/data.sh, the one data rule of run_torch.sh and run_tf.sh: a trainer given its own --data-dir
(MLPerf's shards already on the host) gets nothing prepared, and prepared data is reused, not made again.
`python` is `false` here, so any preparation the rule attempted would fail the script."""

from __future__ import annotations

import subprocess
from pathlib import Path

BERT = Path(__file__).resolve().parents[2] / "workloads" / "bert"


def data_flags(*args: str, data_root: Path) -> subprocess.CompletedProcess[str]:
    script = 'set -euo pipefail; source ./data.sh; python=false; data_flags "$@"; printf "%s\\n" "${data_flags[@]}"'
    return subprocess.run(["bash", "-c", script, "data.sh", *args], cwd=BERT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "ERNIE_BERT_DATA": str(data_root)}, timeout=30)


def test_a_trainer_data_dir_prepares_nothing(tmp_path: Path) -> None:
    for flag in (["--data-dir", "/mlperf/hdf5"], ["--data-dir=/mlperf/hdf5"]):
        done = data_flags("--max-steps", "3", *flag, data_root=tmp_path)
        assert done.returncode == 0 and done.stdout.strip() == "", done.stderr
    assert not any(tmp_path.iterdir())


def test_prepared_data_is_reused(tmp_path: Path) -> None:
    prepared = tmp_path / "stdlib-s128-p20"
    prepared.mkdir()
    (prepared / "meta.json").write_text("{}")
    done = data_flags("--max-steps", "3", data_root=tmp_path)
    assert done.returncode == 0 and done.stdout.split() == ["--data-dir", str(prepared)], done.stderr


def test_missing_data_is_prepared(tmp_path: Path) -> None:
    """Without a --data-dir or prepared data the rule runs the preparation (here `false`, so it fails)."""
    done = data_flags("--max-steps", "3", data_root=tmp_path)
    assert done.returncode != 0
