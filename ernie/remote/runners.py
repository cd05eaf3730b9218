"""Set up a host for its runner and start the workload detached; probe and stop it later.

Runners (the inventory's `runner`):
- `tpu-vm`: the host's python3; the workload's requirements go into a venv keyed by their content,
  created once and reused while they are unchanged.
- `docker`: the inventory's image, pulled at setup by the login user (signed in to its registry first when
  the inventory says how), run with `--gpus all`, host networking, the stack's container options (EFA devices,
  memlock, NCCL's libfabric settings), and the bundle and output directories mounted at the same paths as on
  the host. A workload's requirements go into a derived image (the image plus `pip install -r`), tagged by the
  image and the requirements' content, built once per host and reused while both are unchanged. The image's
  entrypoint is kept (the PyTorch DLC's prepares CUDA compatibility and ends in `eval "$@"`, which would split
  a `bash -c "CMD"` again): the command goes into `command.sh` and the container runs `bash /ernie-command.sh`,
  words that read the same evaluated or not.
- `local`: this machine with the interpreter ernie runs under (its venv's bin first on PATH).

The command runs under a small wrapper, `run.sh`, started with `setsid`: its own session and process
group (the id is in the pid file), stdin from /dev/null and output to files, so it goes on when the
SSH session drops; it writes the command's exit status to `exit_code` when the command ends.
"""

from __future__ import annotations

import hashlib
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ernie.inventory import Bootstrap, ContainerOptions, RegistryLogin, Runner
from ernie.remote.connect import RemoteError, Session
from ernie.remote.layout import Layout
from ernie.rundir import EXIT_CODE, STDERR_LOG, STDOUT_LOG

SETUP_TIMEOUT_S = 3600.0  # a pip install or an image pull on a fresh host can take a while
STOP_GRACE_S = 10
BOOTSTRAP_POLL_S = 5.0
BOOTSTRAP_LOG_LINES = 40
COMMAND_IN_CONTAINER = "/ernie-command.sh"
DERIVED_REPOSITORY = "ernie-derived"


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
    registry_login: RegistryLogin | None = None
    container: ContainerOptions = field(default_factory=ContainerOptions)


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
        return _setup_docker(s, layout, spec)
    venv = venv_dir(layout, spec)
    if venv is None:
        return "no requirements"
    req = shlex.quote(f"{layout.bundle}/{spec.requirements}")
    state = s.check(render_venv_script(venv, req), "creating the venv", timeout=SETUP_TIMEOUT_S).strip()
    return f"venv {venv} {state.splitlines()[-1] if state else ''}"


def render_venv_script(venv: str, requirements: str) -> str:
    """tpu-vm: the venv for one requirements content, created once. TPU VM images may lack python3-venv
    (`python3 -m venv` then fails for want of ensurepip): it is installed first, with apt's lock waited for."""
    q, ready = shlex.quote(venv), shlex.quote(f"{venv}/.ernie-ready")
    # --system-site-packages: TPU VM images ship the accelerator runtime in the system Python.
    return (
        f"if [ -f {ready} ]; then echo reused; exit 0; fi; set -e; "
        "if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then "
        "echo 'python3-venv is missing: installing it' >&2; "
        "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq; "
        "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3-venv; "
        "echo 'installed python3-venv'; fi; "
        f"rm -rf {q}; python3 -m venv --system-site-packages {q}; {q}/bin/python -m pip install -q -r {requirements}; "
        f"touch {ready}; echo created"
    )


def derived_image(spec: RunSpec) -> str | None:
    """docker: the tag of the image plus the workload's requirements, or None when it has none."""
    if not spec.requirements_sha256 or not spec.image:
        return None
    key = hashlib.sha256(f"{spec.image}\n{spec.requirements_sha256}".encode()).hexdigest()[:16]
    return f"{DERIVED_REPOSITORY}:{key}"


def run_image(spec: RunSpec) -> str:
    """The image a docker worker runs: the derived one when the workload has requirements."""
    return derived_image(spec) or spec.image or ""


def render_dockerfile(image: str) -> str:
    """The derived image: the stack's image plus the workload's requirements (its entrypoint kept)."""
    return (f"FROM {image}\n"
            "COPY requirements.txt /tmp/ernie-requirements.txt\n"
            "RUN python3 -m pip install --no-cache-dir -r /tmp/ernie-requirements.txt "
            "&& rm /tmp/ernie-requirements.txt\n")


