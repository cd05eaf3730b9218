"""The gcp stack's resource graph under Pulumi mocks: workers per slice, SSH reach, grants, TTL teardown, secrets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pulumi
import pytest
import yaml

from ernie.check import Plan, plan
from infra.config import ConfigError
from infra.gcp_tpu import TpuSlice, TpuSliceArgs
from catalog.teardown import render_teardown_schedule, render_teardown_workflow, teardown_deadline

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "gcp:serviceaccount/account:Account"
JOB = "gcp:cloudscheduler/job:Job"
WORKFLOW = "gcp:workflows/workflow:Workflow"
INVENTORY_KEYS = {"cloud", "stack", "ssh_user", "ssh_private_key", "runner", "hosts", "bucket",
                  "price_per_hour_usd", "price_source", "ttl_minutes"}
HOST_KEYS = {"name", "address", "private_address", "worker", "accelerator", "chips"}


def gcp_plan(tmp_path: Path, changes: dict[str, Any] | None = None) -> Plan:
    """`ernie check` of the committed gcp stack file with some values changed (None removes a key)."""
    config = yaml.safe_load((REPO / "Pulumi.gcp.yaml").read_text())["config"]
    for key, value in (changes or {}).items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path = tmp_path / "Pulumi.gcp.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return plan(config_file=path)


def inputs_of(result: Plan, typ: str) -> list[dict[str, Any]]:
    return [r.inputs for r in result.resources if r.type == typ]


@pytest.mark.parametrize(("tpu_type", "zone", "runtime", "workers", "chips_per_worker"), [
    ("v2-8", "us-central1-b", "tpu-ubuntu2204-base", 1, 4),
    ("v4-32", "us-central2-b", "tpu-vm-tf-2.20.0-pod-pjrt", 4, 4),
    ("v5litepod-16", "us-west4-a", "v2-alpha-tpuv5-lite", 4, 4),  # 4-chip VMs
])
def test_one_inventory_host_per_tpu_worker(tmp_path, tpu_type, zone, runtime, workers, chips_per_worker) -> None:
    result = gcp_plan(tmp_path, {"ernie:tpuType": tpu_type, "gcp:zone": zone, "ernie:runtimeVersion": runtime})

    # A multi-host slice is one TPU resource; its workers are its network endpoints.
    (node,) = inputs_of(result, "gcp:tpu/v2Vm:V2Vm")
    assert (node["acceleratorType"], node["zone"], node["runtimeVersion"]) == (tpu_type, zone, runtime)
    inv = result.inventory
    assert set(inv) == INVENTORY_KEYS
    assert (inv["cloud"], inv["stack"], inv["runner"], inv["ssh_user"]) == ("gcp", "gcp", "tpu-vm", "ernie")
    hosts = inv["hosts"]
    assert [h["worker"] for h in hosts] == list(range(workers))
    assert all(set(h) == HOST_KEYS for h in hosts)
    assert {h["accelerator"] for h in hosts} == {tpu_type}
    assert {h["chips"] for h in hosts} == {chips_per_worker}
    assert len({h["address"] for h in hosts}) == len({h["private_address"] for h in hosts}) == workers
    assert inv["bucket"].startswith("gs://")
    assert inv["ttl_minutes"] == 180


def test_price_comes_from_the_catalog_with_its_source(tmp_path) -> None:
    inv = gcp_plan(tmp_path).inventory  # v4-32: 16 chips at 3.22 USD per chip-hour
    assert inv["price_per_hour_usd"] == pytest.approx(16 * 3.22)
    assert "prices.csv" in inv["price_source"] and "2025-06" in inv["price_source"]


def test_ssh_reaches_workers_only_from_the_allowed_ranges(tmp_path) -> None:
    result = gcp_plan(tmp_path, {"ernie:sshAllowedCidrs": ["203.0.113.7/32", "2001:db8::/48"]})
    firewalls = inputs_of(result, "gcp:compute/firewall:Firewall")
    ssh = [f for f in firewalls if any("22" in a.get("ports", []) or "ports" not in a for a in f["allows"])
           and f.get("sourceRanges")]
    # IPv4 and IPv6 ranges need separate rules; together they admit exactly the configured ranges.
    assert sorted(r for f in ssh for r in f["sourceRanges"]) == ["2001:db8::/48", "203.0.113.7/32"]
    assert all(f["allows"] == [{"protocol": "tcp", "ports": ["22"]}] for f in ssh)
    # Worker-to-worker traffic is admitted by network tag only, never by address range.
    (internal,) = [f for f in firewalls if f.get("sourceTags")]
    assert "sourceRanges" not in internal
    (node,) = inputs_of(result, "gcp:tpu/v2Vm:V2Vm")
    assert internal["sourceTags"] == internal["targetTags"] == node["tags"]
    assert all(f["targetTags"] == node["tags"] for f in ssh)
    assert not [f for f in result.findings if f.rule == "ssh-open-to-world"]


def test_service_account_gets_only_the_listed_roles(tmp_path) -> None:
    """The node's account writes its bucket and logs and may do nothing to any TPU node: every workload on the node
    can read its token from the metadata server."""
    result = gcp_plan(tmp_path)
    (account,) = [r for r in result.resources if r.type == ACCOUNT and r.name == "tpu-sa"]
    member = account.outputs["member"]
    bucket_grants = [g for g in inputs_of(result, "gcp:storage/bucketIAMMember:BucketIAMMember")]
    project_grants = [g for g in inputs_of(result, "gcp:projects/iAMMember:IAMMember") if g["member"] == member]
    # Literals, not the constants of infra/grants.py: a role added there must fail here until reviewed.
    assert [(g["role"], g["member"]) for g in bucket_grants] == [("roles/storage.objectUser", member)]
    assert [g["role"] for g in project_grants] == ["roles/logging.logWriter"]
    # The TPU runs as that account, not as the project's default compute account.
    (node,) = inputs_of(result, "gcp:tpu/v2Vm:V2Vm")
    assert node["serviceAccount"]["email"] == account.outputs["email"]


def test_only_a_teardown_account_nothing_runs_as_may_delete_the_node(tmp_path) -> None:
    """tpu.nodes.delete reaches every node in the project, so it goes to an account of its own that no host runs
    as, and the one request made with it is the scheduler job's DELETE of this stack's node."""
    result = gcp_plan(tmp_path)
    (node,) = inputs_of(result, "gcp:tpu/v2Vm:V2Vm")
    (teardown,) = [r for r in result.resources if r.type == ACCOUNT and r.name == "tpu-teardown-sa"]
    assert teardown.outputs["email"] != node["serviceAccount"]["email"]
    (custom,) = [r for r in result.resources if r.type == "gcp:projects/iAMCustomRole:IAMCustomRole"]
    assert custom.inputs["permissions"] == ["tpu.nodes.delete", "tpu.nodes.get"]
    holders = [g["member"] for g in inputs_of(result, "gcp:projects/iAMMember:IAMMember")
               if g["role"] == custom.outputs["name"]]
    assert holders == [teardown.outputs["member"]]
    # The workflow runs as the teardown account and deletes this node only; the job merely starts it, as a
    # caller account whose one grant is roles/workflows.invoker.
    (workflow,) = inputs_of(result, WORKFLOW)
    assert workflow["serviceAccount"] == teardown.outputs["email"]
    assert workflow["sourceContents"] == render_teardown_workflow(
        f"https://tpu.googleapis.com/v2/projects/my-ernie-project/locations/us-central2-b/nodes/{node['name']}")
    (caller,) = [r for r in result.resources if r.type == ACCOUNT and r.name == "tpu-teardown-caller-sa"]
    grants = sorted((g["role"], g["member"]) for g in inputs_of(result, "gcp:projects/iAMMember:IAMMember")
                    if g["member"] in (teardown.outputs["member"], caller.outputs["member"]))
    assert grants == sorted([(custom.outputs["name"], teardown.outputs["member"]),
                             ("roles/workflows.invoker", caller.outputs["member"])])
    (job,) = inputs_of(result, JOB)
    assert job["httpTarget"] == {
        "uri": "https://workflowexecutions.googleapis.com/v1/projects/my-ernie-project/locations/us-central1/"
               f"workflows/{workflow['name']}/executions",
        "httpMethod": "POST",
        "oauthToken": {"serviceAccountEmail": caller.outputs["email"],
                       "scope": "https://www.googleapis.com/auth/cloud-platform"}}
    assert workflow["region"] == "us-central1"
    # Cloud Scheduler has no us-central2 (TPU only): the job runs on the same continent.
    assert (job["region"], job["timeZone"]) == ("us-central1", "Etc/UTC")
    # Nothing on the node deletes anything: no startup script holds a teardown.
    assert "startup-script" not in node["metadata"]
    assert not [f for f in result.findings if f.rule == "tpu-teardown-bounded"]


def test_bucket_is_private_uniform_and_expires(tmp_path) -> None:
    (bucket,) = inputs_of(gcp_plan(tmp_path), "gcp:storage/bucket:Bucket")
    assert bucket["publicAccessPrevention"] == "enforced"
    assert bucket["uniformBucketLevelAccess"] is True
    assert bucket["lifecycleRules"][0]["action"]["type"] == "Delete"


def test_teardown_fires_ttl_minutes_after_the_node_is_up(tmp_path) -> None:
    before = datetime.now(UTC)
    result = gcp_plan(tmp_path, {"ernie:ttlMinutes": 95})
    after = datetime.now(UTC)
    (node,) = inputs_of(result, "gcp:tpu/v2Vm:V2Vm")
    assert node["labels"]["ernie-ttl"] == "95m"
    (job,) = inputs_of(result, JOB)
    assert job["schedule"] in {render_teardown_schedule(teardown_deadline(t, 95)) for t in (before, after)}


@pytest.mark.parametrize(("start", "ttl", "deadline", "schedule"), [
    (datetime(2025, 3, 5, 14, 30, tzinfo=UTC), 180, datetime(2025, 3, 5, 17, 30, tzinfo=UTC), "30 17 5 3 *"),
    # Rounded up to the minute cron can name: never before the TTL is out.
    (datetime(2025, 3, 5, 14, 30, 1, tzinfo=UTC), 1, datetime(2025, 3, 5, 14, 32, tzinfo=UTC), "32 14 5 3 *"),
    # Over midnight, the month's and the year's end, from another time zone.
    (datetime(2025, 12, 31, 23, 0, tzinfo=UTC), 1440, datetime(2026, 1, 1, 23, 0, tzinfo=UTC), "0 23 1 1 *"),
    (datetime(2025, 5, 31, 21, 0, tzinfo=ZoneInfo("America/New_York")), 30, datetime(2025, 6, 1, 1, 30, tzinfo=UTC),
     "30 1 1 6 *"),
])
def test_teardown_schedule(start, ttl, deadline, schedule) -> None:
    assert teardown_deadline(start, ttl) == deadline
    assert render_teardown_schedule(deadline) == schedule


def test_labels_on_everything_that_takes_them(tmp_path) -> None:
    result = gcp_plan(tmp_path)
    labelled = [r for r in result.resources if r.type in ("gcp:tpu/v2Vm:V2Vm", "gcp:storage/bucket:Bucket")]
    assert len(labelled) == 2
    assert all(r.inputs["labels"] == {"ernie-stack": "gcp", "ernie-ttl": "180m"} for r in labelled)


def test_spot_slice(tmp_path) -> None:
    (node,) = inputs_of(gcp_plan(tmp_path, {"ernie:spot": True}), "gcp:tpu/v2Vm:V2Vm")
    assert node["schedulingConfig"] == {"spot": True}


def test_generated_ssh_key_is_a_secret_in_the_inventory(tmp_path) -> None:
    result = gcp_plan(tmp_path)
    assert result.inventory_is_secret
    assert result.inventory["ssh_private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    (key,) = [r for r in result.resources if r.type == "tls:index/privateKey:PrivateKey"]
    assert key.inputs["algorithm"] == "ED25519"
    (node,) = inputs_of(result, "gcp:tpu/v2Vm:V2Vm")
    assert node["metadata"]["ssh-keys"] == f"ernie:{key.outputs['publicKeyOpenssh'].strip()}"


def test_users_own_key_replaces_the_generated_one(tmp_path) -> None:
    public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0ernieexamplekeyexamplekeyexamplekey you@laptop"
    result = gcp_plan(tmp_path, {"ernie:sshPublicKey": public, "ernie:sshKeyPath": "~/.ssh/id_ed25519"})
    assert not [r for r in result.resources if r.type == "tls:index/privateKey:PrivateKey"]
    assert "ssh_private_key" not in result.inventory
    assert result.inventory["ssh_key_path"] == "~/.ssh/id_ed25519"
    (node,) = inputs_of(result, "gcp:tpu/v2Vm:V2Vm")
    assert node["metadata"]["ssh-keys"] == f"ernie:{public}"


@pulumi.runtime.test
def test_tpu_slice_component_on_its_own(pulumi_mocks):
    """The component without the program: its hosts output has one entry per endpoint, all children parented."""
    up = datetime(2025, 3, 5, 23, 45, 10, tzinfo=UTC)
    slice_ = TpuSlice("bench", TpuSliceArgs(
        project="p", zone="europe-west4-a", region="europe-west4", node_name="ernie-test", accelerator_type="v3-32",
        runtime_version="tpu-ubuntu2204-base", chips=16, spot=False,
        ssh_allowed_cidrs=["10.1.0.0/16"], ssh_user="ernie", ssh_public_key="ssh-ed25519 AAAA test",
        ttl_minutes=30, labels={"ernie-stack": "test", "ernie-ttl": "30m"}, clock=lambda: up))

    def check(outputs: list) -> None:
        hosts, schedule = outputs
        assert [h["name"] for h in hosts] == [f"ernie-test-w{i}" for i in range(4)]
        assert {h["accelerator"] for h in hosts} == {"v3-32"}
        children = [r for r in pulumi_mocks.resources if r.type != "ernie:gcp:TpuSlice"]
        assert children and all(r.name.startswith("bench-") for r in children)
        # The teardown job: 30 minutes after the node is up (00:15:10, rounded up), from a European region.
        (job,) = pulumi_mocks.of_type(JOB)
        assert schedule == job.inputs["schedule"] == "16 0 6 3 *"
        assert job.inputs["region"] == "europe-west1"
        assert job.inputs["httpTarget"]["uri"] == \
            "https://workflowexecutions.googleapis.com/v1/projects/p/locations/europe-west1/workflows/ernie-test/executions"
        (workflow,) = pulumi_mocks.of_type(WORKFLOW)
        assert '"https://tpu.googleapis.com/v2/projects/p/locations/europe-west4-a/nodes/ernie-test"' in \
            workflow.inputs["sourceContents"]

    return pulumi.Output.all(slice_.hosts, slice_.teardown_schedule).apply(check)


def test_the_live_tpu_api_has_the_last_word(pulumi_mocks) -> None:
    """A runtime the catalog let through but the zone's runtime list lacks stops the slice before any child."""
    with pytest.raises(ConfigError, match="ernie:runtimeVersion: 'tpu-vm-tf-9.9.9-pjrt'; the TPU API offers in "
                                          "us-central2-b: .*tpu-ubuntu2204-base"):
        TpuSlice("bench", TpuSliceArgs(
            project="p", zone="us-central2-b", region="us-central2", node_name="ernie-test", accelerator_type="v4-8",
            runtime_version="tpu-vm-tf-9.9.9-pjrt", chips=4, spot=False,
            ssh_allowed_cidrs=["10.1.0.0/16"], ssh_user="ernie", ssh_public_key="ssh-ed25519 AAAA test",
            ttl_minutes=30, labels={}))
    assert [r.type for r in pulumi_mocks.resources if r.type != "ernie:gcp:TpuSlice"] == []
    assert pulumi_mocks.calls == ["gcp:tpu/getV2AcceleratorTypes:getV2AcceleratorTypes",
                                  "gcp:tpu/getV2RuntimeVersions:getV2RuntimeVersions"]


