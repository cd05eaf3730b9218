"""workload.toml (docs/workloads.md): finding, validating, resolving; and what a worker is started with."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from ernie.errors import ErnieError
from ernie.remote.layout import Layout
from ernie.inventory import ContainerOptions
from ernie.remote.runners import RunSpec, derived_image, docker_argv, render_run_script
from ernie.remote.stream import progress_step
from ernie.workload import find_workload, load_workload, resolve

ECHO = Path(__file__).parents[1] / "workloads" / "echo"


def write(tmp_path: Path, text: str, name: str = "workload.toml") -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path / name


def test_a_directory_or_a_spec_file_is_a_workload(tmp_path: Path) -> None:
    by_dir = find_workload(str(ECHO))
    assert by_dir.name == "echo-test" and by_dir.directory == ECHO.resolve()
    assert find_workload(str(ECHO / "workload.toml")) == by_dir
    write(tmp_path, 'name = "b"\ncommand = "true"\n', "torch.workload.toml")
    assert find_workload(str(tmp_path / "torch.workload.toml")).directory == tmp_path.resolve()


def test_builtin_workloads_are_found_by_name(tmp_path: Path) -> None:
    (tmp_path / "bert").mkdir()
    write(tmp_path / "bert", 'name = "bert-torch"\ncommand = "python train_torch.py"\n', "torch.workload.toml")
    write(tmp_path / "bert", 'name = "bert-tf"\ncommand = "python train_tf.py"\n', "tf.workload.toml")
    assert find_workload("bert-tf", root=tmp_path).spec_file.name == "tf.workload.toml"
    with pytest.raises(ErnieError, match=r"unknown workload 'bert-jax'.*built-in workloads: bert-tf, bert-torch"):
        find_workload("bert-jax", root=tmp_path)


def test_only_name_and_command_are_required_and_defaults_are_sensible(tmp_path: Path) -> None:
    w = load_workload(write(tmp_path, 'name = "tiny"\ncommand = "echo hi"\n'))
    assert w.collect_paths == ("**/*",) and w.requirements is None and w.progress_regex is None
    r = resolve(w, [])
    assert r.command == "echo hi" and r.progress_total is None


@pytest.mark.parametrize(("text", "message"), [
    ('command = "x"\n', "name: required"),
    ('name = "x"\n', "command: required"),
    ('name = "a b"\ncommand = "x"\n', "name: 'a b' is not a plain name"),
    ('name = "x"\ncommand = "x"\ncolect = {}\n', "colect: unknown key"),
    ('name = "x"\ncommand = "run {steps}"\n', r"command: \{steps\} has no default in \[params\]"),
    ('name = "x"\ncommand = "x"\n[setup]\nrequirements = "nope.txt"\n', "setup.requirements: nope.txt is not a file"),
    ('name = "x"\ncommand = "x"\n[progress]\nregex = "step \\\\d+"\n', "progress.regex: needs a group"),
    ('name = "x"\ncommand = "x"\n[collect]\npaths = []\n',
     r"collect.paths: expected a non-empty list of globs under \$ERNIE_OUTPUT_DIR, got \[\]"),
    ('name = "x"\ncommand = "x"\nsetup = 3\n', r"setup: expected a table \(an object in JSON\), got 3"),
    ('name = "x"\ncommand = "x"\n[params]\nd = 2024-01-01\n',
     r"params.d: datetime.date\(2024, 1, 1\) \(a date\) is not accepted; write it as a quoted string"),
    ('name = "x"\ncommand = "x\n', "not valid TOML"),
])
def test_bad_specs_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ErnieError, match=message):
        load_workload(write(tmp_path, text))


def test_set_overrides_are_typed_quoted_and_checked() -> None:
    w = load_workload(ECHO / "workload.toml")
    r = resolve(w, ["steps=7", "sleep=0.5"])
    assert r.params == {"steps": 7, "sleep": 0.5, "fail_worker": -1}
    assert r.command == "python3 work.py --steps 7 --sleep 0.5 --fail-worker -1" and r.progress_total == 7
    with pytest.raises(ErnieError, match=r"--set stepz: echo-test has no parameter 'stepz' \(its parameters: "):
        resolve(w, ["stepz=3"])
    with pytest.raises(ErnieError, match="--set steps=many: expected a int like the default 5"):
        resolve(w, ["steps=many"])
    with pytest.raises(ErnieError, match="expected key=value"):
        resolve(w, ["steps"])


def test_placeholder_values_are_shell_quoted_and_shell_braces_left_alone(tmp_path: Path) -> None:
    w = load_workload(write(tmp_path, 'name = "q"\ncommand = "echo {msg} ${HOME} > $ERNIE_OUTPUT_DIR/x"\n'
                                      '[params]\nmsg = "hi"\n'))
    r = resolve(w, ["msg=a; rm -rf /"])
    assert r.command == "echo 'a; rm -rf /' ${HOME} > $ERNIE_OUTPUT_DIR/x"


def test_progress_comes_from_mllog_tracked_stats_or_the_workloads_regex() -> None:
    line = ':::MLLOG {"namespace": "", "time_ms": 1, "event_type": "POINT_IN_TIME", "key": "tracked_stats", ' \
           '"value": {"loss": 2.1}, "metadata": {"step": 17}}'
    assert progress_step(line, None) == 17
    assert progress_step(line.replace("tracked_stats", "eval_accuracy"), None) is None
    assert progress_step(":::MLLOG {not json", None) is None
    import re

    rx = re.compile(r"\| num_updates (\d+)")
    assert progress_step("epoch 001 | loss 9.1 | num_updates 250 | lr 5e-4", rx) == 250
    assert progress_step(line, rx) is None


SPEC = RunSpec(run_id="20261128-081500-echo-test-3fa2", workload="echo-test", command="python3 work.py --steps 3",
               runner="docker", num_workers=3, coordinator_address="10.0.0.10",
               image="763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-gpu-py311")
LAYOUT = Layout(base="/home/ernie/ernie", workload="echo-test", run_id=SPEC.run_id)


def test_docker_command_line() -> None:
    argv = docker_argv(SPEC, LAYOUT, worker=2)
    bundle, out = "/home/ernie/ernie/bundles/echo-test", f"/home/ernie/ernie/runs/{SPEC.run_id}/output"
    assert argv[:4] == ["docker", "run", "--rm", "--name"] and argv[4] == f"ernie-{SPEC.run_id}-w2"
    assert argv[argv.index("--gpus") + 1] == "all"
    assert ["-v", f"{bundle}:{bundle}"] == argv[argv.index("-v"):argv.index("-v") + 2]
    assert f"{out}:{out}" in argv and argv[argv.index("-w") + 1] == bundle
    envs = [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]
    assert envs == ["ERNIE_RUN_ID", "ERNIE_WORKER_INDEX", "ERNIE_NUM_WORKERS", "ERNIE_COORDINATOR_ADDRESS",
                    "ERNIE_OUTPUT_DIR"]
    # The command is a mounted file: `bash FILE` reads the same through an entrypoint's `eval "$@"`.
    assert argv[-3:] == [SPEC.image, "bash", "/ernie-command.sh"]
    assert f"/home/ernie/ernie/runs/{SPEC.run_id}/command.sh:/ernie-command.sh:ro" in argv
    assert "--device" not in argv and "--ulimit" not in argv


def test_efa_container_options_and_the_derived_image_reach_the_command_line() -> None:
    spec = replace(SPEC, requirements="requirements.txt", requirements_sha256="ab" * 32,
                   container=ContainerOptions(devices=("/dev/infiniband/uverbs0",), ulimits=("memlock=-1:-1",),
                                              env=(("FI_EFA_FORK_SAFE", "1"), ("FI_PROVIDER", "efa"))))
    argv = docker_argv(spec, LAYOUT, worker=0)
    joined = shlex.join(argv)
    assert "--device /dev/infiniband/uverbs0 --ulimit memlock=-1:-1" in joined
    assert "-e FI_EFA_FORK_SAFE=1 -e FI_PROVIDER=efa" in joined
    derived = derived_image(spec)
    assert derived.startswith("ernie-derived:") and argv[-3] == derived
    # Another image or other requirements: another derived image.
    assert derived_image(replace(spec, requirements_sha256="cd" * 32)) != derived
    assert derived_image(replace(spec, image=spec.image + "-b")) != derived
    assert derived_image(replace(spec, requirements=None, requirements_sha256=None)) is None


def test_run_script_writes_the_docker_command_file_verbatim(tmp_path: Path) -> None:
    command = "python3 probe.py --marker 'two words; and $HOME' --x \\n"
    spec = replace(SPEC, command=command)
    layout = Layout(base=str(tmp_path), workload="echo-test", run_id=SPEC.run_id)
    script = render_run_script(spec, layout, worker=0)
    line = next(l for l in script.splitlines() if "command.sh" in l and l.startswith("printf"))
    Path(layout.run_dir).mkdir(parents=True)
    subprocess.run(["sh", "-c", line], check=True)
    assert Path(layout.run_dir, "command.sh").read_text() == command + "\n"


def test_run_script_is_valid_shell_that_records_the_exit_code(tmp_path: Path) -> None:
    spec = RunSpec(run_id="r1", workload="w", command="echo out; echo err >&2; echo $ERNIE_WORKER_INDEX; exit 7",
                   runner="tpu-vm", num_workers=2, coordinator_address="10.0.0.10")
    layout = Layout(base=str(tmp_path / "base dir"), workload="w", run_id="r1")
    script = render_run_script(spec, layout, worker=1)
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    Path(layout.bundle).mkdir(parents=True)
    Path(layout.output).mkdir(parents=True)
    subprocess.run(["sh", "-c", script], check=True, timeout=30)
    out = Path(layout.output)
    assert (out / "exit_code").read_text().strip() == "7"
    assert (out / "stdout.log").read_text() == "out\n1\n" and (out / "stderr.log").read_text() == "err\n"
    assert Path(layout.pid_file).read_text().strip().isdigit()
    assert f"export ERNIE_OUTPUT_DIR={shlex.quote(layout.output)}" in script
