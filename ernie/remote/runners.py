"""Set up a host for its runner and start the workload detached; probe and stop it later.

Runners (the inventory's `runner`):
- `tpu-vm`: the host's python3; the workload's requirements go into a venv keyed by their content,
  created once and reused while they are unchanged.
- `docker`: the inventory's image, pulled at setup, run with `--gpus all`, host networking, and the
  bundle and output directories mounted at the same paths as on the host.
- `local`: this machine with the interpreter ernie runs under (its venv's bin first on PATH).

The command runs under a small wrapper, `run.sh`, started with `setsid`: its own session and process
group (the id is in the pid file), stdin from /dev/null and output to files, so it goes on when the
SSH session drops; it writes the command's exit status to `exit_code` when the command ends.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ernie.inventory import Runner
from ernie.remote.connect import RemoteError, Session
from ernie.remote.layout import Layout

SETUP_TIMEOUT_S = 3600.0  # a pip install or an image pull on a fresh host can take a while
STOP_GRACE_S = 10


@dataclass(frozen=True)
class RunSpec:
    """What every worker of one run starts; per-worker values come from the host."""

    run_id: str
    workload: str
    command: str
    runner: Runner
    num_workers: int
    coordinator_address: str
    image: str | None = None
    requirements: str | None = None  # file name in the bundle
    requirements_sha256: str | None = None


@dataclass(frozen=True)
class Started:
    """A worker's command is running detached."""

    host: str
    pgid: int


@dataclass(frozen=True)
class Probe:
    """A worker's state, read from its run directory."""

    host: str
    running: bool
    exit_code: int | None
    stdout_bytes: int
    stderr_bytes: int


def venv_dir(layout: Layout, spec: RunSpec) -> str | None:
    """tpu-vm: the venv for this requirements content, or None when the workload has no requirements."""
    if spec.runner != "tpu-vm" or not spec.requirements_sha256:
        return None
    return f"{layout.venvs}/{spec.requirements_sha256[:16]}"


def setup(s: Session, layout: Layout, spec: RunSpec) -> str:
    """Prepare the host for its runner; a one-line description of what was done."""
    if spec.runner == "docker":
        s.check(f"docker pull {shlex.quote(spec.image)}", f"docker pull {spec.image}", timeout=SETUP_TIMEOUT_S)
        return f"pulled {spec.image}"
    venv = venv_dir(layout, spec)
    if venv is None:
        return "no requirements"
    q, ready = shlex.quote(venv), shlex.quote(f"{venv}/.ernie-ready")
    req = shlex.quote(f"{layout.bundle}/{spec.requirements}")
    # --system-site-packages: TPU VM images ship the accelerator runtime in the system Python.
    script = (
        f"if [ -f {ready} ]; then echo reused; exit 0; fi; set -e; rm -rf {q}; "
        f"python3 -m venv --system-site-packages {q}; {q}/bin/python -m pip install -q -r {req}; "
        f"touch {ready}; echo created"
    )
    state = s.check(script, "creating the venv", timeout=SETUP_TIMEOUT_S).strip()
    return f"venv {venv} {state}"


def worker_env(spec: RunSpec, layout: Layout, worker: int) -> dict[str, str]:
    """The ERNIE_* environment of docs/workloads.md."""
    return {
        "ERNIE_RUN_ID": spec.run_id,
        "ERNIE_WORKER_INDEX": str(worker),
        "ERNIE_NUM_WORKERS": str(spec.num_workers),
        "ERNIE_COORDINATOR_ADDRESS": spec.coordinator_address,
        "ERNIE_OUTPUT_DIR": layout.output,
    }


def docker_argv(spec: RunSpec, layout: Layout, worker: int) -> list[str]:
    """The `docker run` command line (foreground: the detached wrapper owns it and records its exit)."""
    argv = ["docker", "run", "--rm", "--name", container_name(spec.run_id, worker), "--gpus", "all",
            "--network", "host", "--ipc", "host",  # NCCL between hosts; PyTorch's shared-memory loaders
            "-v", f"{layout.bundle}:{layout.bundle}", "-v", f"{layout.output}:{layout.output}",
            "-w", layout.bundle]
    for name in worker_env(spec, layout, worker):
        argv += ["-e", name]  # the value comes from the wrapper's environment
    return [*argv, spec.image or "", "bash", "-c", spec.command]


def container_name(run_id: str, worker: int) -> str:
    return f"ernie-{run_id}-w{worker}"