def test_teardown_workflow_deletes_until_404_with_capped_backoff_and_a_deadline() -> None:
    """Issue 14 defect 12: one DELETE is not enough (its operation can fail, the API can be down longer than
    Scheduler retries): the workflow deletes, checks, sleeps with doubling capped backoff and loops until 404."""
    import yaml

    url = "https://tpu.googleapis.com/v2/projects/p/locations/z/nodes/n"
    steps = {name: body for step in yaml.safe_load(render_teardown_workflow(url))["main"]["steps"]
             for name, body in step.items()}
    assert list(steps) == ["init", "try_delete", "give_up", "wait", "backoff"]
    init = {k: v for a in steps["init"]["assign"] for k, v in a.items()}
    assert init["node"] == url and init["delay"] == 60
    assert init["deadline"] == "${sys.now() + 86400}"
    tried = {name: body for step in steps["try_delete"]["try"]["steps"] for name, body in step.items()}
    assert tried["delete"]["call"] == "http.delete" and tried["check"]["call"] == "http.get"
    assert all(b["args"] == {"url": "${node}", "auth": {"type": "OAuth2"}} for b in tried.values())
    # Any error but a 404 is swallowed and retried; a 404 (on the DELETE or the GET) ends the run.
    (gone,) = steps["try_delete"]["except"]["steps"][0]["gone"]["switch"]
    assert gone == {"condition": '${"HttpError" in e.tags and map.get(e, "code") == 404}', "return": "deleted"}
    (give_up,) = steps["give_up"]["switch"]
    assert give_up["condition"] == "${sys.now() > deadline}" and "raise" in give_up
    assert steps["wait"] == {"call": "sys.sleep", "args": {"seconds": "${delay}"}}
    assert steps["backoff"] == {"assign": [{"delay": "${math.min(delay * 2, 600)}"}], "next": "try_delete"}
