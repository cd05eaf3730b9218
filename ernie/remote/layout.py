"""Where ernie keeps things on a host, under the session's base directory (~/ernie over SSH).

    bundles/WORKLOAD/      the pushed workload directory, kept between runs so a re-push sends only changes
    venvs/HASH/            tpu-vm: the venv for one requirements file's content, reused while it is unchanged
    runs/RUN_ID/run.sh     the detached wrapper; runs/RUN_ID/pid holds its process group id
    runs/RUN_ID/output/    $ERNIE_OUTPUT_DIR: stdout.log, stderr.log, exit_code and the workload's files
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The workload and the run id become directories here and text in run.sh: plain names only, matched whole.
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class Layout:
    """Paths for one run on one host."""

    base: str
    workload: str
    run_id: str

    def __post_init__(self) -> None:
        for key in ("workload", "run_id"):
            value = getattr(self, key)
            if not isinstance(value, str) or not _PLAIN.fullmatch(value):
                raise ValueError(f"Layout.{key}: {value!r} is not a plain name (letters, digits, . _ -)")

    @property
    def bundle(self) -> str:
        return f"{self.base}/bundles/{self.workload}"

    @property
    def venvs(self) -> str:
        return f"{self.base}/venvs"

    @property
    def run_dir(self) -> str:
        return f"{self.base}/runs/{self.run_id}"

    @property
    def output(self) -> str:
        return f"{self.run_dir}/output"

    @property
    def pid_file(self) -> str:
        return f"{self.run_dir}/pid"
