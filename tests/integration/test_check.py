"""`ernie check` as a user runs it: plans from the committed stack files, and every bad config refused clearly."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def stack_file(tmp_path: Path, base: str, changes: dict[str, Any]) -> Path:
    """A copy of Pulumi.<base>.yaml with some values changed (None removes the key)."""
    config = yaml.safe_load((REPO / f"Pulumi.{base}.yaml").read_text())["config"]
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path = tmp_path / f"{base}-changed.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def ernie_check(ernie_cmd: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ernie_cmd, "check", *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(REPO)}, cwd=REPO)


@pytest.mark.parametrize(("stack", "expected"), [
    ("gcp", ["gcp:tpu/v2Vm:V2Vm", "workers: 4 (ernie-gcp-w0, ernie-gcp-w1, ernie-gcp-w2, ernie-gcp-w3)",
             "cost: 51.52 USD/hour", "guardrail findings: none"]),
    ("aws", ["aws:ec2/instance:Instance", "workers: 1 (gpu-0)", "cost: 1.03 USD/hour", "guardrail findings: none"]),
])
def test_committed_stacks_print_their_plan(ernie_cmd, stack, expected) -> None:
    result = ernie_check(ernie_cmd, "-s", stack)
    assert result.returncode == 0, result.stderr
    for text in expected:
        assert text in result.stdout
    assert "SSH private key kept as a Pulumi secret: True" in result.stdout


# (stack file, changes, what the one-line error must name: the key, the value and the accepted values)
BAD_CONFIGS = {
    "unknown TPU type": ("gcp", {"ernie:tpuType": "v9-32"}, ["ernie:tpuType", "'v9-32'", "v4-32", "v5litepod-16"]),
    "TPU type not in zone": ("gcp", {"gcp:zone": "us-central1-a"},
                             ["gcp:zone", "'us-central1-a'", "v4-32: us-central2-b"]),
    "runtime of another generation": ("gcp", {"ernie:runtimeVersion": "v2-alpha-tpuv5-lite"},
                                      ["ernie:runtimeVersion", "'v2-alpha-tpuv5-lite'", "TPU v5e, not v4",
                                       "tpu-ubuntu2204-base", "tpu-vm-tf-2.20.0-pod-pjrt"]),
    "single-host TF runtime on a pod slice": ("gcp", {"ernie:runtimeVersion": "tpu-vm-tf-2.20.0-pjrt"},
                                              ["ernie:runtimeVersion", "multi-host slice (4 hosts)",
                                               "tpu-vm-tf-2.20.0-pod-pjrt"]),
    "instance type without GPU": ("aws", {"ernie:instanceType": "m5.xlarge"},
                                  ["ernie:instanceType", "'m5.xlarge'", "not a GPU instance type", "g5.xlarge",
                                   "p4d.24xlarge"]),
    "DLC tag not published": ("aws", {"ernie:dlcTag": "2.9.0-gpu-py311-cu121-ubuntu20.04-sagemaker"},
                              ["ernie:dlcTag", "2.9.0-gpu-py312-cu130-ubuntu22.04-ec2"]),
    "DLC tag of the other framework": ("aws", {"ernie:framework": "tensorflow"},
                                       ["ernie:dlcTag", "'2.9.0-gpu-py312-cu130-ubuntu22.04-ec2'",
                                        "2.19.0-gpu-py312-cu125-ubuntu22.04-ec2"]),
    "instanceCount below 1": ("aws", {"ernie:instanceCount": 0}, ["ernie:instanceCount", "0", "1 or more"]),
    "ttlMinutes missing": ("gcp", {"ernie:ttlMinutes": None}, ["ernie:ttlMinutes", "missing", "1 to 1440"]),
    "ttlMinutes below 1": ("aws", {"ernie:ttlMinutes": 0}, ["ernie:ttlMinutes", "0", "1 to 1440"]),
    "ttlMinutes above the ceiling": ("gcp", {"ernie:ttlMinutes": 2880}, ["ernie:ttlMinutes", "2880", "1 to 1440"]),
    "SSH from anywhere without opt-in": ("gcp", {"ernie:sshAllowedCidrs": ["0.0.0.0/0"]},
                                         ["ernie:sshAllowedCidrs", "0.0.0.0/0", "ernie:allowSshFromAnywhere: true",
                                          "203.0.113.7/32"]),
    "IPv6 SSH from anywhere without opt-in": ("aws", {"ernie:sshAllowedCidrs": ["203.0.113.7/32", "::/0"]},
                                              ["ernie:sshAllowedCidrs", "::/0", "ernie:allowSshFromAnywhere"]),
    "malformed CIDR": ("aws", {"ernie:sshAllowedCidrs": ["10.0.0.300/24"]},
                       ["ernie:sshAllowedCidrs", "'10.0.0.300/24'", "203.0.113.7/32"]),
    "CIDR with host bits": ("gcp", {"ernie:sshAllowedCidrs": ["192.168.1.7/24"]},
                            ["ernie:sshAllowedCidrs", "'192.168.1.7/24'", "has host bits set"]),
    "CIDRs not a list": ("gcp", {"ernie:sshAllowedCidrs": "203.0.113.7/32"},
                         ["ernie:sshAllowedCidrs", "a list", "203.0.113.7/32"]),
    "unknown ernie key (typo)": ("gcp", {"ernie:ttlMinute": 60},
                                 ["ernie:ttlMinute", "unknown key", "did you mean ernie:ttlMinutes?", "tpuType"]),
    "key of the other cloud": ("gcp", {"ernie:instanceType": "g5.xlarge"},
                               ["ernie:instanceType", "other cloud, not gcp"]),
    "spot on a TPU generation without Spot": ("gcp", {"ernie:tpuType": "v3-8", "gcp:zone": "us-central1-a",
                                                      "ernie:runtimeVersion": "tpu-ubuntu2204-base",
                                                      "ernie:spot": True},
                                              ["ernie:spot", "TPU v3", "v4 and later"]),
    "spot on an instance type without Spot": ("aws", {"ernie:instanceType": "p5.48xlarge", "ernie:spot": True},
                                              ["ernie:spot", "p5.48xlarge", "not offered as Spot", "p4d.24xlarge"]),
    # ernie:framework on a TPU stack: checked against the runtime image (catalog/tpu_catalog.framework_problem).
    "JAX on TensorFlow's TPU runtime": ("gcp", {"ernie:framework": "jax"},
                                        ["ernie:framework", "'jax'", "tpu-vm-tf-2.20.0-pod-pjrt is a TensorFlow runtime",
                                         "jax installs on the base image tpu-ubuntu2204-base"]),
    "TensorFlow on a base image": ("gcp", {"ernie:framework": "tensorflow",
                                           "ernie:runtimeVersion": "tpu-ubuntu2204-base"},
                                   ["ernie:framework", "'tensorflow'",
                                    "TensorFlow runs on its own TPU runtime, not tpu-ubuntu2204-base",
                                    "use tpu-vm-tf-2.20.0-pod-pjrt"]),
    "framework TPU VMs do not run": ("gcp", {"ernie:framework": "mxnet"},
                                     ["ernie:framework", "'mxnet'", "jax, pytorch, tensorflow"]),
    "framework without a DLC image": ("aws", {"ernie:framework": "jax"},
                                      ["ernie:framework", "'jax'", "pytorch, tensorflow"]),
    "not a bool": ("aws", {"ernie:serving": "yes"}, ["ernie:serving", "'yes'", "true or false"]),
    "unknown cloud": ("gcp", {"ernie:cloud": "azure"}, ["ernie:cloud", "'azure'", "gcp, aws"]),
    "region without DLC registry": ("aws", {"aws:region": "mars-north-1"}, ["aws:region", "us-east-1"]),
}


@pytest.mark.parametrize(("framework", "runtime"), [("jax", "tpu-ubuntu2204-base"),
                                                  ("tensorflow", "tpu-vm-tf-2.20.0-pod-pjrt")])
def test_a_framework_that_fits_the_runtime_passes(ernie_cmd, tmp_path, framework, runtime) -> None:
    path = stack_file(tmp_path, "gcp", {"ernie:framework": framework, "ernie:runtimeVersion": runtime})
    result = ernie_check(ernie_cmd, "--config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "workers: 4" in result.stdout and "guardrail findings: none" in result.stdout


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_refused_with_a_clear_error(ernie_cmd, tmp_path, case) -> None:
    base, changes, must_name = BAD_CONFIGS[case]
    result = ernie_check(ernie_cmd, "--config", str(stack_file(tmp_path, base, changes)))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())  # the one line, however the terminal wrapped it
    assert message.startswith(f"error: {base}-changed.yaml: ")
    for text in must_name:
        assert text in message, message
    assert result.stdout == ""  # no plan, nothing half-built


def test_guardrail_finding_fails_the_check(ernie_cmd, tmp_path) -> None:
    path = stack_file(tmp_path, "aws", {"ernie:maxUsdPerHour": 0.5})
    result = ernie_check(ernie_cmd, "--config", str(path))
    assert result.returncode == 1, result.stderr
    assert "guardrail findings: 1" in result.stdout
    assert "cost-ceiling" in result.stdout and "over ernie:maxUsdPerHour 0.5" in result.stdout


def test_ssh_from_anywhere_opted_in_is_a_warning_not_a_failure(ernie_cmd, tmp_path) -> None:
    """The user chose it explicitly: the plan shows SSH open to the world, acknowledged, and passes."""
    path = stack_file(tmp_path, "aws", {"ernie:sshAllowedCidrs": ["0.0.0.0/1", "128.0.0.0/1"],
                                        "ernie:allowSshFromAnywhere": True})
    result = ernie_check(ernie_cmd, "--config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "guardrail findings: none" in result.stdout
    assert "acknowledged by ernie:allowSshFromAnywhere: 2" in result.stdout
    assert "ssh-open-to-world" in result.stdout and "gpu-ssh-0" in result.stdout and "gpu-ssh-1" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["-s", "azure"], "Pulumi.azure.yaml: no such stack config file"),
    ([], "name a stack (-s gcp, -s aws) or a config file"),
])
def test_missing_stack_is_a_user_error(ernie_cmd, args, message) -> None:
    result = ernie_check(ernie_cmd, *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in " ".join(result.stderr.split())


def test_file_without_config_map_is_a_user_error(ernie_cmd, tmp_path) -> None:
    path = tmp_path / "stack.yaml"
    path.write_text("ernie:cloud: gcp\n")
    result = ernie_check(ernie_cmd, "--config", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "expected a top-level `config:` map" in result.stderr
