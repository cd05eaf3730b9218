"""A TPU slice's TTL teardown, sent from outside the slice: the request a Cloud Scheduler job makes, and when.

Whoever holds `tpu.nodes.delete` may delete every TPU node in the project: a node has no IAM policy of its own,
and Cloud TPU is not among the services that give IAM Conditions a resource name to test
(cloud.google.com/iam/docs/conditions-resource-attributes), so no condition narrows the grant to one node.
A host holding it would hand it to every workload on the host through the metadata server. So no host holds
it: a teardown service account does, nothing runs as that account, and the only request made with it is the
one a Cloud Scheduler job sends, DELETE of this slice's own node, at the deadline. These pure functions render
that request and its schedule; infra/gcp_tpu.py declares them and policy/rules.py checks the bound.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

TPU_API = "https://tpu.googleapis.com/v2"
TEARDOWN_METHOD = "DELETE"
TEARDOWN_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
SCHEDULE_TIME_ZONE = "Etc/UTC"
# Cloud Scheduler does not run in every TPU region (us-central2 is TPU-only); the job only sends one HTTPS
# request, so it runs in a region of the slice's continent that has it.
SCHEDULER_REGIONS = {"us": "us-central1", "europe": "europe-west1", "asia": "asia-northeast1"}
DEFAULT_SCHEDULER_REGION = "us-central1"


def tpu_node_url(project: str, zone: str, node: str) -> str:
    """The TPU API URL of one node: what the teardown job DELETEs."""
    return f"{TPU_API}/projects/{project}/locations/{zone}/nodes/{node}"


def scheduler_region(region: str) -> str:
    """Where the slice's teardown job runs: a Cloud Scheduler region on the slice's continent."""
    return SCHEDULER_REGIONS.get(region.split("-", 1)[0], DEFAULT_SCHEDULER_REGION)


def teardown_deadline(start: datetime, ttl_minutes: int) -> datetime:
    """`ttl_minutes` after `start`, rounded up to the whole minute a cron schedule can name (UTC)."""
    end = start.astimezone(UTC) + timedelta(minutes=ttl_minutes)
    return datetime.fromtimestamp(math.ceil(end.timestamp() / 60) * 60, UTC)


def render_teardown_schedule(deadline: datetime) -> str:
    """The cron schedule (in SCHEDULE_TIME_ZONE) firing at `deadline`'s minute. Cron has no year: a job still
    there a year later fires again, at a node long gone (a 404), until `pulumi destroy` removes it."""
    at = deadline.astimezone(UTC)
    return f"{at.minute} {at.hour} {at.day} {at.month} *"