def render_run_script(spec: RunSpec, layout: Layout, worker: int) -> str:
    """The wrapper each worker runs detached: environment, the command, then its exit status to a file."""
    env = worker_env(spec, layout, worker)
    lines = [
        "#!/bin/sh",
        f"# ernie run {spec.run_id}, worker {worker}, runner {spec.runner}: started with setsid, so this",
        "# shell leads its own process group and outlives the SSH session that started it.",
        f"echo $$ > {shlex.quote(layout.pid_file)}",
        "trap 'true' TERM INT HUP  # outlive the command on `ernie stop`, long enough to record its status",
        *(f"export {k}={shlex.quote(v)}" for k, v in env.items()),
    ]
    venv = venv_dir(layout, spec)
    if venv:
        lines.append(f'export PATH={shlex.quote(venv + "/bin")}:"$PATH"')
    if spec.runner == "local":
        lines.append(f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"')
    lines.append(f"cd {shlex.quote(layout.bundle)} || exit 1")
    command = (shlex.join(docker_argv(spec, layout, worker)) if spec.runner == "docker"
               else f"bash -c {shlex.quote(spec.command)}")
    out = shlex.quote(layout.output)
    lines += [
        f"{command} </dev/null >{out}/stdout.log 2>{out}/stderr.log",
        "code=$?",
        f"echo $code > {out}/exit_code.tmp && mv {out}/exit_code.tmp {out}/exit_code",
    ]
    return "\n".join(lines) + "\n"


def start(s: Session, layout: Layout, spec: RunSpec) -> Started:
    """Write the wrapper and start it detached; return once its pid file names the process group."""
    run_dir, pid_file = shlex.quote(layout.run_dir), shlex.quote(layout.pid_file)
    script = render_run_script(spec, layout, s.host.worker)
    stale = f"{pid_file} {shlex.quote(layout.output + '/exit_code')}"  # a restarted run's earlier ones
    s.pipe_in(f"mkdir -p {shlex.quote(layout.output)} && rm -f {stale} && cat > {run_dir}/run.sh", script.encode())
    # --fork: setsid returns at once; the redirections leave no descriptor of the SSH channel open.
    s.check(f"cd {run_dir} && setsid --fork sh run.sh </dev/null >/dev/null 2>&1", "starting the workload")
    deadline = time.monotonic() + s.timeouts.connect
    while time.monotonic() < deadline:
        pid = s.sh(f"cat {pid_file} 2>/dev/null").stdout.strip()
        if pid.isdigit():
            return Started(host=s.host.name, pgid=int(pid))
        time.sleep(0.2)
    raise RemoteError(f"{s.host.name}: the workload did not start (no {layout.pid_file})")


def probe(s: Session, layout: Layout, timeout: float | None = None) -> Probe:
    """Running or not (its process group), exit code if written, log sizes: one command.

    A group that has ended with no exit_code was killed before its wrapper could write one.
    """
    out = shlex.quote(layout.output)
    result = s.check(
        f"pg=$(cat {shlex.quote(layout.pid_file)} 2>/dev/null); "
        f'if [ -n "$pg" ] && kill -0 -- "-$pg" 2>/dev/null; then echo running; else echo ended; fi; '
        f"cat {out}/exit_code 2>/dev/null || echo none; "
        f"stat -c %s {out}/stdout.log 2>/dev/null || echo 0; stat -c %s {out}/stderr.log 2>/dev/null || echo 0",
        "probing the workload", timeout=timeout)
    state, code, out_size, err_size = (result.split() + ["", "", "0", "0"])[:4]
    return Probe(host=s.host.name, running=state == "running",
                 exit_code=int(code) if code.lstrip("-").isdigit() else None,
                 stdout_bytes=int(out_size or 0), stderr_bytes=int(err_size or 0))


def stop(s: Session, layout: Layout, spec_runner: Runner, run_id: str) -> bool:
    """End the worker's process group (TERM, then KILL after a grace period); True if it was running."""
    pg = f"$(cat {shlex.quote(layout.pid_file)} 2>/dev/null)"
    script = (
        f'pg={pg}; [ -n "$pg" ] && kill -0 -- "-$pg" 2>/dev/null || {{ echo idle; exit 0; }}; '
        f'kill -TERM -- "-$pg"; i=0; while kill -0 -- "-$pg" 2>/dev/null && [ $i -lt {STOP_GRACE_S * 5} ]; '
        f'do sleep 0.2; i=$((i+1)); done; kill -KILL -- "-$pg" 2>/dev/null; echo stopped'
    )
    if spec_runner == "docker":
        script += f"; docker rm -f {shlex.quote(container_name(run_id, s.host.worker))} >/dev/null 2>&1; true"
    return s.check(script, "stopping the workload", timeout=STOP_GRACE_S + s.timeouts.command).startswith("stopped")
