"""Issue 14's infrastructure defects, each as a first real deploy would meet it (under mocks: no cloud is reached).

4 ap-northeast-3's DLC account, 5 the TPU runtime's TensorFlow against the workload's pin, 6 names from odd stack
names, 7 chips per TPU worker from the node's endpoints, 9 p3 refused, 11 the service accounts settle before use,
12 the teardown job retries.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from rich.console import Console

from catalog.inventory import HOST_NAME
from ernie.check import Plan, plan, render
from ernie.errors import ErnieError
from infra import naming
from infra.gcp_tpu import tpu_hosts
from infra.settle import SERVICE_ACCOUNT_SETTLE_S, SleepProvider

REPO = Path(__file__).resolve().parents[2]
TPU_NODE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LAMBDA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Pulumi stack names: letters, digits, -, _ and . (up to 100).
ODD_STACKS = ["dev_2", "team.v2", "Dev", "dev-2", "x", "a" * 100, "9lives", "Team_A.v2-final"]


def stack_plan(tmp_path: Path, stack: str, cloud: str, changes: dict[str, Any] | None = None) -> Plan:
    config = yaml.safe_load((REPO / f"Pulumi.{cloud}.yaml").read_text())["config"]
    config.update(changes or {})
    path = tmp_path / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return plan(stack=stack, config_file=path)


def of_type(result: Plan, typ: str) -> list[Any]:
    return [r for r in result.resources if r.type == typ]


# --- 4: ap-northeast-3 publishes DLC images from its own account -----------------------------------------------

def test_ap_northeast_3_pulls_from_its_own_dlc_account(tmp_path) -> None:
    result = stack_plan(tmp_path, "aws", "aws", {"aws:region": "ap-northeast-3",
                                                 "ernie:availabilityZone": "ap-northeast-3a"})
    assert result.inventory["image"].startswith("364406365360.dkr.ecr.ap-northeast-3.amazonaws.com/pytorch-training:")
    (policy,) = of_type(result, "aws:iam/rolePolicy:RolePolicy")
    pull = next(s for s in json.loads(policy.inputs["policy"])["Statement"] if s["Sid"] == "PullTrainingImage")
    assert pull["Resource"] == "arn:aws:ecr:ap-northeast-3:364406365360:repository/pytorch-training"
    (instance,) = of_type(result, "aws:ec2/instance:Instance")
    assert "364406365360.dkr.ecr.ap-northeast-3.amazonaws.com" in instance.inputs["userData"]
    assert "763104351884" not in instance.inputs["userData"] + policy.inputs["policy"]


# --- 5: the TPU runtime's TensorFlow is the workload's -------------------------------------------------------

def pinned_tensorflow() -> str:
    text = (REPO / "workloads" / "bert" / "requirements-tf.txt").read_text()
    return re.search(r"^tensorflow-tpu==(\S+)", text, re.M).group(1)


def test_default_gcp_stack_runs_the_tensorflow_the_workload_pins(tmp_path) -> None:
    result = stack_plan(tmp_path, "gcp", "gcp")
    (node,) = of_type(result, "gcp:tpu/v2Vm:V2Vm")
    assert node.inputs["runtimeVersion"] == f"tpu-vm-tf-{pinned_tensorflow()}-pod-pjrt"


def test_check_refuses_a_runtime_with_another_tensorflow(tmp_path) -> None:
    with pytest.raises(ErnieError) as refused:
        stack_plan(tmp_path, "gcp", "gcp", {"ernie:runtimeVersion": "tpu-vm-tf-2.17.0-pod-pjrt"})
    message = str(refused.value)
    assert "ernie:runtimeVersion" in message and "'tpu-vm-tf-2.17.0-pod-pjrt'" in message
    assert "requirements-tf.txt" in message and f"tpu-vm-tf-{pinned_tensorflow()}-pod-pjrt" in message


# --- 6: valid, unique names from any stack name --------------------------------------------------------------

@pytest.mark.parametrize("stack", ODD_STACKS)
def test_tpu_names_are_valid_for_any_stack_name(tmp_path, stack: str) -> None:
    result = stack_plan(tmp_path, stack, "gcp")
    (node,) = of_type(result, "gcp:tpu/v2Vm:V2Vm")
    assert TPU_NODE.fullmatch(node.inputs["name"]) and len(node.inputs["name"]) <= 63
    hosts = [h["name"] for h in result.inventory["hosts"]]  # they name directories under results/RUN_ID/
    assert all(HOST_NAME.fullmatch(h) for h in hosts) and len(set(hosts)) == len(hosts), hosts
    for account in of_type(result, "gcp:serviceaccount/account:Account"):
        assert TPU_NODE.fullmatch(account.inputs["accountId"]) and 6 <= len(account.inputs["accountId"]) <= 30
    for firewall in of_type(result, "gcp:compute/firewall:Firewall"):
        assert all(TPU_NODE.fullmatch(t) for t in firewall.inputs["targetTags"])
    for labelled in (r for r in result.resources if "labels" in r.inputs):
        value = labelled.inputs["labels"]["ernie-stack"]
        assert re.fullmatch(r"[a-z0-9_-]{0,63}", value), value
    (workflow,) = of_type(result, "gcp:workflows/workflow:Workflow")
    assert re.fullmatch(r"[a-zA-Z][-_a-zA-Z0-9]{0,63}", workflow.inputs["name"])
    assert f'/nodes/{node.inputs["name"]}"' in workflow.inputs["sourceContents"]
    (job,) = of_type(result, "gcp:cloudscheduler/job:Job")
    assert job.inputs["httpTarget"]["uri"].endswith(f"/workflows/{workflow.inputs['name']}/executions")


@pytest.mark.parametrize("stack", ODD_STACKS)
def test_lambda_names_are_valid_for_any_stack_name(stack: str) -> None:
    from infra.aws_serving import lambda_layer_name

    for function in ("tabular", "embed"):
        assert LAMBDA_NAME.fullmatch(naming.lambda_function_name(stack, function))
        layer = lambda_layer_name(stack, function, "model-deps")
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,140}", layer)
        # The sweep reads the stack part back between the first two dashes.
        assert re.fullmatch(r"ernie-[A-Za-z0-9_.]+?-[A-Za-z0-9_]+", layer)


def test_names_of_different_stacks_never_collide() -> None:
    stacks = ODD_STACKS + ["dev.2", "DEV_2", "a" * 99 + "b", "team-v2"]
    for name_of in (naming.tpu_node_name, naming.gcp_label, naming.lambda_stack_part,
                    lambda s: naming.gcp_name(naming.tpu_node_name(s), "sa", 30)):
        names = [name_of(s) for s in stacks]
        assert len(set(names)) == len(stacks), names


def test_a_plain_stack_name_keeps_the_names_it_had() -> None:
    assert naming.tpu_node_name("gcp") == "ernie-gcp" and naming.gcp_label("gcp") == "gcp"
    assert naming.gcp_name("ernie-gcp", "sa", 30) == "ernie-gcp-sa"
    assert naming.lambda_function_name("aws", "tabular") == "ernie-aws-tabular"


# --- 7: hosts and chips per host come from the node's network endpoints -----------------------------------------

def endpoints(count: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(ip_address=f"10.128.0.{2 + i}",
                            access_configs=[SimpleNamespace(external_ip=f"34.1.1.{10 + i}")]) for i in range(count)]


def test_chips_per_worker_are_counted_from_the_endpoints() -> None:
    hosts = tpu_hosts("ernie-gcp", "v5litepod-16", 16, endpoints(4))
    assert [(h["worker"], h["chips"], h["address"]) for h in hosts] == [
        (0, 4, "34.1.1.10"), (1, 4, "34.1.1.11"), (2, 4, "34.1.1.12"), (3, 4, "34.1.1.13")]
    # Whatever the catalog forecast, the API's endpoints decide.
    assert {h["chips"] for h in tpu_hosts("ernie-gcp", "v5litepod-16", 16, endpoints(2))} == {8}
    with pytest.raises(ValueError, match="3 network endpoint"):
        tpu_hosts("ernie-gcp", "v5litepod-16", 16, endpoints(3))


def test_check_shows_workers_chips_per_worker_and_chips_in_all(tmp_path) -> None:
    result = stack_plan(tmp_path, "gcp", "gcp", {"ernie:tpuType": "v5litepod-16", "gcp:zone": "us-west4-a",
                                                 "ernie:runtimeVersion": "v2-alpha-tpuv5-lite"})
    out = Console(width=400, record=True)
    render(result, out)
    text = out.export_text()
    assert "workers: 4 " in text and "4 TPU chips per worker, 16 in all" in text


# --- 9: no V100 hosts for images without sm_70 kernels ---------------------------------------------------------

@pytest.mark.parametrize("instance", ["p3.2xlarge", "p3.16xlarge", "p3dn.24xlarge"])
def test_p3_is_refused_with_an_image_that_still_works(tmp_path, instance: str) -> None:
    with pytest.raises(ErnieError) as refused:
        stack_plan(tmp_path, "aws", "aws", {"ernie:instanceType": instance})
    message = str(refused.value)
    assert f"ernie:instanceType: '{instance}'" in message and "sm_70" in message
    assert "cu126" in message and "g5" in message


# --- 11: a new service account settles before anything uses it ------------------------------------------------

def test_the_node_and_the_grants_wait_for_the_service_accounts_to_settle(tmp_path) -> None:
    result = stack_plan(tmp_path, "gcp", "gcp")
    settled = {r.name: r for r in result.resources if r.type.endswith("ernie:Settled")}
    assert set(settled) == {"tpu-sa-settle", "tpu-teardown-sa-settle", "tpu-teardown-caller-sa-settle"}
    accounts = {r.name: r.outputs["email"] for r in of_type(result, "gcp:serviceaccount/account:Account")}
    for name, wait in settled.items():
        assert wait.inputs["value"] == accounts[name.removesuffix("-settle")]
        assert wait.inputs["seconds"] >= 60
    (node,) = of_type(result, "gcp:tpu/v2Vm:V2Vm")
    # The node names the account only through the settled value (its dependency in the graph).
    assert node.inputs["serviceAccount"]["email"] == settled["tpu-sa-settle"].outputs["value"]


def test_settling_sleeps_once_when_created_and_again_only_for_a_new_account(monkeypatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    provider = SleepProvider()
    created = provider.create({"value": "a@p.iam.gserviceaccount.com", "seconds": SERVICE_ACCOUNT_SETTLE_S})
    assert slept == [60.0] and created.outs["value"] == "a@p.iam.gserviceaccount.com"
    same = provider.diff("a", {"value": "a@p", "seconds": 60}, {"value": "a@p", "seconds": 60})
    new = provider.diff("a", {"value": "a@p", "seconds": 60}, {"value": "b@p", "seconds": 60})
    assert (same.changes, new.changes, new.replaces) == (False, True, ["value"])


# --- 12: the teardown request is retried with backoff --------------------------------------------------------

def test_the_teardown_job_retries_with_backoff(tmp_path) -> None:
    result = stack_plan(tmp_path, "gcp", "gcp")
    (job,) = of_type(result, "gcp:cloudscheduler/job:Job")
    retry = job.inputs["retryConfig"]
    assert retry["retryCount"] == 5  # Cloud Scheduler's most
    assert retry["minBackoffDuration"] == "60s" and retry["maxBackoffDuration"] == "600s"


# --- 2 and 10: what the aws stack tells ernie about its hosts --------------------------------------------------

def test_the_aws_inventory_says_when_a_host_is_ready_and_how_its_user_signs_in(tmp_path) -> None:
    from ernie.inventory import parse_inventory
    from infra.startup import GPU_DONE_FILE, GPU_FAILED_FILE, GPU_USER_DATA_LOG

    result = stack_plan(tmp_path, "aws", "aws", {"aws:region": "ap-northeast-3",
                                                 "ernie:availabilityZone": "ap-northeast-3a"})
    inventory = parse_inventory(result.inventory, source="test")
    assert inventory.bootstrap.done_file == GPU_DONE_FILE and inventory.bootstrap.failed_file == GPU_FAILED_FILE
    assert inventory.bootstrap.log_file == GPU_USER_DATA_LOG
    assert inventory.registry_login.registry == "364406365360.dkr.ecr.ap-northeast-3.amazonaws.com"
    assert inventory.registry_login.password_command == "aws ecr get-login-password --region ap-northeast-3"
    assert inventory.container.devices == ()  # one g5.xlarge: no EFA
    (instance,) = of_type(result, "aws:ec2/instance:Instance")
    user_data = instance.inputs["userData"]
    # The done marker comes last, and any failure on the way writes the failed marker.
    assert user_data.rstrip().endswith(f"> {GPU_DONE_FILE}")
    assert f"> {GPU_FAILED_FILE}' ERR" in user_data


def test_an_efa_fleet_gives_its_containers_the_efa_devices_memlock_and_libfabric(tmp_path) -> None:
    from ernie.inventory import parse_inventory

    result = stack_plan(tmp_path, "aws", "aws", {"ernie:instanceType": "p4d.24xlarge", "ernie:instanceCount": 2})
    container = parse_inventory(result.inventory, source="test").container
    assert container.devices == ("/dev/infiniband/uverbs0",) and container.ulimits == ("memlock=-1:-1",)
    assert dict(container.env) == {"FI_PROVIDER": "efa", "FI_EFA_FORK_SAFE": "1", "FI_EFA_USE_DEVICE_RDMA": "1"}