def _setup_docker(s: Session, layout: Layout, spec: RunSpec) -> str:
    """Sign in (as the login user), pull unless the host has the image, build the derived image once."""
    image = shlex.quote(spec.image or "")
    done = []
    if spec.registry_login is not None:
        login = spec.registry_login
        # The password goes from the command to docker's stdin, never onto a command line.
        s.check(f"password=$({login.password_command}) || exit 1; printf '%s\\n' \"$password\" | "
                f"docker login --username {shlex.quote(login.username)} --password-stdin "
                f"{shlex.quote(login.registry)} >/dev/null",
                f"signing in to {login.registry} as the login user", timeout=SETUP_TIMEOUT_S)
        done.append(f"signed in to {login.registry}")
    pulled = s.check(f"if docker image inspect {image} >/dev/null 2>&1; then echo present; "
                     f"else docker pull -q {image} >/dev/null && echo pulled; fi",
                     f"docker pull {spec.image}", timeout=SETUP_TIMEOUT_S).strip().splitlines()[-1]
    done.append(f"{pulled} {spec.image}")
    derived = derived_image(spec)
    if derived is not None:
        context = shlex.quote(f"{layout.base}/images/{derived.split(':', 1)[1]}")
        req = shlex.quote(f"{layout.bundle}/{spec.requirements}")
        state = s.check(
            f"if docker image inspect {derived} >/dev/null 2>&1; then echo reused; exit 0; fi; set -e; "
            f"mkdir -p {context}; cp {req} {context}/requirements.txt; "
            f"printf '%s' {shlex.quote(render_dockerfile(spec.image or ''))} > {context}/Dockerfile; "
            # The build's log goes to stderr: a failed pip install shows in ernie's error.
            f"docker build --network host -t {derived} {context} >&2; echo built",
            f"building {derived} ({spec.image} plus {spec.requirements})", timeout=SETUP_TIMEOUT_S)
        done.append(f"{state.strip().splitlines()[-1]} {derived}")
    return "; ".join(done)


def wait_bootstrap(s: Session, bootstrap: Bootstrap) -> str:
    """Wait until the host's boot script says it is done; RemoteError with its log's tail when it failed or ran
    past its deadline (nothing is set up on a host still installing, pulling or logging in as root)."""
    done = _remote_path(bootstrap.done_file)
    failed = _remote_path(bootstrap.failed_file) if bootstrap.failed_file else "/nonexistent/ernie"
    deadline = time.monotonic() + bootstrap.timeout_s
    started = time.monotonic()
    while True:
        state = s.check(f"if [ -e {done} ]; then echo done; elif [ -e {failed} ]; then echo failed; "
                        "else echo waiting; fi", "waiting for the host's bootstrap").strip()
        if state == "done":
            return f"bootstrap done ({time.monotonic() - started:.0f}s waited)"
        if state == "failed" or time.monotonic() >= deadline:
            why = "its boot script failed" if state == "failed" else \
                f"its boot script did not finish within {bootstrap.timeout_s:.0f}s"
            raise RemoteError(f"{s.host.name}: {why} (no {bootstrap.done_file}); last lines of "
                              f"{bootstrap.log_file or 'its log'}:\n{_log_tail(s, bootstrap.log_file)}")
        time.sleep(min(BOOTSTRAP_POLL_S, max(0.0, deadline - time.monotonic())))


def _remote_path(path: str) -> str:
    """A path for the remote shell, quoted; `~/` is the login user's home."""
    return f'"$HOME"/{shlex.quote(path[2:])}' if path.startswith("~/") else shlex.quote(path)


def _log_tail(s: Session, log_file: str | None) -> str:
    files = " ".join(_remote_path(f) for f in (log_file, "/var/log/cloud-init-output.log") if f)
    result = s.sh(f"for f in {files}; do [ -r \"$f\" ] && {{ echo \"== $f\"; tail -n {BOOTSTRAP_LOG_LINES} \"$f\"; }}; "
                  "done; true")
    return (result.stdout or "").strip() or "(no log readable)"


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
            "-v", f"{command_file(layout)}:{COMMAND_IN_CONTAINER}:ro", "-w", layout.bundle]
    for device in spec.container.devices:
        argv += ["--device", device]
    for ulimit in spec.container.ulimits:
        argv += ["--ulimit", ulimit]
    for name, value in spec.container.env:
        argv += ["-e", f"{name}={value}"]
    for name in worker_env(spec, layout, worker):
        argv += ["-e", name]  # the value comes from the wrapper's environment
    # Two plain words: the same whether the entrypoint runs them or evaluates them again (`eval "$@"`).
    return [*argv, run_image(spec), "bash", COMMAND_IN_CONTAINER]


def command_file(layout: Layout) -> str:
    """The run's command as a bash script (docker runner), mounted into the container."""
    return f"{layout.run_dir}/command.sh"


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
    if spec.runner == "docker":
        lines.append(f"printf '%s\\n' {shlex.quote(spec.command)} > {shlex.quote(command_file(layout))} || exit 1")
    command = (shlex.join(docker_argv(spec, layout, worker)) if spec.runner == "docker"
               else f"bash -c {shlex.quote(spec.command)}")
    out = shlex.quote(layout.output)
    lines += [
        f"{command} </dev/null >{out}/{STDOUT_LOG} 2>{out}/{STDERR_LOG}",
        "code=$?",
        f"echo $code > {out}/{EXIT_CODE}.tmp && mv {out}/{EXIT_CODE}.tmp {out}/{EXIT_CODE}",
    ]
    return "\n".join(lines) + "\n"


def start(s: Session, layout: Layout, spec: RunSpec) -> Started:
    """Write the wrapper and start it detached; return once its pid file names the process group."""
    run_dir, pid_file = shlex.quote(layout.run_dir), shlex.quote(layout.pid_file)
    script = render_run_script(spec, layout, s.host.worker)
    stale = f"{pid_file} {shlex.quote(f'{layout.output}/{EXIT_CODE}')}"  # a restarted run's earlier ones
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
        f"cat {out}/{EXIT_CODE} 2>/dev/null || echo none; "
        f"stat -c %s {out}/{STDOUT_LOG} 2>/dev/null || echo 0; stat -c %s {out}/{STDERR_LOG} 2>/dev/null || echo 0",
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
